-- One line per catalog fact of the installed tco_cluster extension: its member
-- objects, functions (definition, privileges, comment), relations (kind,
-- privileges, comment, view definition), columns and constraints.
WITH m AS (
    SELECT classid, objid FROM pg_depend
     WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
       AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'tco_cluster'))
SELECT x FROM (
    SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM m
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text || ' ' || md5(pg_get_functiondef(p.oid)) || ' '
           || coalesce(p.proacl::text, '') || ' ' || coalesce(obj_description(p.oid, 'pg_proc'), '')
      FROM pg_proc p JOIN m ON m.classid = 'pg_proc'::regclass AND m.objid = p.oid WHERE p.prokind <> 'a'
    UNION ALL
    SELECT 'relation ' || c.oid::regclass::text || ' ' || c.relkind::text || ' ' || coalesce(c.relacl::text, '') || ' '
           || coalesce(obj_description(c.oid, 'pg_class'), '') || ' '
           || CASE WHEN c.relkind = 'v' THEN md5(pg_get_viewdef(c.oid)) ELSE '' END
      FROM pg_class c JOIN m ON m.classid = 'pg_class'::regclass AND m.objid = c.oid
    UNION ALL
    SELECT 'column ' || a.attrelid::regclass::text || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' '
           || coalesce(col_description(a.attrelid, a.attnum), '')
      FROM pg_attribute a JOIN m ON m.classid = 'pg_class'::regclass AND m.objid = a.attrelid
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'constraint ' || c.conrelid::regclass::text || ' ' || c.conname || ' ' || pg_get_constraintdef(c.oid)
      FROM pg_constraint c JOIN m ON m.classid = 'pg_class'::regclass AND m.objid = c.conrelid
    UNION ALL
    SELECT 'index ' || i.indexrelid::regclass::text || ' ' || pg_get_indexdef(i.indexrelid)
      FROM pg_index i JOIN m ON m.classid = 'pg_class'::regclass AND m.objid = i.indrelid
) t(x) ORDER BY x;

-- One line per catalog fact of the installed tco extension: its member objects,
-- table columns (in order), constraints, indexes, triggers, policies, function
-- definitions, view definitions, privileges, comments, enum labels and the
-- tables pg_dump saves.  Two databases whose digests are equal have the same
-- extension, however it was installed (CREATE EXTENSION or ALTER ... UPDATE).
\pset format unaligned
\pset tuples_only on
WITH ext AS (SELECT oid FROM pg_extension WHERE extname = 'tco'),
ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'tco'),
-- the partitions of tco.bill_line that tco creates at run time are data,
-- not part of the extension (src/sql/36_partition.sql): left out
rel AS (SELECT c.* FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM ns)
          AND c.relname NOT IN (SELECT relname FROM tco.bill_line_cycle)
          AND NOT (c.relkind = 'i' AND EXISTS (SELECT 1 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
                                                WHERE i.indexrelid = c.oid AND t.relname IN (SELECT relname FROM tco.bill_line_cycle)))),
facts(f) AS (
    SELECT 'member ' || pg_describe_object(classid, objid, objsubid)
    FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND refobjid = (SELECT oid FROM ext) AND deptype = 'e'
  UNION ALL
    SELECT format('relation %s kind=%s rls=%s force=%s options=%s acl=%s', relname, relkind,
                  relrowsecurity, relforcerowsecurity, reloptions, relacl) FROM rel
  UNION ALL
    SELECT format('column %s #%s %s %s notnull=%s default=%s identity=%s generated=%s acl=%s',
                  r.relname, row_number() OVER (PARTITION BY r.oid ORDER BY a.attnum), a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, a.attacl)
    FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = r.oid AND d.adnum = a.attnum
    WHERE r.relkind IN ('r', 'v', 'p', 'c')
  UNION ALL
    SELECT format('constraint %s %s %s', r.relname, co.conname, pg_get_constraintdef(co.oid))
    FROM rel r JOIN pg_constraint co ON co.conrelid = r.oid
  UNION ALL
    SELECT format('constraint on type %s %s %s', t.typname, co.conname, pg_get_constraintdef(co.oid))
    FROM pg_type t JOIN pg_constraint co ON co.contypid = t.oid WHERE t.typnamespace = (SELECT oid FROM ns)
  UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN rel r ON r.oid = i.indrelid
  UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
    FROM pg_trigger t JOIN rel r ON r.oid = t.tgrelid WHERE NOT t.tgisinternal
  UNION ALL
    SELECT format('policy %s %s cmd=%s permissive=%s roles=%s using=%s check=%s', r.relname, p.polname,
                  p.polcmd, p.polpermissive,
                  (SELECT array_agg(CASE WHEN x = 0 THEN 'public' ELSE x::regrole::text END ORDER BY 1) FROM unnest(p.polroles) x),
                  pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
    FROM pg_policy p JOIN rel r ON r.oid = p.polrelid
  UNION ALL
    SELECT format('view %s %s', r.relname, pg_get_viewdef(r.oid)) FROM rel r WHERE r.relkind IN ('v', 'm')
  UNION ALL
    SELECT format('function %s acl=%s %s', p.oid::regprocedure, p.proacl,
                  CASE WHEN p.prokind = 'a' THEN 'aggregate' ELSE pg_get_functiondef(p.oid) END)
    FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM ns)
  UNION ALL
    SELECT format('type %s acl=%s', t.oid::regtype, t.typacl) FROM pg_type t
    WHERE t.typnamespace = (SELECT oid FROM ns) AND t.typtype <> 'c' AND t.typelem = 0
  UNION ALL
    SELECT format('enum %s %s %s', e.enumtypid::regtype,
                  row_number() OVER (PARTITION BY e.enumtypid ORDER BY e.enumsortorder), e.enumlabel)
    FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid WHERE t.typnamespace = (SELECT oid FROM ns)
  UNION ALL
    SELECT format('comment %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
    FROM pg_description d
    WHERE (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT oid FROM rel))
       OR (d.classoid = 'pg_proc'::regclass AND d.objoid IN (SELECT oid FROM pg_proc WHERE pronamespace = (SELECT oid FROM ns)))
       OR (d.classoid = 'pg_type'::regclass AND d.objoid IN (SELECT oid FROM pg_type WHERE typnamespace = (SELECT oid FROM ns)))
  UNION ALL
    SELECT format('dumped table %s condition %s', c::regclass, cond)
    FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, cond) WHERE e.extname = 'tco'
  UNION ALL
    SELECT format('cast %s -> %s via %s context=%s', castsource::regtype, casttarget::regtype,
                  castfunc::regprocedure, castcontext)
    FROM pg_cast WHERE castsource IN (SELECT oid FROM pg_type WHERE typnamespace = (SELECT oid FROM ns))
                    OR casttarget IN (SELECT oid FROM pg_type WHERE typnamespace = (SELECT oid FROM ns))
  UNION ALL
    SELECT format('extension version %s', extversion) FROM pg_extension WHERE extname = 'tco'
)
SELECT f FROM facts ORDER BY f COLLATE "C";

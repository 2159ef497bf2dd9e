-- Org chart: an organization's unit tree, its members and the trusteeship
-- edges, as Graphviz DOT or a Mermaid flowchart.  Runs with the caller's
-- rights, so a reader's chart shows only what row-level security lets it see.

-- A string as the inside of a double-quoted DOT string / Mermaid label.
CREATE FUNCTION tco.dot_escape(s text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
               s, '\', '\\'), '"', '\"'), E'\r', ''), E'\n', '\n')
$$;

CREATE FUNCTION tco.mermaid_escape(s text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    -- Mermaid labels take HTML entity codes: #quot; for '"', #35; for '#'.
    SELECT pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
               s, '#', '#35;'), '"', '#quot;'), '<', '#lt;'), '>', '#gt;'), E'\n', ' ')
$$;

CREATE FUNCTION tco.org_chart(org_id bigint, format text DEFAULT 'dot') RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    org tco.organization;
    out text[] := '{}';
    r record;
    dot boolean;
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(format, 'format');
    IF format NOT IN ('dot', 'mermaid') THEN
        RAISE EXCEPTION 'unknown org chart format "%"', format
            USING ERRCODE = '22023', HINT = 'Use ''dot'' (Graphviz) or ''mermaid''.';
    END IF;
    dot := format = 'dot';
    SELECT * INTO org FROM tco.organization o WHERE o.org_id = org_chart.org_id;
    PERFORM tco.require_exists(FOUND, 'organization', org_id);

    IF dot THEN
        out := out || format('digraph "org_%s" {', org.org_id)
                   || format('  label="%s (organization %s)";', tco.dot_escape(org.name), org.org_id)
                   || '  rankdir=TB;'::text
                   || '  node [fontname="Helvetica"];'::text;
    ELSE
        out := out || 'flowchart TD'::text;
    END IF;

    -- Units, then the unit tree edges, in id order.
    FOR r IN SELECT u.unit_id, u.parent_unit_id, u.name FROM tco.org_unit u
              WHERE u.org_id = org.org_id ORDER BY u.unit_id LOOP
        out := out || CASE WHEN dot
            THEN format('  "u%s" [shape=folder, label="%s\n(unit %s)"];', r.unit_id, tco.dot_escape(r.name), r.unit_id)
            ELSE format('  u%s[/"%s (unit %s)"/]', r.unit_id, tco.mermaid_escape(r.name), r.unit_id) END;
    END LOOP;
    FOR r IN SELECT u.unit_id, u.parent_unit_id FROM tco.org_unit u
              WHERE u.org_id = org.org_id AND u.parent_unit_id IS NOT NULL ORDER BY u.unit_id LOOP
        out := out || CASE WHEN dot THEN format('  "u%s" -> "u%s";', r.parent_unit_id, r.unit_id)
                           ELSE format('  u%s --> u%s', r.parent_unit_id, r.unit_id) END;
    END LOOP;

    -- Members under their unit; the admin is marked.
    FOR r IN SELECT m.account_id, m.unit_id, m.policy, a.name,
                    m.account_id = org.admin_account_id AS is_admin
               FROM tco.member m JOIN tco.account a ON a.account_id = m.account_id
              WHERE m.org_id = org.org_id ORDER BY m.account_id LOOP
        IF dot THEN
            out := out || format('  "a%s" [shape=box%s, label="%s: %s%s"];', r.account_id,
                                 CASE WHEN r.is_admin THEN ', style=bold' ELSE '' END,
                                 r.account_id, tco.dot_escape(r.name),
                                 CASE WHEN r.is_admin THEN '\n(admin)' ELSE '' END)
                       || format('  "u%s" -> "a%s";', r.unit_id, r.account_id);
        ELSE
            out := out || format('  a%s["%s: %s%s"]', r.account_id, r.account_id,
                                 tco.mermaid_escape(r.name), CASE WHEN r.is_admin THEN ' (admin)' ELSE '' END)
                       || format('  u%s --> a%s', r.unit_id, r.account_id);
        END IF;
    END LOOP;

    -- Active trusteeships: member -> management account, dashed.
    FOR r IN SELECT t.member_account_id, t.management_account_id
               FROM tco.trusteeship t JOIN tco.member m ON m.account_id = t.member_account_id
              WHERE m.org_id = org.org_id AND t.ended_at IS NULL
              ORDER BY t.member_account_id LOOP
        out := out || CASE WHEN dot
            THEN format('  "a%s" -> "a%s" [style=dashed, label="trusteeship"];', r.member_account_id, r.management_account_id)
            ELSE format('  a%s -.->|trusteeship| a%s', r.member_account_id, r.management_account_id) END;
    END LOOP;

    IF dot THEN
        out := out || '}'::text;
    END IF;
    RETURN array_to_string(out, E'\n') || E'\n';
END $$;
COMMENT ON FUNCTION tco.org_chart(bigint, text) IS 'The unit tree of an organization with its members (admin marked) and active trusteeship edges (member -> management account, dashed), as Graphviz DOT (format => ''dot'', default) or a Mermaid flowchart (format => ''mermaid'').';

-- Access control (DESIGN section 8): roles, the login -> account mapping and
-- row-level security ("multi-account bill viewing").
--
-- Roles.  tco_admin runs everything; tco_reader only reads, and through
-- row-level security sees only the accounts visible to the account its
-- database role is mapped to in tco.account_login.  Roles are cluster-wide:
-- they are created only when missing and survive DROP EXTENSION (they may own
-- or be granted objects in other databases, so the extension never drops them).
--
-- Who sees which account (tco.visible_accounts):
--   * every mapped account sees itself;
--   * the admin of an organization sees every current member of it;
--   * a management account sees every account it has (or had) in trusteeship,
--     since it paid for them then -- unless that account is now a member of an
--     organization other than the manager's own;
--   * nobody sees an account of another organization.
-- Visibility of these tables (accounts, memberships, trusteeships, bill
-- lines) is per account, decided by the current membership: an account that
-- changes organization takes its bill lines with it.  Settled history
-- (statements, settled lines, benefit uses, pool shares) is decided by the
-- organization it was settled or shared in instead (51_access_settlement.sql,
-- 51_sharing_access.sql).
--
-- Writes: only tco_admin has write policies (and write privileges); a mapped
-- reader can write nothing.  Superusers and the tables' owner bypass RLS.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tco_admin') THEN
        CREATE ROLE tco_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'tco_reader') THEN
        CREATE ROLE tco_reader NOLOGIN;
    END IF;
END
$roles$;

CREATE TABLE tco.account_login (
    role_name  name PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES tco.account ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_login_account ON tco.account_login (account_id);
COMMENT ON TABLE tco.account_login IS 'Maps a database role (by name) to the account it acts as; row-level security shows that role the accounts visible to its account. Grant the role tco_reader as well.';
COMMENT ON COLUMN tco.account_login.role_name IS 'Database role name (matched against the role in effect: SET ROLE, else the session user). Renaming a role requires updating this row.';
SELECT pg_catalog.pg_extension_config_dump('tco.account_login', '');

-- The role a query runs for.  Inside a SECURITY DEFINER function current_user
-- is the function's owner, so use the role set by SET ROLE (which definer
-- functions do not change), or else the session user.
CREATE FUNCTION tco.invoking_role() RETURNS name
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') = 'none' THEN pg_catalog.session_user()
                ELSE pg_catalog.current_setting('role')::name END
$$;
COMMENT ON FUNCTION tco.invoking_role() IS 'The role queries run for: the role set by SET ROLE, else the session user (SECURITY DEFINER functions do not change it).';

CREATE FUNCTION tco.current_account_id() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT l.account_id FROM tco.account_login l WHERE l.role_name = tco.invoking_role()
$$;
COMMENT ON FUNCTION tco.current_account_id() IS 'The account mapped to the invoking role in tco.account_login; NULL if none.';

CREATE FUNCTION tco.visible_accounts() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 50 SET search_path = pg_catalog, pg_temp AS $$
    WITH me AS (SELECT tco.current_account_id() AS account_id),
         my_org AS (SELECT m.org_id FROM tco.member m JOIN me ON m.account_id = me.account_id)
    SELECT me.account_id FROM me WHERE me.account_id IS NOT NULL
    UNION
    SELECT m.account_id
      FROM tco.organization o JOIN me ON o.admin_account_id = me.account_id
      JOIN tco.member m ON m.org_id = o.org_id
    UNION
    SELECT t.member_account_id
      FROM tco.trusteeship t JOIN me ON t.management_account_id = me.account_id
     WHERE NOT EXISTS (SELECT 1 FROM tco.member m
                        WHERE m.account_id = t.member_account_id
                          AND m.org_id IS DISTINCT FROM (SELECT my_org.org_id FROM my_org))
$$;
COMMENT ON FUNCTION tco.visible_accounts() IS 'Accounts whose data the invoking role may read: its own account, every member of the organization it administers, and the accounts it manages or managed in trusteeship (unless now in another organization). Empty for an unmapped role.';

CREATE FUNCTION tco.can_see_account(account_id bigint) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT can_see_account.account_id IN (SELECT tco.visible_accounts())
$$;
COMMENT ON FUNCTION tco.can_see_account(bigint) IS 'Whether the invoking role may read the data of account_id (see tco.visible_accounts).';

CREATE FUNCTION tco.visible_organizations() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 1 SET search_path = pg_catalog, pg_temp AS $$
    SELECT m.org_id FROM tco.member m WHERE m.account_id = tco.current_account_id()
$$;
COMMENT ON FUNCTION tco.visible_organizations() IS 'The organization of the invoking role''s account (empty if none): its organization row and unit tree are readable.';

CREATE FUNCTION tco.administered_organizations() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 1 SET search_path = pg_catalog, pg_temp AS $$
    SELECT o.org_id FROM tco.organization o WHERE o.admin_account_id = tco.current_account_id()
$$;
COMMENT ON FUNCTION tco.administered_organizations() IS 'The organization whose admin account the invoking role is mapped to (empty if none).';

-- Row-level security.  Policies are permissive: tco_admin sees and writes
-- everything; tco_reader only selects rows of visible accounts.  A role that
-- is neither sees nothing even if granted SELECT.
CREATE FUNCTION tco.enable_reader_rls(tab text, reader_qual text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE pg_catalog.format('ALTER TABLE tco.%I ENABLE ROW LEVEL SECURITY', tab);
    EXECUTE pg_catalog.format('CREATE POLICY %I ON tco.%I TO tco_admin USING (true) WITH CHECK (true)',
                              tab || '_admin_all', tab);
    EXECUTE pg_catalog.format('CREATE POLICY %I ON tco.%I FOR SELECT TO tco_reader USING (%s)',
                              tab || '_reader_visible', tab, reader_qual);
END $$;
COMMENT ON FUNCTION tco.enable_reader_rls(text, text) IS
'Turns on row-level security on table tco.<tab> with the two policies of DESIGN section 8: <tab>_admin_all (tco_admin reads and writes every row) and <tab>_reader_visible (tco_reader selects the rows where reader_qual holds). Used by the install script.';

SELECT tco.enable_reader_rls(tab, reader_qual) FROM (VALUES
    ('account',      'account_id IN (SELECT tco.visible_accounts())'),
    ('member',       'account_id IN (SELECT tco.visible_accounts())'),
    ('trusteeship',  'member_account_id IN (SELECT tco.visible_accounts())'),
    ('bill_line',    'account_id IN (SELECT tco.visible_accounts())'),
    ('organization', 'org_id IN (SELECT tco.visible_organizations())'),
    ('org_unit',     'org_id IN (SELECT tco.visible_organizations())'),
    ('account_login','role_name = tco.invoking_role()')) AS v(tab, reader_qual);

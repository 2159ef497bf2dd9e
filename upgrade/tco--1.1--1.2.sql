-- tco 1.1 -> 1.2.  Every change made to src/sql after 1.1 is repeated here,
-- so that ALTER EXTENSION tco UPDATE gives the same extension as a fresh 1.2
-- install (scripts/test_upgrade.sh compares the two catalogs fact by fact).
\echo Use "ALTER EXTENSION tco UPDATE TO '1.2'" to load this file. \quit

-- ==== settle_cycle writes its packs in bulk from C (src/bulk.c): the
-- slicing helper its INSERT used is gone.  (The library keeps the C symbol
-- for the 1.1 install script.)
DROP FUNCTION tco.settle_slice(anyarray, integer, integer);

-- ==== one check for benefit terms: tco.require_benefit_terms() holds the
-- amount, validity and product checks that tco.grant_benefit,
-- tco.issue_pool_voucher, tco.grant_resource_pack and tco.grant_savings_plan
-- each repeated (same SQLSTATEs, messages and hints).  Internal: not
-- executable by PUBLIC (99_grants.sql).
-- Validate the terms shared by every benefit grant (what names the benefit in
-- the messages: 'benefit', 'voucher', 'resource pack' or 'savings plan'): the
-- amount is positive, has at most 2 decimals and is below 1e12 (22023), the
-- validity [valid_from, valid_to) is not empty (22023), and the product, when
-- given, exists (23503).  The callers refuse NULL arguments first.  STABLE,
-- not IMMUTABLE like the other require_* helpers: it reads tco.product.
CREATE FUNCTION tco.require_benefit_terms(what text, amount numeric, valid_from timestamptz,
                                          valid_to timestamptz, product_code text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF amount <= 0 OR amount <> round(amount, 2) OR amount >= 1000000000000 THEN
        RAISE EXCEPTION '% % must be positive, below 1e12 and have at most 2 decimals',
                        CASE what WHEN 'savings plan' THEN 'hourly commitment' ELSE what || ' amount' END, amount
            USING ERRCODE = '22023',
                  HINT = CASE what WHEN 'voucher' THEN 'Issue an amount such as 100.00.'
                                   WHEN 'resource pack' THEN 'Grant an amount such as 500.00.'
                                   WHEN 'savings plan' THEN 'Commit an amount per hour such as 10.00.'
                                   ELSE 'Grant an amount such as 100.00.' END;
    END IF;
    IF valid_to <= valid_from THEN
        RAISE EXCEPTION '% validity [%, %) is empty', what, valid_from, valid_to
            USING ERRCODE = '22023',
                  HINT = CASE what WHEN 'savings plan' THEN 'valid_to (the end of the term) must be after valid_from.'
                                   ELSE 'valid_to (the expiry) must be after valid_from.' END;
    END IF;
    IF product_code IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM tco.product p WHERE p.product_code = require_benefit_terms.product_code) THEN
        RAISE EXCEPTION 'product "%" does not exist', product_code
            USING ERRCODE = '23503',
                  HINT = CASE what WHEN 'resource pack' THEN 'A resource pack is for one product listed in tco.product.'
                                   WHEN 'savings plan' THEN 'List products in tco.product, or pass NULL for all products.'
                                   ELSE 'List products in tco.product, or pass NULL for any product.' END;
    END IF;
END $$;
COMMENT ON FUNCTION tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text) IS
'Raises 22023 for a benefit amount that is not positive, has more than 2 decimals or is not below 1e12, 22023 for an empty validity [valid_from, valid_to), and 23503 for a product_code (when not NULL) missing from tco.product; what names the benefit in the messages.';
REVOKE EXECUTE ON FUNCTION tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.require_benefit_terms(text, numeric, timestamptz, timestamptz, text) TO tco_admin;

CREATE OR REPLACE FUNCTION tco.grant_benefit(kind text, owner_account_id bigint, amount numeric,
                                  valid_from timestamptz, valid_to timestamptz,
                                  product_code text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(kind, 'kind');
    PERFORM tco.require_arg(owner_account_id, 'owner_account_id');
    PERFORM tco.require_arg(amount, 'amount');
    PERFORM tco.require_arg(valid_from, 'valid_from');
    PERFORM tco.require_arg(valid_to, 'valid_to');
    IF kind NOT IN ('coupon', 'voucher', 'stored_value_card') THEN
        RAISE EXCEPTION 'unknown benefit kind "%"', kind
            USING ERRCODE = '22023', HINT = 'Use coupon, voucher or stored_value_card.';
    END IF;
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = owner_account_id), 'account', owner_account_id);
    PERFORM tco.require_benefit_terms('benefit', amount, valid_from, valid_to, product_code);
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to)
        VALUES (kind, owner_account_id, product_code, amount, amount, valid_from, valid_to)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;

CREATE OR REPLACE FUNCTION tco.issue_pool_voucher(org_id bigint, amount numeric, valid_from timestamptz, valid_to timestamptz,
                                       product_code text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    admin  bigint;
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(amount, 'amount');
    PERFORM tco.require_arg(valid_from, 'valid_from');
    PERFORM tco.require_arg(valid_to, 'valid_to');
    SELECT o.admin_account_id INTO admin FROM tco.organization o WHERE o.org_id = issue_pool_voucher.org_id;
    PERFORM tco.require_exists(FOUND, 'organization', org_id);
    PERFORM tco.require_benefit_terms('voucher', amount, valid_from, valid_to, product_code);
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to, pool_org_id)
        VALUES ('voucher', admin, product_code, amount, amount, valid_from, valid_to, issue_pool_voucher.org_id)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;

CREATE OR REPLACE FUNCTION tco.grant_resource_pack(owner_account_id bigint, product_code text, amount numeric,
                                        valid_from timestamptz, valid_to timestamptz) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(owner_account_id, 'owner_account_id');
    PERFORM tco.require_arg(product_code, 'product_code');
    PERFORM tco.require_arg(amount, 'amount');
    PERFORM tco.require_arg(valid_from, 'valid_from');
    PERFORM tco.require_arg(valid_to, 'valid_to');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = owner_account_id), 'account', owner_account_id);
    PERFORM tco.require_benefit_terms('resource pack', amount, valid_from, valid_to, product_code);
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to)
        VALUES ('resource_pack', owner_account_id, product_code, amount, amount, valid_from, valid_to)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;

CREATE OR REPLACE FUNCTION tco.grant_savings_plan(owner_account_id bigint, hourly_commitment numeric, discount_rate numeric,
                                       valid_from timestamptz, valid_to timestamptz,
                                       product_code text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(owner_account_id, 'owner_account_id');
    PERFORM tco.require_arg(hourly_commitment, 'hourly_commitment');
    PERFORM tco.require_arg(discount_rate, 'discount_rate');
    PERFORM tco.require_arg(valid_from, 'valid_from');
    PERFORM tco.require_arg(valid_to, 'valid_to');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = owner_account_id), 'account', owner_account_id);
    IF discount_rate < 0 OR discount_rate >= 1 OR discount_rate <> round(discount_rate, 6) THEN
        RAISE EXCEPTION 'savings plan rate % is not in [0, 1) with at most 6 decimals', discount_rate
            USING ERRCODE = '22023', HINT = 'A rate of 0.30 makes the hourly fee 70% of the commitment.';
    END IF;
    PERFORM tco.require_benefit_terms('savings plan', hourly_commitment, valid_from, valid_to, product_code);
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to, plan_discount_rate)
        VALUES ('savings_plan', owner_account_id, product_code, hourly_commitment, hourly_commitment, valid_from, valid_to, discount_rate)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;

-- ==== one install-time helper for the row-level security of DESIGN section 8
-- (the policies it creates are unchanged; it replaces two DO loops).
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
REVOKE EXECUTE ON FUNCTION tco.enable_reader_rls(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.enable_reader_rls(text, text) TO tco_admin;

-- ==== issue 16: region names only for the billing zone (a name with a digit
-- is a POSIX offset whose sign is the opposite of ISO 8601).
CREATE OR REPLACE FUNCTION tco.config_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Region names only: a name with a digit is a POSIX offset or rule, whose
    -- sign is the opposite of ISO 8601 ('+08', 'UTC+8', 'Etc/GMT+8' are UTC-8).
    IF NEW.billing_timezone ~ '[0-9]' OR NEW.billing_timezone ~ '^[+-]' THEN
        RAISE EXCEPTION 'billing time zone "%" is an offset or a POSIX rule, not a region name', NEW.billing_timezone
            USING ERRCODE = '22023',
                  DETAIL = 'Numeric and POSIX-style zone names count offsets west of Greenwich: ''+08'' means UTC-8.',
                  HINT = 'Use a region name of pg_timezone_names, such as ''Asia/Shanghai'' or ''UTC''.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = NEW.billing_timezone) THEN
        RAISE EXCEPTION 'billing time zone "%" does not exist', NEW.billing_timezone
            USING ERRCODE = '22023',
                  HINT = 'Use a name from pg_timezone_names, such as ''UTC'' or ''Asia/Shanghai''.';
    END IF;
    RETURN NEW;
END $$;

-- ==== issue 16: readers granted tco.billing_timezone() read the zone without
-- a privilege on tco.config.
CREATE OR REPLACE FUNCTION tco.billing_timezone() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT billing_timezone FROM tco.config), 'UTC')
$$;

-- ==== issue 16: explicit ids in the upper half of a sequence's range no longer
-- move it (a rolled-back id at the int8 maximum made every later insert fail).
CREATE OR REPLACE FUNCTION tco.sync_identity() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    seq text := pg_catalog.pg_get_serial_sequence(format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), TG_ARGV[0]);
    top bigint;
    half bigint;
BEGIN
    -- Explicit ids in the upper half of the sequence's range do not move it:
    -- setval() is not undone by a rollback, and a sequence moved to (near) its
    -- maximum would refuse every later insert (2200H).
    SELECT s.seqmax OPERATOR(pg_catalog./) 2 INTO half FROM pg_catalog.pg_sequence s
     WHERE s.seqrelid OPERATOR(pg_catalog.=) seq::regclass;
    EXECUTE format('SELECT max(%I) FROM %I.%I WHERE %I <= $1', TG_ARGV[0], TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0])
        INTO top USING half;
    IF top IS NOT NULL AND top > coalesce(pg_catalog.pg_sequence_last_value(seq::regclass), 0) THEN
        PERFORM pg_catalog.setval(seq::regclass, top);
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.sync_identity() IS 'Statement trigger: keeps an identity sequence ahead of explicitly inserted ids (those in the lower half of its range).';

-- ==== issue 16: the DDL guard (src/sql/96_ddl_guard.sql, src/ddl_guard.c).
-- The DDL guard (src/ddl_guard.c): an event trigger that refuses the ALTER
-- TABLE forms tco's C code cannot follow on tco's own tables (column type
-- changes, dropped or renamed columns, renamed or moved tables, columns added
-- to the tables settlement writes in bulk, deferrable constraints).  Inactive
-- while the extension's own install and upgrade scripts run.  README,
-- "Limits", lists the supported DDL.
CREATE FUNCTION tco.ddl_guard() RETURNS event_trigger
    AS 'MODULE_PATHNAME', 'tco_ddl_guard' LANGUAGE C;
COMMENT ON FUNCTION tco.ddl_guard() IS 'Event trigger: refuses ALTER TABLE forms on tco''s tables that its C code does not support (see README, Limits).';
CREATE EVENT TRIGGER tco_ddl_guard ON ddl_command_start
    WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION tco.ddl_guard();
COMMENT ON EVENT TRIGGER tco_ddl_guard IS 'Refuses ALTER TABLE forms on tco''s tables that its C code does not support (see README, Limits).';
REVOKE EXECUTE ON FUNCTION tco.ddl_guard() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.ddl_guard() TO tco_admin;

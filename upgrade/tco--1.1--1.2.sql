-- tco 1.1 -> 1.2.  Every change made to src/sql after 1.1 is repeated here,
-- so that ALTER EXTENSION tco UPDATE gives the same extension as a fresh 1.2
-- install (scripts/test_upgrade.sh compares the two catalogs fact by fact).
\echo Use "ALTER EXTENSION tco UPDATE TO '1.2'" to load this file. \quit

-- Names resolve in pg_catalog only while this script runs (src/sql/00_guard.sql
-- says why); every tco object below is schema-qualified.
SET LOCAL search_path = pg_catalog, pg_temp;

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

-- ==== security (README "Security").  Everything below repeats the 1.2
-- changes of src/sql: the settlement lock becomes an object lock only tco's
-- code can take (src/guard.c); TRUNCATE is refused where DELETE is checked;
-- tco.invoice_line and tco.voucher_pool_balance run with the caller's
-- rights; settled history is visible by the organization it was settled
-- in; alerts go to channels with unguessable names, with the alert id as
-- payload; tco_admin loses TRIGGER, REFERENCES and TRUNCATE; every table
-- gets the writer guard.
-- The settlement lock of a cycle, in share mode: taken by every change of
-- bill lines or trusteeships that touches the cycle, so that it waits for a
-- settlement of that cycle in progress and no settlement starts under it.
-- An object lock only tco's code can take (src/guard.c), not an advisory
-- lock any role could take to block settlement.  Internal: executable by
-- tco_admin, not by PUBLIC (its callers are tco's triggers).
CREATE OR REPLACE FUNCTION tco.settlement_lock_shared(c tco.billing_cycle) RETURNS void
AS 'MODULE_PATHNAME', 'tco_settlement_lock_shared'
LANGUAGE C VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tco.settlement_lock_shared(tco.billing_cycle) IS 'Takes the settlement lock of a cycle in share mode, to the end of the transaction (conflicts only with tco.settle_cycle of that cycle).';

REVOKE EXECUTE ON FUNCTION tco.settlement_lock_shared(tco.billing_cycle) FROM PUBLIC;

-- TRUNCATE skips row triggers: without these, a truncate followed by a new
-- settlement would rewrite a settled cycle.  (test/security_catalog.sql
-- checks that every table guarded against DELETE is guarded against
-- TRUNCATE too.)
CREATE TRIGGER r14_settled_pack_no_truncate BEFORE TRUNCATE ON tco.settled_pack
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_settled_cycle_no_truncate BEFORE TRUNCATE ON tco.settled_cycle
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_statement_line_no_truncate BEFORE TRUNCATE ON tco.statement_line
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_statement_no_truncate BEFORE TRUNCATE ON tco.statement
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();

-- Bill lines may be deleted while their cycle is open, so TRUNCATE is
-- refused only once some cycle is settled (its lines would go with it).
CREATE FUNCTION tco.r14_bill_line_truncate_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM tco.settled_cycle) THEN
        RAISE EXCEPTION 'R14: tco.bill_line cannot be truncated once a billing cycle is settled'
            USING ERRCODE = 'TC008',
                  HINT = 'Delete the lines of open cycles with DELETE; the lines of settled cycles are never removed.';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER r14_bill_line_no_truncate BEFORE TRUNCATE ON tco.bill_line
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_bill_line_truncate_check();

REVOKE EXECUTE ON FUNCTION tco.r14_bill_line_truncate_check() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.r14_bill_line_truncate_check() TO tco_admin;

CREATE TRIGGER alert_no_truncate BEFORE TRUNCATE ON tco.alert
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();
COMMENT ON TABLE tco.alert IS 'R11: fired alerts, append-only; each insert is also announced with NOTIFY on its payer''s channel and the admin channel (payload: the alert id; see tco.alert_channels()). A threshold fires at most once per cycle.';
COMMENT ON FUNCTION tco.alert_payload(tco.alert) IS 'R11: an alert as JSON: alert_id, threshold_id, kind, account_id, threshold, value, cycle.';

-- Channels (README "Alerts in client code").  PostgreSQL has no privileges
-- on LISTEN or NOTIFY: any role that can connect may listen on any channel
-- and send on any channel.  So tco
--   * never announces on a channel whose name others can guess: each payer
--     account has a channel named tco_alerts_<32 random hex digits> and
--     tco_admin one named tco_alerts_admin_<32 random hex digits>, stored
--     in tco.alert_channel, which only tco_admin reads; a reader learns the
--     channels of the accounts whose alerts it may read (the same rule as
--     tco.alert) from tco.alert_channels();
--   * puts nothing in the payload but the alert id: what the alert says is
--     read from tco.alert, under row-level security, so a listener learns
--     nothing it could not read, and a forged notification (anyone who knows
--     a channel's name can send on it) names an alert id that does not exist
--     or that the listener cannot read, or repeats a real one;
--   * changes an account's channel name when the account joins, leaves or
--     changes organization (a reader that saw it no longer hears it), and on
--     demand with tco.rotate_alert_channels().
CREATE TABLE tco.alert_channel (
    channel    text PRIMARY KEY CONSTRAINT alert_channel_name CHECK (channel ~ '^tco_alerts_(admin_)?[0-9a-f]{32}$'),
    account_id bigint UNIQUE REFERENCES tco.account ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX alert_channel_one_admin ON tco.alert_channel ((true)) WHERE account_id IS NULL;
COMMENT ON TABLE tco.alert_channel IS 'R11: the NOTIFY channel of each payer account (account_id) and of tco_admin (account_id NULL), with unguessable names. Readers get theirs from tco.alert_channels().';
COMMENT ON COLUMN tco.alert_channel.account_id IS 'The payer whose alerts are announced on the channel; NULL for the admin channel (every alert).';
SELECT pg_catalog.pg_extension_config_dump('tco.alert_channel', '');

-- The channel of an account (NULL: the admin channel), created on first use.
CREATE FUNCTION tco.alert_channel_of(account_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ch text;
BEGIN
    SELECT c.channel INTO ch FROM tco.alert_channel c
     WHERE c.account_id = alert_channel_of.account_id
        OR (alert_channel_of.account_id IS NULL AND c.account_id IS NULL);
    IF ch IS NULL THEN
        INSERT INTO tco.alert_channel (channel, account_id)
        VALUES ('tco_alerts_' || CASE WHEN alert_channel_of.account_id IS NULL THEN 'admin_' ELSE '' END
                || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', ''),
                alert_channel_of.account_id)
        ON CONFLICT DO NOTHING
        RETURNING channel INTO ch;
    END IF;
    IF ch IS NULL THEN
        -- another session created it concurrently and has committed
        SELECT c.channel INTO ch FROM tco.alert_channel c
         WHERE c.account_id = alert_channel_of.account_id
            OR (alert_channel_of.account_id IS NULL AND c.account_id IS NULL);
    END IF;
    IF ch IS NULL THEN
        RAISE EXCEPTION 'could not create the alert channel of account %', alert_channel_of.account_id
            USING ERRCODE = '40001', HINT = 'Retry the transaction.';
    END IF;
    RETURN ch;
END $$;
COMMENT ON FUNCTION tco.alert_channel_of(bigint) IS 'Internal: the NOTIFY channel of a payer account (NULL: the admin channel), created on first use.';

-- The channels the invoking role may LISTEN on: the admin channel for a
-- member of tco_admin, and one per account whose alerts it may read in
-- tco.alert (tco.visible_accounts()).
CREATE FUNCTION tco.alert_channels() RETURNS TABLE (account_id bigint, channel text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.pg_has_role(tco.invoking_role(), 'tco_admin', 'USAGE') THEN
        account_id := NULL;
        channel := tco.alert_channel_of(NULL);
        RETURN NEXT;
    END IF;
    FOR account_id IN SELECT v FROM tco.visible_accounts() v ORDER BY 1 LOOP
        channel := tco.alert_channel_of(alert_channels.account_id);
        RETURN NEXT;
    END LOOP;
END $$;
COMMENT ON FUNCTION tco.alert_channels() IS 'R11: the channels to LISTEN on for alerts: the admin channel (account_id NULL, every alert) for tco_admin, and the channel of each account whose alerts the invoking role may read. Each notification''s payload is an alert id: read the alert from tco.alert (a forged or stale id reads nothing).';

-- A new channel name for an account (NULL: every channel, the admin one
-- included); listeners must read tco.alert_channels() again.
CREATE FUNCTION tco.rotate_alert_channels(account_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM tco.alert_channel c
     WHERE rotate_alert_channels.account_id IS NULL OR c.account_id = rotate_alert_channels.account_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
COMMENT ON FUNCTION tco.rotate_alert_channels(bigint) IS 'R11: forgets the channel of an account (NULL: every channel); a new, unguessable name is made on next use. Returns the number of channels forgotten.';

-- An account that joins, leaves or changes organization gets a new channel
-- name, so readers that could see it before no longer hear its alerts.
CREATE FUNCTION tco.alert_channel_member_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.org_id = OLD.org_id THEN
        RETURN NULL;
    END IF;
    DELETE FROM tco.alert_channel c
     WHERE c.account_id = CASE TG_OP WHEN 'DELETE' THEN OLD.account_id ELSE NEW.account_id END;
    RETURN NULL;
END $$;
CREATE TRIGGER alert_channel_member AFTER INSERT OR DELETE OR UPDATE OF org_id ON tco.member
    FOR EACH ROW EXECUTE FUNCTION tco.alert_channel_member_trigger();

-- Every fired alert is announced on its payer's channel and on the admin
-- channel (delivered at commit), with the alert id alone as payload.
CREATE OR REPLACE FUNCTION tco.alert_notify() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.pg_notify(tco.alert_channel_of(NEW.account_id), NEW.alert_id::text);
    PERFORM pg_catalog.pg_notify(tco.alert_channel_of(NULL), NEW.alert_id::text);
    RETURN NULL;
END $$;

REVOKE EXECUTE ON FUNCTION tco.alert_channel_of(bigint), tco.alert_channels(), tco.rotate_alert_channels(bigint),
                          tco.alert_channel_member_trigger() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.alert_channel_of(bigint), tco.alert_channels(), tco.rotate_alert_channels(bigint),
                          tco.alert_channel_member_trigger() TO tco_admin;
GRANT EXECUTE ON FUNCTION tco.alert_channels() TO tco_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON tco.alert_channel TO tco_admin;

ALTER VIEW tco.voucher_pool_balance SET (security_invoker = true);
COMMENT ON VIEW tco.voucher_pool_balance IS 'Per voucher pool: money funded, issued as vouchers, reclaimed, and the balance available to issue (funded - issued + reclaimed). Runs with the caller''s rights: a reader sees the pool of the organization it administers.';
GRANT SELECT ON tco.voucher_pool_balance TO tco_reader;

COMMENT ON FUNCTION tco.visible_payers() IS 'The invoking role''s own account and every current member of the organization it administers (empty for an unmapped role). Statements are no longer filtered by it: a statement is visible to its payer and to the admin of the organization it was settled in.';
ALTER POLICY statement_reader_visible ON tco.statement
    USING (payer_account_id = tco.current_account_id()
           OR org_id IN (SELECT tco.administered_organizations()));
ALTER POLICY statement_line_reader_visible ON tco.statement_line
    USING (statement_id IN (SELECT s.statement_id FROM tco.statement s));
ALTER POLICY settled_pack_reader_visible ON tco.settled_pack
    USING (statement_id IN (SELECT s.statement_id FROM tco.statement s));
ALTER POLICY benefit_reader_visible ON tco.benefit
    USING ((owner_account_id IN (SELECT tco.visible_accounts())
            AND (pool_org_id IS NULL OR pool_org_id IN (SELECT tco.visible_organizations())))
           OR (kind IN ('voucher', 'stored_value_card') AND pool_org_id IS NULL
               AND owner_account_id IN (SELECT tco.paying_managers())));
ALTER POLICY benefit_share_reader_visible ON tco.benefit_share
    USING (org_id IN (SELECT tco.visible_organizations())
           AND (account_id IN (SELECT tco.visible_accounts()) OR org_id IN (SELECT tco.administered_organizations())
                OR unit_id IN (SELECT tco.shared_units_of_current_account())));
ALTER POLICY invoice_reader_visible ON tco.invoice
    USING (statement_id IN (SELECT s.statement_id FROM tco.statement s));

CREATE OR REPLACE VIEW tco.invoice_line WITH (security_invoker = true) AS
SELECT i.invoice_id, i.statement_id, i.cycle, i.recipient_account_id, sl.account_id, sl.product_code,
       sl.account_id <> i.recipient_account_id AS for_member,
       sl.list_amount, sl.discount_amount, sl.benefit_amount, sl.due_amount, sl.lines
FROM tco.invoice i
JOIN tco.statement_line sl ON sl.statement_id = i.statement_id;
COMMENT ON VIEW tco.invoice_line IS 'Lines of each invoice: its statement''s lines per consuming account and product (a manager''s invoice lists its managed members'' consumption). A tco_reader sees the lines of the invoices and statements row-level security lets it see.';
GRANT EXECUTE ON FUNCTION tco.require_arg(anyelement, text), tco.require_exists(boolean, text, bigint),
                          tco.dot_escape(text), tco.mermaid_escape(text)
    TO tco_reader;

-- tco_admin: no TRIGGER, REFERENCES or TRUNCATE on any table (99_grants.sql)
REVOKE TRIGGER, REFERENCES, TRUNCATE ON ALL TABLES IN SCHEMA tco FROM tco_admin;

CREATE FUNCTION tco.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'TRUNCATE of tco.% is not allowed: it would skip the rules that DELETE enforces', TG_TABLE_NAME
        USING ERRCODE = '55000', HINT = 'Delete the rows with DELETE, which checks each of them.';
END $$;
COMMENT ON FUNCTION tco.refuse_truncate() IS 'BEFORE TRUNCATE trigger on every table of tco whose deletes are checked by a row trigger: refuses TRUNCATE (55000).';
CREATE FUNCTION tco.writer_guard() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tco_writer_guard' LANGUAGE C SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION tco.writer_guard() IS 'BEFORE statement trigger on every table of tco: refuses writes (42501) by roles that are neither superuser, the table owner nor a member of tco_admin.';
REVOKE EXECUTE ON FUNCTION tco.refuse_truncate(), tco.writer_guard() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.refuse_truncate(), tco.writer_guard() TO tco_admin;
-- both guards on every table (99_grants.sql)
DO $table_guards$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.oid::pg_catalog.regclass AS rel,
               EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g   -- a BEFORE DELETE FOR EACH ROW trigger
                        WHERE g.tgrelid OPERATOR(pg_catalog.=) c.oid AND NOT g.tgisinternal
                          AND (g.tgtype::integer OPERATOR(pg_catalog.&) 11) OPERATOR(pg_catalog.=) 11)
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g  -- and no BEFORE TRUNCATE one
                                WHERE g.tgrelid OPERATOR(pg_catalog.=) c.oid AND NOT g.tgisinternal
                                  AND (g.tgtype::integer OPERATOR(pg_catalog.&) 34) OPERATOR(pg_catalog.=) 34)
               AS refuse_truncate
          FROM pg_catalog.pg_class c
         WHERE c.relnamespace OPERATOR(pg_catalog.=) 'tco'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p')
         ORDER BY c.relname
    LOOP
        IF t.refuse_truncate THEN
            EXECUTE pg_catalog.format('CREATE TRIGGER tco_no_truncate BEFORE TRUNCATE ON %s '
                                      'FOR EACH STATEMENT EXECUTE FUNCTION tco.refuse_truncate()', t.rel);
        END IF;
        EXECUTE pg_catalog.format('CREATE TRIGGER tco_writer_guard BEFORE INSERT OR UPDATE OR DELETE ON %s '
                                  'FOR EACH STATEMENT EXECUTE FUNCTION tco.writer_guard()', t.rel);
    END LOOP;
END
$table_guards$;

-- ==== what BI tools send works under the default search_path (README "BI
-- tools"): the cast from tco.billing_cycle to text is implicit, and the BI
-- views have built-in column types only (the cycle as text, with date
-- bounds beside it).
DROP CAST (tco.billing_cycle AS text);
-- Implicit to text, so that what BI tools and drivers send works without tco
-- on the search_path (DESIGN section 6): `cycle = '2023-02'`, ranges, IN
-- lists and text parameters compare as text, and the text form YYYY-MM
-- orders exactly as the cycles do (years are four digits).  With tco on the
-- path, a literal still resolves to the type's own operators (an unknown
-- literal takes the other operand's type first).  README "BI tools".
CREATE CAST (tco.billing_cycle AS text) WITH INOUT AS IMPLICIT;
COMMENT ON CAST (tco.billing_cycle AS text) IS 'Formats as YYYY-MM; implicit, so a cycle compares with text literals and parameters under any search_path.';
DROP VIEW tco.settlement_by_payer, tco.settlement_by_member, tco.settlement_by_unit;
-- Views for BI tools (40_settlement.sql).  Their columns have built-in types
-- only, so that a BI tool or driver needs nothing of tco on its search_path:
-- the cycle is text YYYY-MM, with its first and last day beside it as dates
-- for date pickers.

CREATE VIEW tco.settlement_by_payer WITH (security_invoker = true) AS
SELECT s.cycle::text AS cycle, s.payer_account_id, s.org_id, s.list_total, s.discount_total, s.benefit_total,
       s.due_total, coalesce(l.lines, 0) AS lines, s.statement_id, s.paid_at,
       tco.cycle_start_date(s.cycle) AS cycle_start, tco.cycle_end_date(s.cycle) AS cycle_end
FROM tco.statement s
LEFT JOIN (SELECT statement_id, sum(lines)::bigint AS lines FROM tco.statement_line GROUP BY 1) l
       USING (statement_id);
COMMENT ON VIEW tco.settlement_by_payer IS 'One row per statement: what each payer owes per cycle (totals rounded half-up to 2 decimals).';
COMMENT ON COLUMN tco.settlement_by_payer.cycle IS 'Billing cycle as text YYYY-MM (text orders it chronologically); compare it with text: cycle = ''2023-02''.';
COMMENT ON COLUMN tco.settlement_by_payer.payer_account_id IS 'The paying account (a manager pays for its managed members).';
COMMENT ON COLUMN tco.settlement_by_payer.org_id IS 'The payer''s organization at settlement.';
COMMENT ON COLUMN tco.settlement_by_payer.list_total IS 'List amount, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.discount_total IS 'Contract discounts, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.benefit_total IS 'Paid by coupons, vouchers and stored-value cards, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.due_total IS 'Owed by the payer, rounded to 2 decimals.';
COMMENT ON COLUMN tco.settlement_by_payer.lines IS 'Number of bill lines on the statement.';
COMMENT ON COLUMN tco.settlement_by_payer.statement_id IS 'The statement.';
COMMENT ON COLUMN tco.settlement_by_payer.paid_at IS 'When the statement was paid (NULL: unpaid).';
COMMENT ON COLUMN tco.settlement_by_payer.cycle_start IS 'First day of the cycle.';
COMMENT ON COLUMN tco.settlement_by_payer.cycle_end IS 'Last day of the cycle.';

CREATE VIEW tco.settlement_by_member WITH (security_invoker = true) AS
SELECT s.cycle::text AS cycle, s.payer_account_id, sl.account_id, sl.product_code, s.org_id,
       sl.list_amount, sl.discount_amount, sl.benefit_amount, sl.due_amount, sl.lines, s.statement_id,
       tco.cycle_start_date(s.cycle) AS cycle_start, tco.cycle_end_date(s.cycle) AS cycle_end
FROM tco.statement_line sl JOIN tco.statement s USING (statement_id);
COMMENT ON VIEW tco.settlement_by_member IS 'Per cycle, payer, consuming account and product: exact amounts (6 decimals). A managed member''s consumption shows its real list and due amounts on its manager''s statement.';
COMMENT ON COLUMN tco.settlement_by_member.cycle IS 'Billing cycle as text YYYY-MM (text orders it chronologically); compare it with text: cycle = ''2023-02''.';
COMMENT ON COLUMN tco.settlement_by_member.payer_account_id IS 'The paying account.';
COMMENT ON COLUMN tco.settlement_by_member.account_id IS 'The consuming account.';
COMMENT ON COLUMN tco.settlement_by_member.product_code IS 'The product consumed.';
COMMENT ON COLUMN tco.settlement_by_member.org_id IS 'The payer''s organization at settlement.';
COMMENT ON COLUMN tco.settlement_by_member.list_amount IS 'List amount (exact).';
COMMENT ON COLUMN tco.settlement_by_member.discount_amount IS 'Contract discount (exact).';
COMMENT ON COLUMN tco.settlement_by_member.benefit_amount IS 'Paid by benefits (exact).';
COMMENT ON COLUMN tco.settlement_by_member.due_amount IS 'Owed by the payer for this consumption (exact).';
COMMENT ON COLUMN tco.settlement_by_member.lines IS 'Number of bill lines.';
COMMENT ON COLUMN tco.settlement_by_member.statement_id IS 'The statement the amounts are on.';
COMMENT ON COLUMN tco.settlement_by_member.cycle_start IS 'First day of the cycle.';
COMMENT ON COLUMN tco.settlement_by_member.cycle_end IS 'Last day of the cycle.';

CREATE VIEW tco.settlement_by_unit WITH (security_invoker = true) AS
WITH RECURSIVE subtree (unit_id, descendant_id) AS (
    SELECT u.unit_id, u.unit_id FROM tco.org_unit u
    UNION ALL
    SELECT t.unit_id, c.unit_id FROM subtree t JOIN tco.org_unit c ON c.parent_unit_id = t.descendant_id
)
SELECT s.cycle::text AS cycle, u.unit_id, u.org_id,
       sum(sl.list_amount) AS list_total, sum(sl.discount_amount) AS discount_total,
       sum(sl.benefit_amount) AS benefit_total, sum(sl.due_amount) AS due_total,
       sum(sl.lines)::bigint AS lines,
       tco.cycle_start_date(s.cycle) AS cycle_start, tco.cycle_end_date(s.cycle) AS cycle_end
FROM tco.org_unit u
JOIN subtree t ON t.unit_id = u.unit_id
JOIN tco.member m ON m.unit_id = t.descendant_id
JOIN tco.statement_line sl ON sl.account_id = m.account_id
JOIN tco.statement s ON s.statement_id = sl.statement_id
GROUP BY s.cycle, u.unit_id, u.org_id;
COMMENT ON VIEW tco.settlement_by_unit IS 'Per cycle and unit: consumption of the members currently placed in the unit or any unit below it (exact sums, 6 decimals), whoever paid it.';
COMMENT ON COLUMN tco.settlement_by_unit.cycle IS 'Billing cycle as text YYYY-MM (text orders it chronologically); compare it with text: cycle = ''2023-02''.';
COMMENT ON COLUMN tco.settlement_by_unit.unit_id IS 'The unit; its totals cover its whole subtree.';
COMMENT ON COLUMN tco.settlement_by_unit.org_id IS 'The unit''s organization.';
COMMENT ON COLUMN tco.settlement_by_unit.list_total IS 'List amount (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.discount_total IS 'Contract discounts (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.benefit_total IS 'Paid by benefits (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.due_total IS 'Owed for this consumption (exact).';
COMMENT ON COLUMN tco.settlement_by_unit.lines IS 'Number of bill lines.';
COMMENT ON COLUMN tco.settlement_by_unit.cycle_start IS 'First day of the cycle.';
COMMENT ON COLUMN tco.settlement_by_unit.cycle_end IS 'Last day of the cycle.';
REVOKE ALL ON tco.settlement_by_payer, tco.settlement_by_member, tco.settlement_by_unit FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON tco.settlement_by_payer, tco.settlement_by_member, tco.settlement_by_unit TO tco_admin;
GRANT SELECT ON tco.settlement_by_payer, tco.settlement_by_member, tco.settlement_by_unit TO tco_reader;
GRANT EXECUTE ON FUNCTION tco.cycle_end_date(tco.billing_cycle) TO tco_reader;
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

-- ==== invoices after issue (README "Invoices"): voids and credit notes.
ALTER TABLE tco.invoice
    ADD COLUMN voided_at       timestamptz,
    ADD COLUMN void_reason     text,
    ADD COLUMN voided_by       name,
    ADD COLUMN credited_amount numeric(20,2) NOT NULL DEFAULT 0,
    ADD COLUMN net_amount      numeric(20,2) GENERATED ALWAYS AS (amount - credited_amount) STORED,
    ADD CONSTRAINT invoice_void CHECK ((voided_at IS NULL) = (void_reason IS NULL) AND (voided_at IS NULL) = (voided_by IS NULL)
                                   AND (void_reason IS NULL OR btrim(void_reason) <> '')),
    ADD CONSTRAINT invoice_credited CHECK (credited_amount >= 0 AND credited_amount <= amount),
    DROP CONSTRAINT invoice_one_per_statement;
CREATE UNIQUE INDEX invoice_one_per_statement ON tco.invoice (statement_id) WHERE voided_at IS NULL;
COMMENT ON COLUMN tco.invoice.voided_at IS 'When tco.void_invoice cancelled it (NULL: valid); its statement may then be invoiced again.';
COMMENT ON COLUMN tco.invoice.void_reason IS 'Why it was voided.';
COMMENT ON COLUMN tco.invoice.credited_amount IS 'Sum of its credit notes (tco.credit_note), refunded to the payer.';
COMMENT ON COLUMN tco.invoice.net_amount IS 'amount - credited_amount: what the invoice finally charges.';
DROP TRIGGER invoice_append_only ON tco.invoice;
CREATE TRIGGER invoice_append_only BEFORE DELETE ON tco.invoice
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
-- BEFORE UPDATE: an invoice changes only by being voided (once, while it has
-- no credit note) and by its credited amount following its credit notes.
CREATE FUNCTION tco.invoice_update_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF (NEW.invoice_id, NEW.statement_id, NEW.issuer_account_id, NEW.recipient_account_id, NEW.amount, NEW.issued_at, NEW.issued_by)
       IS DISTINCT FROM (OLD.invoice_id, OLD.statement_id, OLD.issuer_account_id, OLD.recipient_account_id, OLD.amount, OLD.issued_at, OLD.issued_by)
       OR NEW.cycle OPERATOR(tco.<>) OLD.cycle
       OR (OLD.voided_at IS NOT NULL AND (NEW.voided_at, NEW.void_reason, NEW.voided_by)
                                         IS DISTINCT FROM (OLD.voided_at, OLD.void_reason, OLD.voided_by)) THEN
        RAISE EXCEPTION 'R14: invoice % is issued: it is never rewritten', OLD.invoice_id
            USING ERRCODE = 'TC008', HINT = 'Void it with tco.void_invoice and issue a new one, or reduce it with tco.issue_credit_note.';
    END IF;
    IF NEW.credited_amount IS DISTINCT FROM
       (SELECT coalesce(sum(c.amount), 0) FROM tco.credit_note c WHERE c.invoice_id = NEW.invoice_id) THEN
        RAISE EXCEPTION 'credited amount % of invoice % is not the sum of its credit notes', NEW.credited_amount, NEW.invoice_id
            USING ERRCODE = '23514', HINT = 'Credit an invoice with tco.issue_credit_note(invoice_id, amount, reason).';
    END IF;
    IF NEW.voided_at IS NOT NULL AND OLD.voided_at IS NULL AND NEW.credited_amount > 0 THEN
        RAISE EXCEPTION 'invoice % has credit notes (% credited): it cannot be voided', NEW.invoice_id, NEW.credited_amount
            USING ERRCODE = '55000', HINT = 'Money has moved on it: credit what is left with tco.issue_credit_note instead.';
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.invoice_update_check() IS 'BEFORE UPDATE on tco.invoice: only a void (once, without credit notes) and the credited amount (the sum of its credit notes) change.';
CREATE TRIGGER invoice_update_check BEFORE UPDATE ON tco.invoice
    FOR EACH ROW EXECUTE FUNCTION tco.invoice_update_check();
CREATE OR REPLACE FUNCTION tco.issue_invoice(statement_id bigint, issuer_account_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st       tco.statement;
    existing tco.invoice;
    issuer   bigint;
    new_id   bigint;
BEGIN
    PERFORM tco.require_arg(statement_id, 'statement_id');
    -- Serializes issuers of one statement: the second waits, then sees the
    -- first one's invoice and gets a clear 23505.
    SELECT * INTO st FROM tco.statement s WHERE s.statement_id = issue_invoice.statement_id FOR UPDATE;
    PERFORM tco.require_exists(FOUND, 'statement', statement_id);
    issuer := coalesce(issuer_account_id, tco.current_account_id(), st.payer_account_id);
    -- Who may issue is checked before anything is said about the statement's invoice.
    IF NOT tco.may_issue_invoice(st, issuer) THEN
        INSERT INTO tco.invoice (statement_id, issuer_account_id) VALUES (st.statement_id, issuer);  -- raises TC023
    END IF;
    SELECT * INTO existing FROM tco.invoice i WHERE i.statement_id = st.statement_id AND i.voided_at IS NULL;
    IF FOUND THEN
        RAISE EXCEPTION 'statement % already has invoice % (issued by account %)',
                st.statement_id, existing.invoice_id, existing.issuer_account_id
            USING ERRCODE = '23505', HINT = 'A statement has one valid invoice at a time: look it up in tco.invoice, or void it first (tco.void_invoice).';
    END IF;
    INSERT INTO tco.invoice (statement_id, issuer_account_id)
        VALUES (st.statement_id, issuer)
        RETURNING invoice_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.issue_invoice(bigint, bigint) IS
'Issues the invoice of a paid statement and returns its id. issuer_account_id defaults to the account of the invoking role (tco.account_login), else the statement''s payer. Errors: 23505 already invoiced (and not voided), 55000 unpaid or nothing due, TC023 issuer not allowed (only the payer or its organization''s admin; R7: a managed member issues none).';

CREATE FUNCTION tco.void_invoice(invoice_id bigint, reason text, at timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inv tco.invoice;
BEGIN
    PERFORM tco.require_arg(invoice_id, 'invoice_id');
    PERFORM tco.require_name(reason, 'reason');
    PERFORM tco.require_arg(at, 'at');
    SELECT * INTO inv FROM tco.invoice i WHERE i.invoice_id = void_invoice.invoice_id FOR UPDATE;
    PERFORM tco.require_exists(FOUND, 'invoice', invoice_id);
    IF inv.voided_at IS NOT NULL THEN
        RAISE EXCEPTION 'invoice % was already voided (%)', invoice_id, inv.void_reason
            USING ERRCODE = '55000', HINT = 'A voided invoice stays voided; issue a new one for its statement with tco.issue_invoice.';
    END IF;
    UPDATE tco.invoice i SET voided_at = at, void_reason = reason, voided_by = current_user
     WHERE i.invoice_id = void_invoice.invoice_id;
END $$;
COMMENT ON FUNCTION tco.void_invoice(bigint, text, timestamptz) IS
'Voids an invoice (the row stays, with the reason); its statement may be invoiced again. Moves no money: the statement stays paid. Errors: 55000 already voided or with credit notes.';

-- Credit notes: append-only reductions of an invoice, each refunded to the
-- payer's balance through the ledger.
CREATE TABLE tco.credit_note (
    credit_note_id  bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    invoice_id      bigint NOT NULL REFERENCES tco.invoice ON DELETE RESTRICT,
    amount          numeric(20,2) NOT NULL CONSTRAINT credit_note_positive CHECK (amount > 0),
    reason          text NOT NULL CONSTRAINT credit_note_reason CHECK (btrim(reason) <> ''),
    issued_at       timestamptz NOT NULL DEFAULT now(),
    issued_by       name NOT NULL DEFAULT current_user,
    ledger_entry_id bigint REFERENCES tco.ledger ON DELETE RESTRICT
);
CREATE INDEX credit_note_invoice ON tco.credit_note (invoice_id);
COMMENT ON TABLE tco.credit_note IS 'Credit notes: append-only reductions of an issued invoice, never above what is left on it; each refunds its amount to the invoice''s recipient through tco.ledger (kind refund).';
COMMENT ON COLUMN tco.credit_note.ledger_entry_id IS 'The refund in tco.ledger (set by the trigger).';
SELECT pg_catalog.pg_extension_config_dump('tco.credit_note', '');

-- BEFORE INSERT: locks the invoice (concurrent notes serialize here), refuses
-- a voided invoice and an amount above what is left, and books the refund.
CREATE FUNCTION tco.credit_note_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inv tco.invoice;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.invoice_id IS NULL OR NEW.amount IS NULL THEN
        RETURN NEW;   -- the NOT NULL constraints report it
    END IF;
    SELECT * INTO inv FROM tco.invoice i WHERE i.invoice_id = NEW.invoice_id FOR UPDATE;
    PERFORM tco.require_exists(FOUND, 'invoice', NEW.invoice_id);
    IF inv.voided_at IS NOT NULL THEN
        RAISE EXCEPTION 'invoice % is voided: no credit note', inv.invoice_id
            USING ERRCODE = '55000', HINT = 'Credit the invoice that replaced it.';
    END IF;
    IF NEW.amount > inv.net_amount THEN
        RAISE EXCEPTION 'credit note of % exceeds what is left on invoice % (% of %)', NEW.amount, inv.invoice_id, inv.net_amount, inv.amount
            USING ERRCODE = '55000', HINT = pg_catalog.format('Credit at most %s.', inv.net_amount);
    END IF;
    IF NEW.ledger_entry_id IS NOT NULL THEN
        RAISE EXCEPTION 'the refund of a credit note is booked by tco'
            USING ERRCODE = '23514', HINT = 'Leave ledger_entry_id NULL.';
    END IF;
    INSERT INTO tco.ledger (account_id, amount, kind, reference)
    VALUES (inv.recipient_account_id, NEW.amount, 'refund', pg_catalog.format('credit note of invoice %s', inv.invoice_id))
    RETURNING entry_id INTO NEW.ledger_entry_id;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.credit_note_check() IS 'BEFORE INSERT on tco.credit_note: locks the invoice, refuses a voided one and an amount above what is left (55000), books the refund in tco.ledger.';
CREATE TRIGGER credit_note_check BEFORE INSERT ON tco.credit_note
    FOR EACH ROW EXECUTE FUNCTION tco.credit_note_check();

-- AFTER INSERT: the invoice's credited amount follows its notes.
CREATE FUNCTION tco.credit_note_applied() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    UPDATE tco.invoice i
       SET credited_amount = (SELECT sum(c.amount) FROM tco.credit_note c WHERE c.invoice_id = NEW.invoice_id)
     WHERE i.invoice_id = NEW.invoice_id;
    RETURN NULL;
END $$;
CREATE TRIGGER credit_note_applied AFTER INSERT ON tco.credit_note
    FOR EACH ROW EXECUTE FUNCTION tco.credit_note_applied();
CREATE TRIGGER credit_note_append_only BEFORE UPDATE OR DELETE ON tco.credit_note
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();

CREATE FUNCTION tco.issue_credit_note(invoice_id bigint, amount numeric, reason text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(invoice_id, 'invoice_id');
    PERFORM tco.require_amount(amount, 'amount');
    PERFORM tco.require_name(reason, 'reason');
    INSERT INTO tco.credit_note (invoice_id, amount, reason)
    VALUES (issue_credit_note.invoice_id, issue_credit_note.amount, issue_credit_note.reason)
    RETURNING credit_note_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.issue_credit_note(bigint, numeric, text) IS
'Issues a credit note reducing an invoice by amount (at most what is left on it), refunds it to the payer''s balance (tco.ledger, kind refund) and returns its id. Errors: 22023 bad amount, 23503 unknown invoice, 55000 voided invoice or amount above what is left.';

SELECT tco.enable_reader_rls('credit_note', 'invoice_id IN (SELECT i.invoice_id FROM tco.invoice i)');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('tco.credit_note', 'credit_note_id')::regclass, '');
CREATE TRIGGER credit_note_sync_identity AFTER INSERT ON tco.credit_note
    FOR EACH STATEMENT EXECUTE FUNCTION tco.sync_identity('credit_note_id');
CREATE TRIGGER tco_no_truncate BEFORE TRUNCATE ON tco.credit_note
    FOR EACH STATEMENT EXECUTE FUNCTION tco.refuse_truncate();
CREATE TRIGGER tco_writer_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.credit_note
    FOR EACH STATEMENT EXECUTE FUNCTION tco.writer_guard();
REVOKE ALL ON tco.credit_note FROM PUBLIC;
REVOKE ALL ON SEQUENCE tco.credit_note_credit_note_id_seq FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON tco.credit_note TO tco_admin;
GRANT ALL ON SEQUENCE tco.credit_note_credit_note_id_seq TO tco_admin;
GRANT SELECT ON tco.credit_note TO tco_reader;
REVOKE EXECUTE ON FUNCTION tco.invoice_update_check(), tco.void_invoice(bigint, text, timestamptz), tco.credit_note_check(),
                          tco.credit_note_applied(), tco.issue_credit_note(bigint, numeric, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.invoice_update_check(), tco.void_invoice(bigint, text, timestamptz), tco.credit_note_check(),
                          tco.credit_note_applied(), tco.issue_credit_note(bigint, numeric, text) TO tco_admin;

-- ==== the FOCUS export and tags (README "FOCUS", "Tags and showback"):
-- the billing currency and provider name in tco.config, tags on bill lines,
-- tco.focus_cost_and_usage and tco.showback_by_tag.
ALTER TABLE tco.config
    ADD COLUMN billing_currency text NOT NULL DEFAULT 'USD' CONSTRAINT config_billing_currency CHECK (billing_currency ~ '^[A-Z]{3}$'),
    ADD COLUMN provider_name    text NOT NULL DEFAULT 'tco' CONSTRAINT config_provider_name CHECK (btrim(provider_name) <> '');
COMMENT ON COLUMN tco.config.billing_currency IS 'ISO 4217 code of the currency every amount is in (default USD): the BillingCurrency of the FOCUS export.';
COMMENT ON COLUMN tco.config.provider_name IS 'Name of the provider that bills (default tco): ProviderName, PublisherName and, for uninvoiced lines, InvoiceIssuerName of the FOCUS export.';
-- The billing currency and the provider's name (the FOCUS export reads them;
-- SECURITY DEFINER like tco.billing_timezone, so a reader granted the export
-- needs no privilege on tco.config).
CREATE FUNCTION tco.billing_currency() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT billing_currency FROM tco.config), 'USD')
$$;
COMMENT ON FUNCTION tco.billing_currency() IS 'The installation''s billing currency, ISO 4217 (tco.config.billing_currency; default USD).';
CREATE FUNCTION tco.provider_name() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT provider_name FROM tco.config), 'tco')
$$;
COMMENT ON FUNCTION tco.provider_name() IS 'The name of the provider that bills (tco.config.provider_name; default tco).';
REVOKE EXECUTE ON FUNCTION tco.billing_currency(), tco.provider_name() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.billing_currency(), tco.provider_name() TO tco_admin, tco_reader;
ALTER TABLE tco.bill_line
    ADD COLUMN tags jsonb NOT NULL DEFAULT '{}',
    ADD CONSTRAINT bill_line_tags CHECK (jsonb_typeof(tags) = 'object'
                                         AND NOT jsonb_path_exists(tags, '$.* ? (@.type() != "string")'));
COMMENT ON COLUMN tco.bill_line.tags IS 'Resource tags, as cloud providers attach them: a JSON object of string values, e.g. {"team": "data", "env": "prod"} (default {}). Read by tco.showback_by_tag and the FOCUS export; never by settlement.';
CREATE VIEW tco.focus_cost_and_usage WITH (security_invoker = true) AS
WITH line AS (
    SELECT p.pack_id, p.statement_id, p.payer_account_id, p.account_id, p.product_code, p.cycle,
           tco.cycle_range(p.cycle) AS period, u.line_id, u.li, u.di, u.be, u.src, u.did
    FROM tco.settled_pack p
    CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_amounts, p.benefit_amounts,
                              p.discount_sources, p.discount_ids) AS u(line_id, li, di, be, src, did)
), commitment AS (
    -- per line: what resource packs and savings plans covered, and the one
    -- that covered most (lowest id on a tie)
    SELECT DISTINCT ON (u.line_id) u.line_id, b.benefit_id, b.kind,
           sum(u.a) OVER (PARTITION BY u.line_id) AS covered
    FROM tco.settled_pack p
    CROSS JOIN LATERAL unnest(p.use_benefit_ids, p.use_line_ids, p.use_amounts) AS u(benefit_id, line_id, a)
    JOIN tco.benefit b ON b.benefit_id = u.benefit_id AND b.kind IN ('resource_pack', 'savings_plan')
    ORDER BY u.line_id, u.a DESC, b.benefit_id
), cfg AS MATERIALIZED (
    SELECT tco.billing_currency() AS currency, tco.provider_name() AS provider
)
SELECT
    ((l.li - l.di - l.be) * 0.000001)::numeric(20,6)                        AS "BilledCost",
    ((l.li - l.di - l.be + coalesce(c.covered, 0)) * 0.000001)::numeric(20,6) AS "EffectiveCost",
    (l.li * 0.000001)::numeric(20,6)                                         AS "ListCost",
    ((l.li - l.di) * 0.000001)::numeric(20,6)                                AS "ContractedCost",
    l.payer_account_id::text                                                 AS "BillingAccountId",
    pa.name                                                                  AS "BillingAccountName",
    'Payer account'::text                                                    AS "BillingAccountType",
    l.account_id::text                                                       AS "SubAccountId",
    sa.name                                                                  AS "SubAccountName",
    'Member account'::text                                                   AS "SubAccountType",
    pg_catalog.lower(l.period)                                               AS "BillingPeriodStart",
    pg_catalog.upper(l.period)                                               AS "BillingPeriodEnd",
    bl.period_start                                                          AS "ChargePeriodStart",
    bl.period_end                                                            AS "ChargePeriodEnd",
    CASE bl.charge_type WHEN 'prepaid' THEN 'Purchase' ELSE 'Usage' END      AS "ChargeCategory",
    NULL::text                                                               AS "ChargeClass",
    l.product_code || CASE bl.charge_type WHEN 'prepaid' THEN ' prepaid order' ELSE ' usage' END
                   || ' of account ' || l.account_id                         AS "ChargeDescription",
    CASE bl.charge_type WHEN 'prepaid' THEN 'One-Time' ELSE 'Usage-Based' END AS "ChargeFrequency",
    l.product_code                                                           AS "ServiceName",
    'Other'::text                                                            AS "ServiceCategory",
    cf.currency                                                              AS "BillingCurrency",
    coalesce(ia.name, cf.provider)                                           AS "InvoiceIssuerName",
    cf.provider                                                              AS "ProviderName",
    cf.provider                                                              AS "PublisherName",
    NULL::numeric                                                            AS "PricingQuantity",
    NULL::text                                                               AS "PricingUnit",
    c.benefit_id::text                                                       AS "CommitmentDiscountId",
    CASE c.kind WHEN 'resource_pack' THEN 'Usage' WHEN 'savings_plan' THEN 'Spend' END AS "CommitmentDiscountCategory",
    CASE WHEN c.kind IS NOT NULL THEN 'Used' END                             AS "CommitmentDiscountStatus",
    CASE c.kind WHEN 'resource_pack' THEN 'Resource Pack' WHEN 'savings_plan' THEN 'Savings Plan' END AS "CommitmentDiscountType",
    bl.tags                                                                  AS "Tags",
    i.invoice_id::text                                                       AS "InvoiceId",
    l.cycle::text                                                            AS "x_BillingCycle",
    l.line_id                                                                AS "x_LineId",
    l.statement_id                                                           AS "x_StatementId",
    st.org_id                                                                AS "x_OrganizationId",
    (l.di * 0.000001)::numeric(20,6)                                         AS "x_DiscountAmount",
    ('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[l.src + 1] AS "x_DiscountSource",
    (l.be * 0.000001)::numeric(20,6)                                         AS "x_BenefitAmount"
FROM line l
JOIN tco.bill_line bl ON bl.line_id = l.line_id
JOIN tco.statement st ON st.statement_id = l.statement_id
LEFT JOIN tco.account pa ON pa.account_id = l.payer_account_id
LEFT JOIN tco.account sa ON sa.account_id = l.account_id
LEFT JOIN tco.invoice i ON i.statement_id = l.statement_id AND i.voided_at IS NULL
LEFT JOIN tco.account ia ON ia.account_id = i.issuer_account_id
LEFT JOIN commitment c ON c.line_id = l.line_id
CROSS JOIN cfg cf;
COMMENT ON VIEW tco.focus_cost_and_usage IS 'FOCUS 1.2 cost and usage rows, one per settled bill line (README "FOCUS"). Export with COPY (SELECT * FROM tco.focus_cost_and_usage WHERE "x_BillingCycle" = ''2023-02'') TO STDOUT WITH (FORMAT csv, HEADER). Runs with the caller''s rights.';
COMMENT ON COLUMN tco.focus_cost_and_usage."BilledCost" IS 'FOCUS: the amount invoiced for the line: list - contract discount - benefits (exact). Summed per InvoiceId and rounded to 2 decimals it is the invoice amount.';
COMMENT ON COLUMN tco.focus_cost_and_usage."EffectiveCost" IS 'FOCUS: amortized cost: BilledCost plus what resource packs and savings plans covered.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ListCost" IS 'FOCUS: list amount of the line.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ContractedCost" IS 'FOCUS: list amount less the contract discount (R8).';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingAccountId" IS 'FOCUS: the payer of the line (a manager for its managed members).';
COMMENT ON COLUMN tco.focus_cost_and_usage."SubAccountId" IS 'FOCUS: the consuming account.';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingPeriodStart" IS 'FOCUS: start of the billing cycle in the billing time zone (inclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingPeriodEnd" IS 'FOCUS: end of the billing cycle (exclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargePeriodStart" IS 'FOCUS: the line''s period start (inclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargePeriodEnd" IS 'FOCUS: the line''s period end (exclusive).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargeCategory" IS 'FOCUS: Usage (postpaid lines) or Purchase (prepaid orders).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargeClass" IS 'FOCUS: NULL (tco has no correction lines yet).';
COMMENT ON COLUMN tco.focus_cost_and_usage."ServiceName" IS 'FOCUS: the product code.';
COMMENT ON COLUMN tco.focus_cost_and_usage."BillingCurrency" IS 'FOCUS: tco.config.billing_currency (ISO 4217; default USD).';
COMMENT ON COLUMN tco.focus_cost_and_usage."InvoiceIssuerName" IS 'FOCUS: the account that issued the invoice, else the provider name.';
COMMENT ON COLUMN tco.focus_cost_and_usage."ProviderName" IS 'FOCUS: tco.config.provider_name (default tco).';
COMMENT ON COLUMN tco.focus_cost_and_usage."PricingQuantity" IS 'FOCUS: NULL: bill lines carry no quantity.';
COMMENT ON COLUMN tco.focus_cost_and_usage."CommitmentDiscountId" IS 'FOCUS: the resource pack or savings plan (tco.benefit id) that covered most of the line; NULL if none.';
COMMENT ON COLUMN tco.focus_cost_and_usage."Tags" IS 'FOCUS: the line''s tags, a JSON object of strings.';
COMMENT ON COLUMN tco.focus_cost_and_usage."InvoiceId" IS 'FOCUS: the invoice of the line''s statement (NULL until tco.issue_invoice).';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_BillingCycle" IS 'tco: the billing cycle (YYYY-MM): filter exports on it.';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_LineId" IS 'tco: the bill line.';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_StatementId" IS 'tco: the statement the line is on.';

-- Showback by tag: per cycle, tag key and value, the settled amounts of the
-- lines carrying that tag (a line with several tags counts under each of
-- its keys; lines without a key are in no row of that key).
CREATE VIEW tco.showback_by_tag WITH (security_invoker = true) AS
SELECT f."x_BillingCycle" AS cycle, t.key AS tag_key, t.value AS tag_value,
       sum(f."ListCost") AS list_total, sum(f."x_DiscountAmount") AS discount_total,
       sum(f."x_BenefitAmount") AS benefit_total, sum(f."BilledCost") AS due_total,
       count(*) AS lines
FROM tco.focus_cost_and_usage f
CROSS JOIN LATERAL pg_catalog.jsonb_each_text(f."Tags") AS t(key, value)
GROUP BY 1, 2, 3;
COMMENT ON VIEW tco.showback_by_tag IS 'Showback per cycle, tag key and tag value: settled amounts (exact) of the lines carrying the tag. Runs with the caller''s rights.';
COMMENT ON COLUMN tco.showback_by_tag.cycle IS 'Billing cycle as text YYYY-MM.';
COMMENT ON COLUMN tco.showback_by_tag.due_total IS 'What the payers owe for these lines (exact).';
REVOKE ALL ON tco.focus_cost_and_usage, tco.showback_by_tag FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON tco.focus_cost_and_usage, tco.showback_by_tag TO tco_admin;
GRANT SELECT ON tco.focus_cost_and_usage, tco.showback_by_tag TO tco_reader;

-- ==== cost allocation, split charges (README "Tags and showback"):
-- tco.allocation_rule, tco.allocation_target, tco.allocated_cost.
CREATE TABLE tco.allocation_rule (
    rule_id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    org_id            bigint NOT NULL REFERENCES tco.organization ON DELETE CASCADE,
    name              text NOT NULL CONSTRAINT allocation_rule_name CHECK (btrim(name) <> ''),
    source_account_id bigint REFERENCES tco.account ON DELETE RESTRICT,
    source_tag_key    text,
    source_tag_value  text,
    method            text NOT NULL CONSTRAINT allocation_rule_method CHECK (method IN ('even', 'proportional', 'fixed')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT allocation_rule_one_source CHECK ((source_account_id IS NULL) <> (source_tag_key IS NULL)),
    CONSTRAINT allocation_rule_tag CHECK ((source_tag_key IS NULL) = (source_tag_value IS NULL))
);
COMMENT ON TABLE tco.allocation_rule IS 'Split-charge rules (reporting only): the settled cost of a source account, or of the lines tagged source_tag_key = source_tag_value, split over the rule''s targets (tco.allocation_target) evenly, in proportion to their own cost, or by fixed percentages.';
COMMENT ON COLUMN tco.allocation_rule.org_id IS 'The organization the rule belongs to: it splits only lines settled in that organization, and only its readers see it.';
COMMENT ON COLUMN tco.allocation_rule.method IS 'even, proportional (to each target''s own settled cost in the cycle) or fixed (tco.allocation_target.percent, summing to 100).';

CREATE TABLE tco.allocation_target (
    target_id         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    rule_id           bigint NOT NULL REFERENCES tco.allocation_rule ON DELETE CASCADE,
    target_account_id bigint REFERENCES tco.account ON DELETE RESTRICT,
    target_unit_id    bigint REFERENCES tco.org_unit ON DELETE RESTRICT,
    percent           numeric(9,6) CONSTRAINT allocation_target_percent CHECK (percent > 0 AND percent <= 100),
    CONSTRAINT allocation_target_one CHECK ((target_account_id IS NULL) <> (target_unit_id IS NULL))
);
CREATE UNIQUE INDEX allocation_target_once ON tco.allocation_target
    (rule_id, coalesce(target_account_id, 0), coalesce(target_unit_id, 0));
COMMENT ON TABLE tco.allocation_target IS 'The targets of an allocation rule: an account or a unit (its whole subtree), with a percentage for fixed rules.';
COMMENT ON COLUMN tco.allocation_target.percent IS 'Fixed rules only (NULL otherwise): the target''s share in percent; a rule''s shares sum to exactly 100.';
SELECT pg_catalog.pg_extension_config_dump('tco.allocation_rule', '');
SELECT pg_catalog.pg_extension_config_dump('tco.allocation_target', '');

-- A rule's targets are consistent with its method when the transaction
-- commits (deferred: targets are added one by one): fixed rules have a
-- percentage on every target and they sum to 100, other rules have none.
CREATE FUNCTION tco.allocation_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT a.rule_id, a.method, count(t.target_id) AS n, count(t.percent) AS with_percent, sum(t.percent) AS total
          FROM tco.allocation_rule a LEFT JOIN tco.allocation_target t ON t.rule_id = a.rule_id
         WHERE a.rule_id = CASE TG_TABLE_NAME WHEN 'allocation_rule' THEN NEW.rule_id
                                              ELSE coalesce(NEW.rule_id, OLD.rule_id) END
         GROUP BY a.rule_id, a.method
    LOOP
        IF r.method = 'fixed' AND r.n > 0 AND (r.with_percent <> r.n OR r.total <> 100) THEN
            RAISE EXCEPTION 'allocation rule %: fixed percentages sum to %, not 100', r.rule_id, coalesce(r.total, 0)
                USING ERRCODE = '23514', HINT = 'Give every target of a fixed rule a percent, summing to exactly 100.';
        ELSIF r.method <> 'fixed' AND r.with_percent > 0 THEN
            RAISE EXCEPTION 'allocation rule % is %: its targets take no percent', r.rule_id, r.method
                USING ERRCODE = '23514', HINT = 'Leave percent NULL, or make the rule fixed.';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER allocation_target_check AFTER INSERT OR UPDATE OR DELETE ON tco.allocation_target
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tco.allocation_check();
CREATE CONSTRAINT TRIGGER allocation_rule_check AFTER INSERT OR UPDATE ON tco.allocation_rule
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tco.allocation_check();

-- The allocated parts: per settled line of a rule's source, one row per
-- target, the parts of a line summing exactly to its BilledCost.
CREATE VIEW tco.allocated_cost WITH (security_invoker = true) AS
WITH line AS (
    SELECT f."x_BillingCycle" AS cycle, f."x_LineId" AS line_id, f."SubAccountId"::bigint AS account_id,
           f."BilledCost" AS amount, f."Tags" AS tags, f."x_OrganizationId" AS org_id
    FROM tco.focus_cost_and_usage f
), source AS (
    -- each line goes to the lowest rule that matches it
    SELECT DISTINCT ON (l.line_id) l.cycle, l.line_id, l.account_id, l.amount, r.rule_id, r.method
    FROM line l
    JOIN tco.allocation_rule r
      ON r.org_id = l.org_id
     AND (r.source_account_id = l.account_id
          OR (r.source_tag_key IS NOT NULL AND l.tags ->> r.source_tag_key = r.source_tag_value))
    ORDER BY l.line_id, r.rule_id
), own AS (
    -- each target's own settled cost per cycle, for proportional rules
    SELECT t.target_id, l.cycle, sum(l.amount) AS cost
    FROM tco.allocation_target t
    JOIN tco.allocation_rule r ON r.rule_id = t.rule_id AND r.method = 'proportional'
    JOIN line l ON l.org_id = r.org_id
               AND (l.account_id = t.target_account_id
                    OR l.account_id IN (SELECT m.account_id FROM tco.member m
                                    WHERE m.unit_id IN (SELECT tco.unit_subtree(t.target_unit_id))))
    GROUP BY t.target_id, l.cycle
), weighted AS (
    SELECT s.cycle, s.rule_id, s.line_id, s.account_id AS source_account_id, s.amount,
           t.target_id, t.target_account_id, t.target_unit_id,
           CASE s.method WHEN 'fixed' THEN t.percent
                         WHEN 'proportional' THEN coalesce(o.cost, 0)
                         ELSE 1 END AS w
    FROM source s
    JOIN tco.allocation_target t ON t.rule_id = s.rule_id
    LEFT JOIN own o ON o.target_id = t.target_id AND o.cycle = s.cycle
), normalized AS (
    -- proportional targets without any cost: equal parts
    SELECT w.*, CASE WHEN sum(w.w) OVER (PARTITION BY w.line_id) = 0 THEN 1 ELSE w.w END AS weight
    FROM weighted w
), parts AS (
    SELECT n.*, (n.amount * 1000000)::bigint AS micro,
           sum(n.weight) OVER (PARTITION BY n.line_id) AS total_weight
    FROM normalized n
), floored AS (
    SELECT p.*, pg_catalog.floor(p.micro * p.weight / p.total_weight)::bigint AS base,
           p.micro * p.weight / p.total_weight - pg_catalog.floor(p.micro * p.weight / p.total_weight) AS frac
    FROM parts p
), ranked AS (
    SELECT f.*, f.micro - sum(f.base) OVER (PARTITION BY f.line_id) AS left_over,
           row_number() OVER (PARTITION BY f.line_id ORDER BY f.frac DESC, f.target_id) AS rank
    FROM floored f
)
SELECT r.cycle, r.rule_id, r.line_id, r.source_account_id, r.target_id, r.target_account_id, r.target_unit_id,
       ((r.base + CASE WHEN r.rank <= r.left_over THEN 1 ELSE 0 END) * 0.000001)::numeric(20,6) AS amount
FROM ranked r;
COMMENT ON VIEW tco.allocated_cost IS 'Split charges (reporting only): per settled line of an allocation rule''s source and per target, the part of the line''s BilledCost allocated to the target; the parts of a line sum exactly to it. Runs with the caller''s rights.';
COMMENT ON COLUMN tco.allocated_cost.amount IS 'The target''s part (exact, 6 decimals).';

SELECT tco.enable_reader_rls(tab, reader_qual) FROM (VALUES
    ('allocation_rule',   'org_id IN (SELECT tco.visible_organizations())'),
    ('allocation_target', 'rule_id IN (SELECT r.rule_id FROM tco.allocation_rule r)')) AS v(tab, reader_qual);
DO $alloc$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['allocation_rule', 'allocation_target'] LOOP
        -- as 98_dump.sql and 99_grants.sql do for every table
        PERFORM pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('tco.' || t, split_part(t, '_', 2) || '_id')::regclass, '');
        EXECUTE pg_catalog.format('CREATE TRIGGER %I AFTER INSERT ON tco.%I FOR EACH STATEMENT EXECUTE FUNCTION tco.sync_identity(%L)',
                                  t || '_sync_identity', t, split_part(t, '_', 2) || '_id');
        EXECUTE pg_catalog.format('CREATE TRIGGER tco_writer_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.%I '
                                  'FOR EACH STATEMENT EXECUTE FUNCTION tco.writer_guard()', t);
    END LOOP;
END
$alloc$;
REVOKE ALL ON tco.allocation_rule, tco.allocation_target, tco.allocated_cost FROM PUBLIC;
REVOKE ALL ON SEQUENCE tco.allocation_rule_rule_id_seq, tco.allocation_target_target_id_seq FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON tco.allocation_rule, tco.allocation_target, tco.allocated_cost TO tco_admin;
GRANT ALL ON SEQUENCE tco.allocation_rule_rule_id_seq, tco.allocation_target_target_id_seq TO tco_admin;
GRANT SELECT ON tco.allocation_rule, tco.allocation_target, tco.allocated_cost TO tco_reader;
REVOKE EXECUTE ON FUNCTION tco.allocation_check() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.allocation_check() TO tco_admin;
GRANT EXECUTE ON FUNCTION tco.unit_subtree(bigint) TO tco_reader;

-- ==== plain pg_dump / pg_restore (README "Backup and restore"): with
-- row_security off and a role that bypasses RLS, tco's triggers take rows as
-- stored history (tco.restoring(), src/guard.c).
-- Whether this statement restores stored data (src/guard.c, README "Backup
-- and restore"): row_security is off, as pg_dump and pg_restore set it, and
-- the session's role is a superuser or has BYPASSRLS.  tco's triggers then
-- take rows as stored history.
CREATE FUNCTION tco.restoring() RETURNS boolean
    AS 'MODULE_PATHNAME', 'tco_restoring' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION tco.restoring() IS 'True while stored data is being restored: row_security = off (as pg_dump and pg_restore set it) and the session''s role is a superuser or has BYPASSRLS. tco''s triggers then neither derive rows nor re-judge past actions.';
REVOKE EXECUTE ON FUNCTION tco.restoring() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.restoring() TO tco_admin;
CREATE OR REPLACE FUNCTION tco.organization_created() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    root_id bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    INSERT INTO tco.org_unit (org_id, parent_unit_id, name)
        VALUES (NEW.org_id, NULL, NEW.name) RETURNING unit_id INTO root_id;
    INSERT INTO tco.member (account_id, org_id, unit_id, policy)
        VALUES (NEW.admin_account_id, NEW.org_id, root_id, 'self_pay');
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.organization_admin_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.admin_account_id IS DISTINCT FROM OLD.admin_account_id
       AND NOT EXISTS (SELECT 1 FROM tco.member
                       WHERE account_id = NEW.admin_account_id AND org_id = NEW.org_id) THEN
        RAISE EXCEPTION 'account % cannot become admin of organization %: it is not a member of it',
                NEW.admin_account_id, NEW.org_id
            USING ERRCODE = 'TC014', HINT = 'Add the account to the organization first with tco.add_member().';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.organization_delete_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    SELECT count(*) INTO n FROM tco.member
        WHERE org_id = OLD.org_id AND account_id <> OLD.admin_account_id;
    IF n > 0 THEN
        RAISE EXCEPTION 'organization % still has % member(s) besides its admin', OLD.org_id, n
            USING ERRCODE = '2BP01', HINT = 'Remove the members with tco.remove_member() first.';
    END IF;
    RETURN OLD;
END $$;

CREATE OR REPLACE FUNCTION tco.org_unit_tree_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parent_org bigint;
    cursor_id  bigint;
    depth      int := 0;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.org_id <> OLD.org_id THEN
        RAISE EXCEPTION 'unit % cannot move from organization % to organization %', OLD.unit_id, OLD.org_id, NEW.org_id
            USING ERRCODE = 'TC011', HINT = 'Create a unit in the other organization instead.';
    END IF;
    PERFORM tco.lock_organization(NEW.org_id);
    IF NEW.parent_unit_id IS NULL THEN
        IF TG_OP = 'UPDATE' AND OLD.parent_unit_id IS NULL THEN
            RETURN NEW;
        END IF;
        IF EXISTS (SELECT 1 FROM tco.org_unit WHERE org_id = NEW.org_id AND parent_unit_id IS NULL
                   AND unit_id <> NEW.unit_id) THEN
            RAISE EXCEPTION 'organization % already has a root unit; unit % needs a parent', NEW.org_id, NEW.unit_id
                USING ERRCODE = 'TC013', HINT = 'Give the unit a parent_unit_id in the same organization.';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.parent_unit_id IS NULL THEN
        RAISE EXCEPTION 'root unit % of organization % cannot be moved under unit %', NEW.unit_id, NEW.org_id, NEW.parent_unit_id
            USING ERRCODE = 'TC013', HINT = 'The root unit stays the root; move its children instead.';
    END IF;
    SELECT org_id INTO parent_org FROM tco.org_unit WHERE unit_id = NEW.parent_unit_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'parent unit % of unit % does not exist', NEW.parent_unit_id, NEW.unit_id
            USING ERRCODE = '23503', HINT = 'Check the parent unit id.';
    ELSIF parent_org <> NEW.org_id THEN
        RAISE EXCEPTION 'parent unit % belongs to organization %, not to organization % of unit %',
                NEW.parent_unit_id, parent_org, NEW.org_id, NEW.unit_id
            USING ERRCODE = 'TC011', HINT = 'Choose a parent unit in the same organization.';
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.parent_unit_id IS DISTINCT FROM OLD.parent_unit_id THEN
        cursor_id := NEW.parent_unit_id;
        WHILE cursor_id IS NOT NULL LOOP
            IF cursor_id = NEW.unit_id THEN
                RAISE EXCEPTION 'moving unit % under unit % would make a cycle in the unit tree', NEW.unit_id, NEW.parent_unit_id
                    USING ERRCODE = 'TC012', HINT = 'A unit cannot be moved below itself or one of its descendants.';
            END IF;
            SELECT parent_unit_id INTO cursor_id FROM tco.org_unit WHERE unit_id = cursor_id;
            depth := depth + 1;
            IF depth > 10000 THEN
                RAISE EXCEPTION 'unit tree of organization % is too deep', NEW.org_id USING ERRCODE = 'TC012';
            END IF;
        END LOOP;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.org_unit_delete_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco.organization WHERE org_id = OLD.org_id) THEN
        RETURN OLD;
    END IF;
    IF OLD.parent_unit_id IS NULL THEN
        RAISE EXCEPTION 'root unit % of organization % cannot be deleted', OLD.unit_id, OLD.org_id
            USING ERRCODE = 'TC013', HINT = 'Delete the organization instead.';
    END IF;
    SELECT count(*) INTO n FROM tco.org_unit WHERE parent_unit_id = OLD.unit_id;
    IF n > 0 THEN
        RAISE EXCEPTION 'unit % still has % child unit(s)', OLD.unit_id, n
            USING ERRCODE = '2BP01', HINT = 'Move or delete the child units first.';
    END IF;
    SELECT count(*) INTO n FROM tco.member WHERE unit_id = OLD.unit_id;
    IF n > 0 THEN
        RAISE EXCEPTION 'unit % still has % member(s)', OLD.unit_id, n
            USING ERRCODE = '2BP01', HINT = 'Move the members to another unit with tco.move_member() first.';
    END IF;
    RETURN OLD;
END $$;

CREATE OR REPLACE FUNCTION tco.member_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    other_org bigint;
    unit_org  bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT org_id INTO other_org FROM tco.member WHERE account_id = NEW.account_id;
        IF FOUND THEN
            RAISE EXCEPTION 'account % is already a member of organization %', NEW.account_id, other_org
                USING ERRCODE = '23505', HINT = 'An account belongs to at most one organization: remove it from the other one first.';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM tco.account WHERE account_id = NEW.account_id) THEN
            PERFORM tco.require_exists(false, 'account', NEW.account_id);
        END IF;
    ELSIF NEW.org_id <> OLD.org_id OR NEW.account_id <> OLD.account_id THEN
        RAISE EXCEPTION 'membership of account % cannot be moved to another organization or account by UPDATE', OLD.account_id
            USING ERRCODE = '55000', HINT = 'Remove the member and add it to the other organization.';
    END IF;
    IF NEW.unit_id IS NULL THEN
        SELECT unit_id INTO NEW.unit_id FROM tco.org_unit WHERE org_id = NEW.org_id AND parent_unit_id IS NULL;
        PERFORM tco.require_exists(FOUND, 'organization', NEW.org_id);
    ELSE
        SELECT org_id INTO unit_org FROM tco.org_unit WHERE unit_id = NEW.unit_id;
        PERFORM tco.require_exists(FOUND, 'unit', NEW.unit_id);
        IF unit_org <> NEW.org_id THEN
            RAISE EXCEPTION 'unit % belongs to organization %, not to organization % of account %',
                    NEW.unit_id, unit_org, NEW.org_id, NEW.account_id
                USING ERRCODE = 'TC011', HINT = 'Place the member in a unit of its own organization.';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.member_delete_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF EXISTS (SELECT 1 FROM tco.organization WHERE org_id = OLD.org_id AND admin_account_id = OLD.account_id) THEN
        RAISE EXCEPTION 'account % is the admin of organization % and cannot leave it', OLD.account_id, OLD.org_id
            USING ERRCODE = 'TC014', HINT = 'Make another member the admin first, or delete the organization.';
    END IF;
    RETURN OLD;
END $$;

CREATE OR REPLACE FUNCTION tco.member_record_history() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO tco.member_history (account_id, org_id, unit_id, policy, event)
            VALUES (NEW.account_id, NEW.org_id, NEW.unit_id, NEW.policy, 'joined');
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO tco.member_history (account_id, org_id, unit_id, policy, event)
            VALUES (OLD.account_id, OLD.org_id, OLD.unit_id, OLD.policy, 'left');
    ELSE
        IF NEW.unit_id <> OLD.unit_id THEN
            INSERT INTO tco.member_history (account_id, org_id, unit_id, policy, event)
                VALUES (NEW.account_id, NEW.org_id, NEW.unit_id, NEW.policy, 'moved');
        END IF;
        IF NEW.policy <> OLD.policy THEN
            INSERT INTO tco.member_history (account_id, org_id, unit_id, policy, event)
                VALUES (NEW.account_id, NEW.org_id, NEW.unit_id, NEW.policy, 'policy_changed');
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.trusteeship_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    latest  timestamptz;
    existing tco.trusteeship;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- R14: only ending an active trusteeship is a change; history is never rewritten.
        IF NEW.trusteeship_id IS DISTINCT FROM OLD.trusteeship_id
           OR NEW.member_account_id IS DISTINCT FROM OLD.member_account_id
           OR NEW.management_account_id IS DISTINCT FROM OLD.management_account_id
           OR NEW.established_at IS DISTINCT FROM OLD.established_at
           OR (OLD.ended_at IS NOT NULL AND NEW.ended_at IS DISTINCT FROM OLD.ended_at) THEN
            RAISE EXCEPTION 'trusteeship % is history: only ended_at of an active trusteeship may be set', OLD.trusteeship_id
                USING ERRCODE = 'TC008',
                      HINT = 'History is never rewritten (R14): end the trusteeship with tco.end_trusteeship() and establish a new one.';
        END IF;
        IF NEW.ended_at IS NULL THEN
            RETURN NEW;
        END IF;
        PERFORM tco.lock_accounts(ARRAY[NEW.member_account_id]);
        latest := tco.latest_trusteeship_change(NEW.member_account_id);
        IF NEW.ended_at < latest THEN
            -- TC006: change dated before the member's latest change
            RAISE EXCEPTION 'trusteeship of account % cannot end at %: its latest trusteeship change was at %',
                    NEW.member_account_id, NEW.ended_at, latest
                USING ERRCODE = 'TC006', HINT = 'Trusteeship changes are recorded in time order: use an instant at or after the latest change.';
        END IF;
        RETURN NEW;
    END IF;

    -- INSERT.  Missing values are left to the NOT NULL constraints.
    IF NEW.member_account_id IS NULL OR NEW.management_account_id IS NULL OR NEW.established_at IS NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.member_account_id = NEW.management_account_id THEN
        PERFORM tco.r4_no_chain_check(NEW.member_account_id, NEW.management_account_id, NEW.established_at, NEW.ended_at);
    END IF;
    PERFORM tco.lock_accounts(ARRAY[NEW.member_account_id, NEW.management_account_id]);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account WHERE account_id = NEW.member_account_id),
                               'account', NEW.member_account_id);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account WHERE account_id = NEW.management_account_id),
                               'account', NEW.management_account_id);

    latest := tco.latest_trusteeship_change(NEW.member_account_id);
    IF NEW.established_at < latest THEN
        RAISE EXCEPTION 'trusteeship of account % cannot start at %: its latest trusteeship change was at %',
                NEW.member_account_id, NEW.established_at, latest
            USING ERRCODE = 'TC006', HINT = 'Trusteeship changes are recorded in time order: use an instant at or after the latest change.';
    END IF;
    SELECT * INTO existing FROM tco.trusteeship
    WHERE member_account_id = NEW.member_account_id
      AND tstzrange(established_at, ended_at) && tstzrange(NEW.established_at, NEW.ended_at)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account % is already in trusteeship to account % (trusteeship %)',
                NEW.member_account_id, existing.management_account_id, existing.trusteeship_id
            USING ERRCODE = '55000',
                  HINT = 'End it first, or move the member with tco.move_trusteeship().';
    END IF;

    PERFORM tco.r4_no_chain_check(NEW.member_account_id, NEW.management_account_id, NEW.established_at, NEW.ended_at);
    PERFORM tco.r2_same_entity_check(NEW.member_account_id, NEW.management_account_id);
    -- R5 applies to an association; a move (the previous trusteeship ends at
    -- this very instant) keeps the member in trusteeship throughout.
    IF NOT EXISTS (SELECT 1 FROM tco.trusteeship
                   WHERE member_account_id = NEW.member_account_id AND ended_at = NEW.established_at) THEN
        PERFORM tco.r5_balance_check(NEW.member_account_id);
    END IF;
    PERFORM tco.r1_cap_check(NEW.management_account_id, NEW.member_account_id, NEW.established_at, NEW.ended_at);
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.trusteeship_sync_policy() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.ended_at IS NULL THEN
        UPDATE tco.member SET policy = 'trusteeship'
        WHERE account_id = NEW.member_account_id AND policy <> 'trusteeship';
    ELSIF TG_OP = 'UPDATE' AND OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
          AND NOT tco.trusteeship_move_in_progress()
          AND NOT EXISTS (SELECT 1 FROM tco.trusteeship
                          WHERE member_account_id = NEW.member_account_id AND ended_at IS NULL) THEN
        UPDATE tco.member SET policy = 'self_pay'
        WHERE account_id = NEW.member_account_id AND policy <> 'self_pay';
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.member_sync_trusteeship() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    active boolean;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.policy = OLD.policy THEN
        RETURN NULL;
    END IF;
    active := EXISTS (SELECT 1 FROM tco.trusteeship
                      WHERE member_account_id = NEW.account_id AND ended_at IS NULL);
    IF NEW.policy = 'trusteeship' AND NOT active THEN
        PERFORM tco.add_member_trusteeship(NEW.org_id, NEW.account_id);
    ELSIF NEW.policy = 'self_pay' AND active THEN
        PERFORM tco.end_trusteeship(NEW.account_id, now());
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.member_leave_trusteeship_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF tco.in_trusteeship(OLD.account_id) THEN
        RAISE EXCEPTION 'account % is in a trusteeship and cannot leave organization %', OLD.account_id, OLD.org_id
            USING ERRCODE = '55000',
                  HINT = 'End the trusteeship first (tco.end_trusteeship), for the account and for any member it manages.';
    END IF;
    RETURN OLD;
END $$;

CREATE OR REPLACE FUNCTION tco.r3_realname_lock_account() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.entity_id IS DISTINCT FROM OLD.entity_id AND tco.in_trusteeship(OLD.account_id) THEN
        -- TC003: R3 real-name lock
        RAISE EXCEPTION 'R3: account % is in a trusteeship: its entity cannot change from % to %',
                OLD.account_id, coalesce(OLD.entity_id::text, 'none'), coalesce(NEW.entity_id::text, 'none')
            USING ERRCODE = 'TC003', HINT = 'End the trusteeship first, then change the real-name verification.';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.r3_realname_lock_entity() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    locked_account bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF OLD.verified AND NOT NEW.verified THEN
        SELECT a.account_id INTO locked_account FROM tco.account a
        WHERE a.entity_id = OLD.entity_id AND tco.in_trusteeship(a.account_id)
        ORDER BY a.account_id LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'R3: entity % cannot lose its verification: its account % is in a trusteeship',
                    OLD.entity_id, locked_account
                USING ERRCODE = 'TC003', HINT = 'End the trusteeship first, then change the real-name verification.';
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.ledger_apply() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acct  tco.account;
    new_balance numeric;
    lowest numeric;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.account_id IS NULL OR NEW.amount IS NULL THEN
        RETURN NEW;   -- the NOT NULL constraints report it
    END IF;
    SELECT * INTO acct FROM tco.account WHERE account_id = NEW.account_id FOR NO KEY UPDATE;
    PERFORM tco.require_exists(FOUND, 'account', NEW.account_id);
    new_balance := acct.balance + NEW.amount;
    -- Cash out (withdraw, transfer to another account) needs cash; other
    -- debits may use the credit line.
    lowest := CASE WHEN NEW.kind IN ('withdraw', 'top_up_out') THEN 0 ELSE -acct.credit_limit END;
    IF NEW.amount < 0 AND new_balance < lowest THEN
        -- TC009: insufficient funds
        RAISE EXCEPTION 'insufficient funds: % of % from account % would leave balance % below %',
                NEW.kind, -NEW.amount, NEW.account_id, new_balance, lowest
            USING ERRCODE = 'TC009',
                  HINT = CASE WHEN lowest = 0 THEN 'Only the cash balance can be withdrawn or transferred; lower the amount.'
                              ELSE 'Top up the account or raise its credit limit.' END;
    END IF;
    UPDATE tco.account SET balance = new_balance WHERE account_id = NEW.account_id;
    NEW.balance_after := new_balance;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.prepaid_resource_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    active tco.trusteeship;
    derived_holder bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.owner_account_id IS NULL OR NEW.term_end IS NULL THEN
            RETURN NEW;
        END IF;
        SELECT * INTO active FROM tco.trusteeship
        WHERE member_account_id = NEW.owner_account_id AND ended_at IS NULL;
        derived_holder := CASE WHEN FOUND AND NEW.term_end > active.established_at
                               THEN active.management_account_id ELSE NEW.owner_account_id END;
        IF NEW.holder_account_id IS NOT NULL AND NEW.holder_account_id <> derived_holder THEN
            RAISE EXCEPTION 'R12: prepaid resource of account % must be held by account %, not %',
                    NEW.owner_account_id, derived_holder, NEW.holder_account_id
                USING ERRCODE = '55000', HINT = 'Leave holder_account_id out: it follows the owner''s trusteeship.';
        END IF;
        NEW.holder_account_id := derived_holder;
        RETURN NEW;
    END IF;

    IF NEW.resource_id <> OLD.resource_id OR NEW.owner_account_id <> OLD.owner_account_id
       OR NEW.product_code <> OLD.product_code OR NEW.term_start <> OLD.term_start
       OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'prepaid resource %: owner, product and term start cannot change', OLD.resource_id
            USING ERRCODE = '55000', HINT = 'Record a new prepaid resource instead.';
    END IF;
    -- Nested trigger calls (depth > 1) are the trusteeship triggers of this file.
    IF NEW.holder_account_id <> OLD.holder_account_id AND pg_catalog.pg_trigger_depth() <= 1 THEN
        RAISE EXCEPTION 'prepaid resource %: the holder cannot be set directly', OLD.resource_id
            USING ERRCODE = '55000', HINT = 'The holder follows the owner''s trusteeship (R12): establish or end the trusteeship instead.';
    END IF;
    IF NEW.status <> OLD.status OR NEW.price <> OLD.price OR NEW.term_end <> OLD.term_end THEN
        IF OLD.status <> 'active' THEN
            RAISE EXCEPTION 'prepaid resource % is already %', OLD.resource_id, OLD.status
                USING ERRCODE = '55000', HINT = 'Refunded and terminated resources are final.';
        END IF;
        PERFORM tco.r12_prepaid_check(OLD,
            CASE WHEN NEW.status = 'refunded' THEN 'refund'
                 WHEN NEW.status = 'terminated' THEN 'termination'
                 WHEN NEW.price < OLD.price THEN 'downgrade'
                 ELSE 'change' END,
            NEW.price <> OLD.price);
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.prepaid_resource_record_purchase() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.holder_account_id <> NEW.owner_account_id THEN
        INSERT INTO tco.prepaid_transfer (resource_id, from_account_id, to_account_id, trusteeship_id, reason, at)
        SELECT NEW.resource_id, NEW.owner_account_id, NEW.holder_account_id, t.trusteeship_id, 'purchase', NEW.created_at
        FROM tco.trusteeship t
        WHERE t.member_account_id = NEW.owner_account_id AND t.ended_at IS NULL;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.trusteeship_pass_prepaid() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.ended_at IS NULL THEN
        -- Association: every active resource with term left at the instant
        -- passes to the manager; a move also takes over whatever the
        -- previous manager still holds.
        WITH passing AS (
            SELECT r.resource_id, r.holder_account_id AS old_holder, r.owner_account_id
            FROM tco.prepaid_resource r
            WHERE r.owner_account_id = NEW.member_account_id AND r.status = 'active'
              AND r.holder_account_id <> NEW.management_account_id
              AND (r.term_end > NEW.established_at OR r.holder_account_id <> r.owner_account_id)
            FOR UPDATE
        ), passed AS (
            UPDATE tco.prepaid_resource r SET holder_account_id = NEW.management_account_id
            FROM passing p WHERE r.resource_id = p.resource_id
            RETURNING p.resource_id, p.old_holder, p.owner_account_id
        )
        INSERT INTO tco.prepaid_transfer (resource_id, from_account_id, to_account_id, trusteeship_id, reason, at)
        SELECT resource_id, old_holder, NEW.management_account_id, NEW.trusteeship_id,
               CASE WHEN old_holder = owner_account_id THEN 'association' ELSE 'move' END,
               NEW.established_at
        FROM passed ORDER BY resource_id;
    ELSIF TG_OP = 'UPDATE' AND OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
          AND NOT tco.trusteeship_move_in_progress() THEN
        -- Disassociation: everything the manager holds goes back to the owner.
        WITH passed AS (
            UPDATE tco.prepaid_resource r SET holder_account_id = r.owner_account_id
            WHERE r.owner_account_id = NEW.member_account_id AND r.status = 'active'
              AND r.holder_account_id = NEW.management_account_id
            RETURNING r.resource_id
        )
        INSERT INTO tco.prepaid_transfer (resource_id, from_account_id, to_account_id, trusteeship_id, reason, at)
        SELECT resource_id, NEW.management_account_id, NEW.member_account_id, NEW.trusteeship_id,
               'disassociation', NEW.ended_at
        FROM passed ORDER BY resource_id;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.r14_bill_line_insert_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad record;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM tco.settlement_lock_shared(c)
        FROM (SELECT DISTINCT tco.cycle_of(period_start) AS c FROM new_lines) x ORDER BY c;
    SELECT n.line_id, s.cycle INTO bad
    FROM new_lines n
    LEFT JOIN tco.member m ON m.account_id = n.account_id
    JOIN tco.settled_cycle s ON s.cycle OPERATOR(tco.=) tco.cycle_of(n.period_start)
                            AND (s.org_id IS NULL OR s.org_id = m.org_id)
    ORDER BY n.line_id LIMIT 1;
    IF FOUND THEN
        PERFORM tco.r14_settled_error(bad.cycle, format('bill line %s cannot be added to it', bad.line_id));
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.r14_bill_line_update_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad record;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    -- Lines already on a statement: only paid_at may change.
    SELECT o.line_id, tco.cycle_of(o.period_start) AS cycle INTO bad
    FROM old_lines o JOIN new_lines n USING (line_id)
    JOIN tco.settled_pack sp ON sp.account_id = o.account_id AND sp.product_code = o.product_code
                            AND sp.cycle OPERATOR(tco.=) tco.cycle_of(o.period_start)
                            AND o.line_id = ANY (sp.line_ids)
    WHERE (o.account_id, o.product_code, o.charge_type, o.period_start, o.period_end, o.list_amount, o.issued_at)
          IS DISTINCT FROM
          (n.account_id, n.product_code, n.charge_type, n.period_start, n.period_end, n.list_amount, n.issued_at)
    ORDER BY o.line_id LIMIT 1;
    IF FOUND THEN
        PERFORM tco.r14_settled_error(bad.cycle, format('bill line %s is settled and only its paid_at can be set', bad.line_id));
    END IF;
    -- A line may not move into a settled cycle either.
    PERFORM tco.settlement_lock_shared(c)
        FROM (SELECT DISTINCT tco.cycle_of(period_start) AS c FROM new_lines) x ORDER BY c;
    SELECT n.line_id, s.cycle INTO bad
    FROM new_lines n JOIN old_lines o USING (line_id)
    LEFT JOIN tco.member m ON m.account_id = n.account_id
    JOIN tco.settled_cycle s ON s.cycle OPERATOR(tco.=) tco.cycle_of(n.period_start)
                            AND (s.org_id IS NULL OR s.org_id = m.org_id)
    WHERE (o.account_id, o.product_code, o.period_start, o.list_amount)
          IS DISTINCT FROM (n.account_id, n.product_code, n.period_start, n.list_amount)
    ORDER BY n.line_id LIMIT 1;
    IF FOUND THEN
        PERFORM tco.r14_settled_error(bad.cycle, format('bill line %s cannot be moved into it', bad.line_id));
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.r14_bill_line_delete_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad record;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM tco.settlement_lock_shared(c)
        FROM (SELECT DISTINCT tco.cycle_of(period_start) AS c FROM old_lines) x ORDER BY c;
    SELECT o.line_id, tco.cycle_of(o.period_start) AS cycle INTO bad
    FROM old_lines o
    LEFT JOIN tco.member m ON m.account_id = o.account_id
    WHERE EXISTS (SELECT 1 FROM tco.settled_pack sp
                  WHERE sp.account_id = o.account_id AND sp.product_code = o.product_code
                    AND sp.cycle OPERATOR(tco.=) tco.cycle_of(o.period_start) AND o.line_id = ANY (sp.line_ids))
       OR EXISTS (SELECT 1 FROM tco.settled_cycle s WHERE s.cycle OPERATOR(tco.=) tco.cycle_of(o.period_start)
                  AND (s.org_id IS NULL OR s.org_id = m.org_id))
    ORDER BY o.line_id LIMIT 1;
    IF FOUND THEN
        PERFORM tco.r14_settled_error(bad.cycle, format('bill line %s cannot be deleted', bad.line_id));
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.r14_trusteeship_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acct   bigint;
    until  timestamptz;
    moment timestamptz;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    acct := CASE WHEN TG_OP = 'DELETE' THEN OLD.member_account_id ELSE NEW.member_account_id END;
    IF TG_OP = 'INSERT' THEN
        moment := least(NEW.established_at, NEW.ended_at);
    ELSIF TG_OP = 'DELETE' THEN
        moment := least(OLD.established_at, OLD.ended_at);
    ELSE
        IF NEW.established_at IS DISTINCT FROM OLD.established_at
           OR NEW.member_account_id <> OLD.member_account_id
           OR NEW.management_account_id <> OLD.management_account_id THEN
            moment := least(NEW.established_at, OLD.established_at);
        END IF;
        IF NEW.ended_at IS DISTINCT FROM OLD.ended_at THEN
            moment := least(moment, NEW.ended_at, OLD.ended_at);
        END IF;
    END IF;
    IF moment IS NULL OR NOT isfinite(moment) THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    -- (at most the last 120 cycles: older changes are refused by R14 or
    -- belong to cycles nobody is settling.)
    PERFORM tco.settlement_lock_shared(tco.cycle_of(pg_catalog.clock_timestamp()) OPERATOR(tco.-) g)
    FROM generate_series(least(119, tco.cycle_of(pg_catalog.clock_timestamp()) OPERATOR(tco.-)
                                    tco.cycle_of(greatest(moment, pg_catalog.clock_timestamp() - interval '11 years'))),
                         0, -1) g
    ORDER BY g DESC;
    until := tco.settled_until((SELECT m.org_id FROM tco.member m WHERE m.account_id = acct));
    IF until IS NULL THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF moment < until THEN
        RAISE EXCEPTION 'R14: trusteeship % of account % changes at %, before the end of settled billing cycle %',
                coalesce(NEW.trusteeship_id, OLD.trusteeship_id), acct, moment, tco.cycle_of(until - interval '1 microsecond')
            USING ERRCODE = 'TC008',
                  HINT = format('Cycles up to %s are settled: make the change at or after %s, and book any correction as an adjustment in the next open cycle.', tco.cycle_of(until - interval '1 microsecond'), until);
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE OR REPLACE FUNCTION tco.r14_contract_discount_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    until timestamptz := (SELECT pg_catalog.upper(tco.cycle_range(cycle)) FROM tco.settled_cycle
                          ORDER BY cycle DESC LIMIT 1);
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF until IS NOT NULL AND (
         (TG_OP IN ('INSERT', 'UPDATE') AND NEW.valid_from < until)
      OR (TG_OP IN ('UPDATE', 'DELETE') AND OLD.valid_from < until
          AND (TG_OP = 'DELETE' OR (NEW.*) IS DISTINCT FROM (OLD.*)))) THEN
        RAISE EXCEPTION 'R14: contract discount % reaches into settled billing cycles (settled until %)',
                coalesce(NEW.discount_id, OLD.discount_id), until
            USING ERRCODE = 'TC008',
                  HINT = format('Start new rates at or after %s (end an old rate by adding one that starts later).', until);
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE OR REPLACE FUNCTION tco.r14_config_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_zone    text := 'UTC';
    old_cutover timestamptz := '2022-08-01 12:00:00+08';
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        old_zone := OLD.billing_timezone;
        old_cutover := OLD.legacy_cutover;
    END IF;
    IF (NEW.billing_timezone IS DISTINCT FROM old_zone OR NEW.legacy_cutover IS DISTINCT FROM old_cutover)
       AND EXISTS (SELECT 1 FROM tco.settled_cycle) THEN
        RAISE EXCEPTION 'R14: the billing time zone and legacy cut-over cannot change once a cycle is settled'
            USING ERRCODE = 'TC008',
                  HINT = 'Settled cycles were cut in the current zone; keep it.';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.invoice_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st tco.statement;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.statement_id IS NULL OR NEW.issuer_account_id IS NULL THEN
        RETURN NEW;   -- the NOT NULL constraints report it
    END IF;
    -- KEY SHARE would let pay_statement run; FOR SHARE waits for it and keeps
    -- paid_at stable until this transaction ends.
    SELECT * INTO st FROM tco.statement s WHERE s.statement_id = NEW.statement_id FOR SHARE;
    PERFORM tco.require_exists(FOUND, 'statement', NEW.statement_id);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = NEW.issuer_account_id),
                               'account', NEW.issuer_account_id);
    IF NOT tco.may_issue_invoice(st, NEW.issuer_account_id) THEN
        RAISE EXCEPTION 'account % may not issue the invoice of statement % (payer %, organization %)',
                NEW.issuer_account_id, st.statement_id, st.payer_account_id, coalesce(st.org_id::text, 'none')
            USING ERRCODE = 'TC023',
                  HINT = CASE WHEN EXISTS (SELECT 1 FROM tco.trusteeship t
                                            WHERE t.member_account_id = NEW.issuer_account_id
                                              AND t.management_account_id = st.payer_account_id)
                              THEN format('R7: account %s is in trusteeship: its invoices are issued by its management account %s.',
                                          NEW.issuer_account_id, st.payer_account_id)
                              ELSE 'Only the statement''s payer or the admin of its organization issues its invoice.' END;
    END IF;
    IF NEW.recipient_account_id IS NOT NULL AND NEW.recipient_account_id <> st.payer_account_id THEN
        RAISE EXCEPTION 'invoice recipient % is not the payer % of statement %',
                NEW.recipient_account_id, st.payer_account_id, st.statement_id
            USING ERRCODE = '23514', HINT = 'Leave recipient_account_id NULL: it is the statement''s payer.';
    END IF;
    IF st.paid_at IS NULL THEN
        RAISE EXCEPTION 'statement % (payer %, cycle %) is not paid yet', st.statement_id, st.payer_account_id, st.cycle
            USING ERRCODE = '55000', HINT = format('Pay it first with tco.pay_statement(%s); invoices are issued for paid amounts.', st.statement_id);
    END IF;
    IF st.due_total = 0 THEN
        RAISE EXCEPTION 'statement % (payer %, cycle %) has nothing due: no invoice', st.statement_id, st.payer_account_id, st.cycle
            USING ERRCODE = '55000', HINT = 'Discounts and benefits paid the whole statement; there is no amount to invoice.';
    END IF;
    IF NEW.cycle IS NOT NULL AND NEW.cycle OPERATOR(tco.<>) st.cycle
       OR NEW.amount IS NOT NULL AND NEW.amount <> st.due_total THEN
        RAISE EXCEPTION 'invoice of statement % must have cycle % and amount %', st.statement_id, st.cycle, st.due_total
            USING ERRCODE = '23514', HINT = 'Leave cycle and amount NULL: they are taken from the statement.';
    END IF;
    NEW.recipient_account_id := st.payer_account_id;
    NEW.cycle := st.cycle;
    NEW.amount := st.due_total;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.alert_threshold_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mgr bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.kind IS NOT NULL AND NEW.kind NOT IN ('available_credit', 'cycle_spending') THEN
        RAISE EXCEPTION 'unknown alert kind "%"', NEW.kind
            USING ERRCODE = '22023', HINT = 'Use available_credit or cycle_spending.';
    END IF;
    IF NEW.threshold IS NOT NULL AND (NEW.threshold = 'NaN'::numeric OR NEW.threshold <> round(NEW.threshold, 2)
                                      OR abs(NEW.threshold) >= 1e18
                                      OR (NEW.kind = 'cycle_spending' AND NEW.threshold <= 0)) THEN
        RAISE EXCEPTION 'alert threshold % is not valid for kind %', NEW.threshold, NEW.kind
            USING ERRCODE = '22023', HINT = 'Use an amount with at most 2 decimals; a cycle_spending threshold must be positive.';
    END IF;
    IF NEW.account_id IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = NEW.account_id),
                               'account', NEW.account_id);
    mgr := tco.manager_at(NEW.account_id, now());
    IF mgr IS NOT NULL AND NEW.enabled THEN
        RAISE EXCEPTION 'R11: account % is a managed member of account %: its alerts go to its manager', NEW.account_id, mgr
            USING ERRCODE = '55000',
                  HINT = format('Set the threshold on management account %s (its spending includes its managed members).', mgr);
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.alert_threshold_evaluate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.enabled THEN
        PERFORM tco.fire_alerts(ARRAY[NEW.account_id], tco.cycle_of(now()),
                                NEW.kind = 'available_credit', NEW.kind = 'cycle_spending');
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.alert_channel_member_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.org_id = OLD.org_id THEN
        RETURN NULL;
    END IF;
    DELETE FROM tco.alert_channel c
     WHERE c.account_id = CASE TG_OP WHEN 'DELETE' THEN OLD.account_id ELSE NEW.account_id END;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.alert_notify() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM pg_catalog.pg_notify(tco.alert_channel_of(NEW.account_id), NEW.alert_id::text);
    PERFORM pg_catalog.pg_notify(tco.alert_channel_of(NULL), NEW.alert_id::text);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.alert_account_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco.alert_threshold t WHERE t.enabled AND t.kind = 'available_credit') THEN
        RETURN NULL;
    END IF;
    ids := ARRAY(SELECT n.account_id FROM new_accounts n JOIN old_accounts o USING (account_id)
                 WHERE (n.balance, n.credit_limit) IS DISTINCT FROM (o.balance, o.credit_limit)
                 ORDER BY 1);
    IF ids <> '{}' THEN
        PERFORM tco.fire_alerts(ids, tco.cycle_of(now()), true, false);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.alert_bill_line_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco.alert_threshold t WHERE t.enabled AND t.kind = 'cycle_spending') THEN
        RETURN NULL;
    END IF;
    FOR r IN
        WITH c AS (SELECT DISTINCT n.account_id, tco.cycle_of(n.period_start) AS cycle FROM new_lines n),
             p AS (SELECT c.cycle, c.account_id AS payer FROM c
                   UNION
                   SELECT c.cycle, t.management_account_id FROM c
                   JOIN tco.trusteeship t ON t.member_account_id = c.account_id
                    AND tstzrange(t.established_at, t.ended_at)
                        && tstzrange(lower(tco.cycle_range(c.cycle)) - interval '1 month', upper(tco.cycle_range(c.cycle))))
        SELECT p.cycle, array_agg(DISTINCT p.payer) AS payers
        FROM p
        WHERE EXISTS (SELECT 1 FROM tco.alert_threshold t
                      WHERE t.account_id = p.payer AND t.enabled AND t.kind = 'cycle_spending')
        GROUP BY p.cycle ORDER BY p.cycle
    LOOP
        PERFORM tco.fire_alerts(r.payers, r.cycle, false, true);
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.alert_settled_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco.alert_threshold t WHERE t.enabled) THEN
        RETURN NULL;
    END IF;
    ids := ARRAY(SELECT DISTINCT s.payer_account_id FROM tco.statement s
                 WHERE s.cycle OPERATOR(tco.=) NEW.cycle AND (NEW.org_id IS NULL OR s.org_id = NEW.org_id)
                 ORDER BY 1);
    PERFORM tco.fire_alerts(ids, NEW.cycle, true, true);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.voucher_pool_entry_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    total numeric;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM 1 FROM tco.voucher_pool p WHERE p.org_id = NEW.org_id FOR UPDATE;
    SELECT sum(e.amount) INTO total FROM tco.voucher_pool_entry e WHERE e.org_id = NEW.org_id;
    IF total < 0 THEN
        RAISE EXCEPTION 'voucher pool of organization % has not enough balance: % of % would leave %',
                NEW.org_id, NEW.event, -NEW.amount, total
            USING ERRCODE = 'TC021',
                  HINT = 'Fund the pool with tco.fund_voucher_pool() or reclaim unused vouchers with tco.reclaim_voucher().';
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.pool_voucher_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.pool_org_id IS NOT NULL THEN
            IF NOT EXISTS (SELECT 1 FROM tco.voucher_pool p WHERE p.org_id = NEW.pool_org_id) THEN
                RAISE EXCEPTION 'organization % has no voucher pool', NEW.pool_org_id
                    USING ERRCODE = '23503', HINT = 'Create and fund it with tco.fund_voucher_pool().';
            END IF;
            IF NEW.balance <> NEW.initial_amount THEN
                RAISE EXCEPTION 'pool voucher % must start with its whole amount as balance', NEW.benefit_id
                    USING ERRCODE = '22023', HINT = 'Issue pool vouchers with tco.issue_pool_voucher().';
            END IF;
            INSERT INTO tco.voucher_pool_entry (org_id, event, amount, benefit_id)
                VALUES (NEW.pool_org_id, 'issue', -NEW.initial_amount, NEW.benefit_id);
        END IF;
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        IF OLD.pool_org_id IS NOT NULL THEN
            RAISE EXCEPTION 'pool voucher % cannot be deleted', OLD.benefit_id
                USING ERRCODE = 'TC008', HINT = 'Reclaim its remaining balance with tco.reclaim_voucher() instead.';
        END IF;
        RETURN OLD;
    END IF;
    IF (OLD.pool_org_id IS NOT NULL OR NEW.pool_org_id IS NOT NULL)
       AND (NEW.pool_org_id IS DISTINCT FROM OLD.pool_org_id OR NEW.kind <> OLD.kind
            OR NEW.initial_amount <> OLD.initial_amount OR NEW.balance > OLD.balance) THEN
        RAISE EXCEPTION 'pool voucher % cannot change its pool, kind or amount, and its balance only goes down', NEW.benefit_id
            USING ERRCODE = 'TC020', HINT = 'Issue a new pool voucher with tco.issue_pool_voucher() instead.';
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.benefit_share_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b       tco.benefit;
    owner_org bigint;
    until   timestamptz;
    others  boolean;
    amount  numeric;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'share % cannot be deleted: shares are history', OLD.share_id
            USING ERRCODE = 'TC008', HINT = 'Revoke it with tco.revoke_share() instead.';
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = NEW.benefit_id;
        PERFORM tco.require_exists(FOUND, 'benefit', NEW.benefit_id);
        IF b.pool_org_id IS NOT NULL THEN
            owner_org := b.pool_org_id;
        ELSIF b.kind IN ('resource_pack', 'savings_plan') THEN
            owner_org := (SELECT m.org_id FROM tco.member m WHERE m.account_id = b.owner_account_id);
            IF owner_org IS NULL THEN
                RAISE EXCEPTION 'R9: % % of account % cannot be shared: its owner is in no organization',
                        b.kind, b.benefit_id, b.owner_account_id
                    USING ERRCODE = 'TC020', HINT = 'Resource packs and savings plans are shared inside their owner''s organization.';
            END IF;
        ELSE
            RAISE EXCEPTION 'R9: % % cannot be shared', b.kind, b.benefit_id
                USING ERRCODE = 'TC020',
                      HINT = 'Only pool vouchers, resource packs and savings plans are shared. A manager''s own vouchers and cards already pay its managed members'' lines; coupons are never shared.';
        END IF;
        IF NEW.org_id IS NULL THEN
            NEW.org_id := owner_org;
        ELSIF NEW.org_id <> owner_org THEN
            RAISE EXCEPTION 'R9: benefit % belongs to organization %, not %', b.benefit_id, owner_org, NEW.org_id
                USING ERRCODE = 'TC020', HINT = 'Share it inside its own organization (leave org_id to its default).';
        END IF;
        IF NEW.account_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM tco.member m WHERE m.account_id = NEW.account_id AND m.org_id = NEW.org_id) THEN
            RAISE EXCEPTION 'R9: benefit % cannot be shared with account %: not a member of organization %',
                    b.benefit_id, NEW.account_id, NEW.org_id
                USING ERRCODE = 'TC020', HINT = 'Share with members of the benefit''s organization, or with one of its units.';
        END IF;
        IF NEW.unit_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM tco.org_unit u WHERE u.unit_id = NEW.unit_id AND u.org_id = NEW.org_id) THEN
            RAISE EXCEPTION 'R9: benefit % cannot be shared with unit %: not a unit of organization %',
                    b.benefit_id, NEW.unit_id, NEW.org_id
                USING ERRCODE = 'TC020', HINT = 'List the organization''s units in tco.org_unit.';
        END IF;
        NEW.reclaimed_amount := NULL;
        until := tco.settled_until(NEW.org_id);
        IF until IS NOT NULL AND (NEW.shared_at < until OR NEW.revoked_at < until) THEN
            RAISE EXCEPTION 'R14: share of benefit % starts or ends at %, before the end of settled billing cycle %',
                    b.benefit_id, least(NEW.shared_at, NEW.revoked_at), tco.cycle_of(until - interval '1 microsecond')
                USING ERRCODE = 'TC008', HINT = format('Share from %s on.', until);
        END IF;
        RETURN NEW;
    END IF;

    -- UPDATE: only the revocation may be recorded, once.
    IF (NEW.share_id, NEW.benefit_id, NEW.org_id, NEW.account_id, NEW.unit_id, NEW.shared_at, NEW.shared_by)
       IS DISTINCT FROM (OLD.share_id, OLD.benefit_id, OLD.org_id, OLD.account_id, OLD.unit_id, OLD.shared_at, OLD.shared_by) THEN
        RAISE EXCEPTION 'share % cannot change: only its revocation is recorded', OLD.share_id
            USING ERRCODE = 'TC022', HINT = 'Revoke it with tco.revoke_share() and share again.';
    END IF;
    IF OLD.revoked_at IS NOT NULL THEN
        IF (NEW.revoked_at, NEW.revoked_by, NEW.reclaimed_amount) IS DISTINCT FROM (OLD.revoked_at, OLD.revoked_by, OLD.reclaimed_amount) THEN
            RAISE EXCEPTION 'share % was already revoked at %', OLD.share_id, OLD.revoked_at
                USING ERRCODE = 'TC022', HINT = 'A share is revoked once.';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.revoked_at IS NULL THEN
        IF (NEW.revoked_by, NEW.reclaimed_amount) IS DISTINCT FROM (OLD.revoked_by, OLD.reclaimed_amount) THEN
            RAISE EXCEPTION 'share % is active: nothing to record', OLD.share_id
                USING ERRCODE = 'TC022', HINT = 'Set revoked_at to revoke it.';
        END IF;
        RETURN NEW;
    END IF;
    until := tco.settled_until(OLD.org_id);
    IF until IS NOT NULL AND NEW.revoked_at < until THEN
        RAISE EXCEPTION 'R14: share % of benefit % cannot end at %, before the end of settled billing cycle %',
                OLD.share_id, OLD.benefit_id, NEW.revoked_at, tco.cycle_of(until - interval '1 microsecond')
            USING ERRCODE = 'TC008', HINT = format('Revoke at or after %s.', until);
    END IF;
    NEW.revoked_by := coalesce(NEW.revoked_by, current_user);
    NEW.reclaimed_amount := NULL;
    -- Reclaim: the benefit row is locked before looking at the other shares,
    -- so that of two concurrent revokes the later sees the earlier, and a
    -- settlement holding the row (it locks the benefits it loads) finishes
    -- first: a balance is either spent or reclaimed, never both.
    SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = OLD.benefit_id FOR UPDATE;
    IF b.pool_org_id IS NOT NULL THEN
        SELECT EXISTS (SELECT 1 FROM tco.benefit_share s
                        WHERE s.benefit_id = OLD.benefit_id AND s.share_id <> OLD.share_id AND s.revoked_at IS NULL)
          INTO others;
        IF NOT others THEN
            amount := b.balance;
            IF amount > 0 THEN
                UPDATE tco.benefit x SET balance = 0 WHERE x.benefit_id = b.benefit_id;
                INSERT INTO tco.voucher_pool_entry (org_id, event, amount, benefit_id, share_id)
                    VALUES (b.pool_org_id, 'reclaim', amount, b.benefit_id, OLD.share_id);
            END IF;
            NEW.reclaimed_amount := amount;
        END IF;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.allocation_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    FOR r IN
        SELECT a.rule_id, a.method, count(t.target_id) AS n, count(t.percent) AS with_percent, sum(t.percent) AS total
          FROM tco.allocation_rule a LEFT JOIN tco.allocation_target t ON t.rule_id = a.rule_id
         WHERE a.rule_id = CASE TG_TABLE_NAME WHEN 'allocation_rule' THEN NEW.rule_id
                                              ELSE coalesce(NEW.rule_id, OLD.rule_id) END
         GROUP BY a.rule_id, a.method
    LOOP
        IF r.method = 'fixed' AND r.n > 0 AND (r.with_percent <> r.n OR r.total <> 100) THEN
            RAISE EXCEPTION 'allocation rule %: fixed percentages sum to %, not 100', r.rule_id, coalesce(r.total, 0)
                USING ERRCODE = '23514', HINT = 'Give every target of a fixed rule a percent, summing to exactly 100.';
        ELSIF r.method <> 'fixed' AND r.with_percent > 0 THEN
            RAISE EXCEPTION 'allocation rule % is %: its targets take no percent', r.rule_id, r.method
                USING ERRCODE = '23514', HINT = 'Leave percent NULL, or make the rule fixed.';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION tco.policy_attachment_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM tco.require_exists(CASE NEW.target_type
            WHEN 'organization' THEN EXISTS (SELECT 1 FROM tco.organization WHERE org_id = NEW.target_id)
            WHEN 'unit'         THEN EXISTS (SELECT 1 FROM tco.org_unit WHERE unit_id = NEW.target_id)
            WHEN 'account'      THEN EXISTS (SELECT 1 FROM tco.account WHERE account_id = NEW.target_id)
        END, CASE NEW.target_type WHEN 'unit' THEN 'org unit' ELSE NEW.target_type END, NEW.target_id);
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION tco.policy_target_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    DELETE FROM tco.policy_attachment
     WHERE target_type = TG_ARGV[0]
       AND target_id = (pg_catalog.to_jsonb(OLD) ->> TG_ARGV[1])::bigint;
    RETURN NULL;
END $$;
-- (CREATE OR REPLACE resets what 99_grants.sql sets on these)
ALTER FUNCTION tco.r14_bill_line_insert_check() SECURITY DEFINER;
ALTER FUNCTION tco.r14_bill_line_update_check() SECURITY DEFINER;
ALTER FUNCTION tco.r14_bill_line_delete_check() SECURITY DEFINER;

-- ==== the INSERTs of DESIGN section 6 as functions (src/sql/34_ingest.sql)
CREATE FUNCTION tco.create_entity(entity_id bigint, name text, verified boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(name, 'name');
    INSERT INTO tco.entity (entity_id, name, verified)
    VALUES (coalesce(create_entity.entity_id, pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('tco.entity', 'entity_id')::regclass)),
            create_entity.name, coalesce(create_entity.verified, false))
    RETURNING tco.entity.entity_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.create_entity(bigint, text, boolean) IS 'INSERT INTO tco.entity as a function: creates an entity (entity_id NULL: the next id) and returns its id.';

CREATE FUNCTION tco.create_account(account_id bigint, name text, entity_id bigint DEFAULT NULL,
                                   balance numeric DEFAULT 0, credit_limit numeric DEFAULT 0) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO tco.account (account_id, name, entity_id, balance, credit_limit)
    VALUES (coalesce(create_account.account_id, pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('tco.account', 'account_id')::regclass)),
            coalesce(create_account.name, ''), create_account.entity_id,
            coalesce(create_account.balance, 0), coalesce(create_account.credit_limit, 0))
    RETURNING tco.account.account_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.create_account(bigint, text, bigint, numeric, numeric) IS 'INSERT INTO tco.account as a function: creates an account (account_id NULL: the next id) and returns its id.';

CREATE FUNCTION tco.create_product(product_code text, granularity tco.granularity) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(product_code, 'product_code');
    PERFORM tco.require_arg(granularity, 'granularity');
    INSERT INTO tco.product (product_code, granularity) VALUES (create_product.product_code, create_product.granularity);
    RETURN product_code;
END $$;
COMMENT ON FUNCTION tco.create_product(text, tco.granularity) IS 'INSERT INTO tco.product as a function: creates a product with its billing granularity and returns its code.';

-- Bill lines in one INSERT statement (so the statement-level rules run once
-- for the batch): the arrays are the columns, of one length; charge_type,
-- issued_at and paid_at may be NULL as a whole or per element (postpaid,
-- now(), unpaid).  Returns the number of lines inserted.
CREATE FUNCTION tco.insert_bill_lines(account_id bigint[], product_code text[], charge_type tco.charge_type[],
                                      period_start timestamptz[], period_end timestamptz[], list_amount numeric[],
                                      issued_at timestamptz[], paid_at timestamptz[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer := pg_catalog.cardinality(account_id);
    inserted bigint;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(product_code, 'product_code');
    PERFORM tco.require_arg(period_start, 'period_start');
    PERFORM tco.require_arg(period_end, 'period_end');
    PERFORM tco.require_arg(list_amount, 'list_amount');
    IF pg_catalog.array_ndims(account_id) > 1 OR pg_catalog.cardinality(product_code) <> n
       OR pg_catalog.cardinality(period_start) <> n OR pg_catalog.cardinality(period_end) <> n
       OR pg_catalog.cardinality(list_amount) <> n
       OR pg_catalog.cardinality(coalesce(charge_type, pg_catalog.array_fill(NULL::tco.charge_type, ARRAY[n]))) <> n
       OR pg_catalog.cardinality(coalesce(issued_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n]))) <> n
       OR pg_catalog.cardinality(coalesce(paid_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n]))) <> n THEN
        RAISE EXCEPTION 'the arrays of tco.insert_bill_lines must have one length (account_id has %)', n
            USING ERRCODE = '22023',
                  HINT = 'Pass one element per bill line in every array; charge_type, issued_at and paid_at may be NULL as a whole.';
    END IF;
    INSERT INTO tco.bill_line (account_id, product_code, charge_type, period_start, period_end, list_amount, issued_at, paid_at)
    SELECT u.a, u.p, coalesce(u.c, 'postpaid'), u.s, u.e, u.l, coalesce(u.i, pg_catalog.now()), u.d
      FROM unnest(account_id, product_code, coalesce(charge_type, pg_catalog.array_fill(NULL::tco.charge_type, ARRAY[n])),
                  period_start, period_end, list_amount,
                  coalesce(issued_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n])),
                  coalesce(paid_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n])))
           AS u(a, p, c, s, e, l, i, d);
    GET DIAGNOSTICS inserted = ROW_COUNT;
    RETURN inserted;
END $$;
COMMENT ON FUNCTION tco.insert_bill_lines(bigint[], text[], tco.charge_type[], timestamptz[], timestamptz[], numeric[], timestamptz[], timestamptz[]) IS
'Inserts bill lines given column-wise (arrays of one length; charge_type, issued_at, paid_at may be NULL: postpaid, now(), unpaid) in one INSERT statement, under every rule of tco.bill_line. Returns the number of lines inserted.';
REVOKE EXECUTE ON FUNCTION tco.create_entity(bigint, text, boolean), tco.create_account(bigint, text, bigint, numeric, numeric),
                          tco.create_product(text, tco.granularity),
                          tco.insert_bill_lines(bigint[], text[], tco.charge_type[], timestamptz[], timestamptz[], numeric[], timestamptz[], timestamptz[])
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.create_entity(bigint, text, boolean), tco.create_account(bigint, text, bigint, numeric, numeric),
                          tco.create_product(text, tco.granularity),
                          tco.insert_bill_lines(bigint[], text[], tco.charge_type[], timestamptz[], timestamptz[], numeric[], timestamptz[], timestamptz[])
    TO tco_admin;

-- ==== issue 15: scheduled settlement with pg_cron (src/sql/58_schedule.sql).
-- Settles the cycle before the current one (in the billing time zone) for
-- everything, as the caller; the command of the scheduled job.
CREATE FUNCTION tco.settle_previous_cycle(OUT cycle tco.billing_cycle, OUT statements bigint, OUT lines bigint,
                                          OUT list_total numeric, OUT due_total numeric)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    cycle := tco.cycle_of(pg_catalog.now()) OPERATOR(tco.-) 1;
    SELECT s.statements, s.lines, s.list_total, s.due_total
      INTO settle_previous_cycle.statements, settle_previous_cycle.lines,
           settle_previous_cycle.list_total, settle_previous_cycle.due_total
      FROM tco.settle_cycle(settle_previous_cycle.cycle) s;
END $$;
COMMENT ON FUNCTION tco.settle_previous_cycle() IS
'Settles the billing cycle before the one containing now() (billing time zone), for everything, with the caller''s rights; returns the cycle and tco.settle_cycle''s result. Idempotent. The command of the job tco.schedule_settlement creates.';

-- The schema of pg_cron's functions (cron) in this database, or NULL when
-- the extension pg_cron is not installed.
CREATE FUNCTION tco.pg_cron_schema() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- pg_cron creates its own schema (cron), a member of the extension
    SELECT n.nspname
      FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_depend d ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                                 AND d.refobjid OPERATOR(pg_catalog.=) e.oid AND d.deptype OPERATOR(pg_catalog.=) 'e'
                                 AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
      JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) d.objid
     WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron'
     ORDER BY n.nspname OPERATOR(pg_catalog.<>) 'cron', n.nspname
     LIMIT 1
$$;
COMMENT ON FUNCTION tco.pg_cron_schema() IS 'Internal: the schema of the extension pg_cron in this database (NULL: not installed).';

-- The pg_cron function named by its signature, checked to be a member of the
-- extension pg_cron (not a look-alike planted in a schema named cron);
-- 55000 with a hint when pg_cron is not installed in this database, 42501
-- with a hint when the caller may not use its schema.
CREATE FUNCTION tco.pg_cron_function(signature text) RETURNS regprocedure
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nsp name := tco.pg_cron_schema();
    f regprocedure;
BEGIN
    IF nsp IS NULL THEN
        RAISE EXCEPTION 'scheduled settlement needs the extension pg_cron, which is not installed in database %',
                        pg_catalog.current_database()
            USING ERRCODE = '55000',
                  HINT = pg_catalog.format('install pg_cron: CREATE EXTENSION pg_cron; (the server needs shared_preload_libraries = ''pg_cron'' and cron.database_name = %L, then a restart)',
                                           pg_catalog.current_database());
    END IF;
    IF NOT pg_catalog.has_schema_privilege(nsp, 'USAGE') THEN
        RAISE EXCEPTION 'role % may not use pg_cron: no USAGE on schema %', CURRENT_USER, nsp
            USING ERRCODE = '42501',
                  HINT = pg_catalog.format('A superuser grants it: GRANT USAGE ON SCHEMA %I TO %I;', nsp, CURRENT_USER);
    END IF;
    f := pg_catalog.to_regprocedure(pg_catalog.format('%I.%s', nsp, signature));
    IF f IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                 WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
                                   AND d.objid OPERATOR(pg_catalog.=) f
                                   AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                                   AND d.refobjid OPERATOR(pg_catalog.=) (SELECT e.oid FROM pg_catalog.pg_extension e
                                                                           WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron')
                                   AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
        RAISE EXCEPTION 'the installed pg_cron has no function %.%', nsp, signature
            USING ERRCODE = '55000', HINT = 'Update pg_cron to version 1.4 or later: ALTER EXTENSION pg_cron UPDATE;';
    END IF;
    RETURN f;
END $$;
COMMENT ON FUNCTION tco.pg_cron_function(text) IS 'Internal: a function of the extension pg_cron by its signature (55000 with a hint when pg_cron is not installed in this database, 42501 when the caller has no USAGE on its schema).';

-- Schedules tco.settle_previous_cycle() with pg_cron; returns the job id.
-- The job runs as the calling role, in this database.  pg_cron 1.4 reads
-- schedules in GMT; a job of the same name and role is replaced.
CREATE FUNCTION tco.schedule_settlement(schedule text DEFAULT '0 2 1 * *',
                                        job_name text DEFAULT 'tco_settle_previous_cycle')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f regprocedure;
    job bigint;
BEGIN
    PERFORM tco.require_arg(schedule, 'schedule');
    PERFORM tco.require_arg(job_name, 'job_name');
    IF pg_catalog.btrim(job_name) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'job_name must not be empty' USING ERRCODE = '22023', HINT = 'Name the job, for example ''tco_settle_previous_cycle''.';
    END IF;
    f := tco.pg_cron_function('schedule(text,text,text)');
    -- (pg_cron can only be installed in the database of cron.database_name)
    EXECUTE pg_catalog.format('SELECT %s($1, $2, $3)', f::pg_catalog.oid::pg_catalog.regproc)
       INTO job USING job_name, schedule, 'SELECT * FROM tco.settle_previous_cycle()'::text;
    RETURN job;
END $$;
COMMENT ON FUNCTION tco.schedule_settlement(text, text) IS
'Schedules the settlement of the previous cycle (SELECT * FROM tco.settle_previous_cycle()) with pg_cron as job job_name (default on the 1st of each month at 02:00 GMT, pg_cron''s time); the job runs as the calling role in this database. Returns the pg_cron job id; a job of the same name and role is replaced. 55000 with a hint when pg_cron is not installed in this database.';

-- Removes a job tco.schedule_settlement created (of the calling role);
-- false when there is none.
CREATE FUNCTION tco.unschedule_settlement(job_name text DEFAULT 'tco_settle_previous_cycle') RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f regprocedure;
    present boolean;
BEGIN
    PERFORM tco.require_arg(job_name, 'job_name');
    f := tco.pg_cron_function('unschedule(name)');
    EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %I.job j WHERE j.jobname OPERATOR(pg_catalog.=) $1 '
                              'AND j.username OPERATOR(pg_catalog.=) CURRENT_USER)', tco.pg_cron_schema())
       INTO present USING job_name;
    IF NOT present THEN
        RETURN false;
    END IF;
    EXECUTE pg_catalog.format('SELECT %s($1)', f::pg_catalog.oid::pg_catalog.regproc) INTO present USING job_name::name;
    RETURN present;
END $$;
COMMENT ON FUNCTION tco.unschedule_settlement(text) IS 'Removes the pg_cron job job_name of the calling role (default tco_settle_previous_cycle); false when there is none. 55000 with a hint when pg_cron is not installed in this database.';
REVOKE EXECUTE ON FUNCTION tco.settle_previous_cycle(), tco.pg_cron_schema(), tco.pg_cron_function(text),
                           tco.schedule_settlement(text, text), tco.unschedule_settlement(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.settle_previous_cycle(), tco.pg_cron_schema(), tco.pg_cron_function(text),
                          tco.schedule_settlement(text, text), tco.unschedule_settlement(text) TO tco_admin;

-- ==== forecast alerts (README "Alerts"): kind cycle_forecast.
ALTER TABLE tco.alert_threshold
    DROP CONSTRAINT alert_threshold_kind,
    ADD CONSTRAINT alert_threshold_kind CHECK (kind IN ('available_credit', 'cycle_spending', 'cycle_forecast')),
    DROP CONSTRAINT alert_threshold_spending_positive,
    ADD CONSTRAINT alert_threshold_spending_positive CHECK (kind NOT IN ('cycle_spending', 'cycle_forecast') OR threshold > 0);
COMMENT ON COLUMN tco.alert_threshold.kind IS 'available_credit, cycle_spending or cycle_forecast.';
-- Projected spending of a payer in a cycle, seen at instant `at`: the
-- spending so far times (length of the cycle / elapsed part), rounded
-- half-up to 2 decimals.  NULL before one day of the cycle has elapsed (too
-- little to project); the actual spending once the cycle is over.
CREATE FUNCTION tco.cycle_forecast(account_id bigint, cycle tco.billing_cycle, at timestamptz DEFAULT now()) RETURNS numeric
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tstzrange;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(cycle, 'cycle');
    PERFORM tco.require_arg(at, 'at');
    r := tco.cycle_range(cycle);
    IF at >= pg_catalog.upper(r) THEN
        RETURN tco.cycle_spending(account_id, cycle);
    ELSIF at < pg_catalog.lower(r) + interval '1 day' THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.round(tco.cycle_spending(account_id, cycle)
                            * extract(epoch FROM pg_catalog.upper(r) - pg_catalog.lower(r))
                            / extract(epoch FROM at - pg_catalog.lower(r)), 2);
END $$;
COMMENT ON FUNCTION tco.cycle_forecast(bigint, tco.billing_cycle, timestamptz) IS 'R11: projected spending of a payer in a cycle at instant at: spending so far (tco.cycle_spending) at the run rate of the elapsed part, over the whole cycle, rounded to 2 decimals; NULL in the first day; the actual spending once the cycle is over.';
REVOKE EXECUTE ON FUNCTION tco.cycle_forecast(bigint, tco.billing_cycle, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.cycle_forecast(bigint, tco.billing_cycle, timestamptz) TO tco_admin;
CREATE OR REPLACE FUNCTION tco.fire_alerts(account_ids bigint[], spending_cycle tco.billing_cycle,
                                credit boolean, spending boolean) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    th       record;
    now_cycle tco.billing_cycle := tco.cycle_of(now());
    c        tco.billing_cycle;
    val      numeric;
    last_key text;
    fired    integer := 0;
    n        integer;
BEGIN
    FOR th IN
        SELECT t.threshold_id, t.account_id, t.kind, t.threshold
        FROM tco.alert_threshold t
        WHERE t.enabled AND t.account_id = ANY (account_ids)
          AND ((t.kind = 'available_credit' AND credit) OR (t.kind IN ('cycle_spending', 'cycle_forecast') AND spending))
          AND NOT EXISTS (SELECT 1 FROM tco.alert a
                          WHERE a.threshold_id = t.threshold_id
                            AND a.cycle OPERATOR(tco.=) (CASE WHEN t.kind = 'available_credit' THEN now_cycle ELSE spending_cycle END))
          AND tco.manager_at(t.account_id, now()) IS NULL
        ORDER BY t.account_id, t.kind, t.threshold_id
    LOOP
        c := CASE WHEN th.kind = 'available_credit' THEN now_cycle ELSE spending_cycle END;
        IF last_key IS DISTINCT FROM th.account_id || '/' || th.kind THEN
            val := CASE th.kind WHEN 'available_credit' THEN tco.available_credit(th.account_id)
                                WHEN 'cycle_forecast' THEN tco.cycle_forecast(th.account_id, spending_cycle)
                                ELSE tco.cycle_spending(th.account_id, spending_cycle) END;
            last_key := th.account_id || '/' || th.kind;
        END IF;
        IF (th.kind = 'available_credit' AND val < th.threshold)
           OR (th.kind IN ('cycle_spending', 'cycle_forecast') AND val >= th.threshold) THEN
            INSERT INTO tco.alert (threshold_id, account_id, kind, threshold, value, cycle)
                VALUES (th.threshold_id, th.account_id, th.kind, th.threshold, val, c)
                ON CONFLICT ON CONSTRAINT alert_once_per_cycle DO NOTHING;
            GET DIAGNOSTICS n = ROW_COUNT;
            fired := fired + n;
        END IF;
    END LOOP;
    RETURN fired;
END $$;
CREATE OR REPLACE FUNCTION tco.alert_threshold_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mgr bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.kind IS NOT NULL AND NEW.kind NOT IN ('available_credit', 'cycle_spending', 'cycle_forecast') THEN
        RAISE EXCEPTION 'unknown alert kind "%"', NEW.kind
            USING ERRCODE = '22023', HINT = 'Use available_credit, cycle_spending or cycle_forecast.';
    END IF;
    IF NEW.threshold IS NOT NULL AND (NEW.threshold = 'NaN'::numeric OR NEW.threshold <> round(NEW.threshold, 2)
                                      OR abs(NEW.threshold) >= 1e18
                                      OR (NEW.kind IN ('cycle_spending', 'cycle_forecast') AND NEW.threshold <= 0)) THEN
        RAISE EXCEPTION 'alert threshold % is not valid for kind %', NEW.threshold, NEW.kind
            USING ERRCODE = '22023', HINT = 'Use an amount with at most 2 decimals; a cycle_spending or cycle_forecast threshold must be positive.';
    END IF;
    IF NEW.account_id IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = NEW.account_id),
                               'account', NEW.account_id);
    mgr := tco.manager_at(NEW.account_id, now());
    IF mgr IS NOT NULL AND NEW.enabled THEN
        RAISE EXCEPTION 'R11: account % is a managed member of account %: its alerts go to its manager', NEW.account_id, mgr
            USING ERRCODE = '55000',
                  HINT = format('Set the threshold on management account %s (its spending includes its managed members).', mgr);
    END IF;
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION tco.alert_threshold_evaluate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.enabled THEN
        PERFORM tco.fire_alerts(ARRAY[NEW.account_id], tco.cycle_of(now()),
                                NEW.kind = 'available_credit', NEW.kind IN ('cycle_spending', 'cycle_forecast'));
    END IF;
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION tco.alert_bill_line_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco.alert_threshold t WHERE t.enabled AND t.kind IN ('cycle_spending', 'cycle_forecast')) THEN
        RETURN NULL;
    END IF;
    FOR r IN
        WITH c AS (SELECT DISTINCT n.account_id, tco.cycle_of(n.period_start) AS cycle FROM new_lines n),
             p AS (SELECT c.cycle, c.account_id AS payer FROM c
                   UNION
                   SELECT c.cycle, t.management_account_id FROM c
                   JOIN tco.trusteeship t ON t.member_account_id = c.account_id
                    AND tstzrange(t.established_at, t.ended_at)
                        && tstzrange(lower(tco.cycle_range(c.cycle)) - interval '1 month', upper(tco.cycle_range(c.cycle))))
        SELECT p.cycle, array_agg(DISTINCT p.payer) AS payers
        FROM p
        WHERE EXISTS (SELECT 1 FROM tco.alert_threshold t
                      WHERE t.account_id = p.payer AND t.enabled AND t.kind IN ('cycle_spending', 'cycle_forecast'))
        GROUP BY p.cycle ORDER BY p.cycle
    LOOP
        PERFORM tco.fire_alerts(r.payers, r.cycle, false, true);
    END LOOP;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.set_alert_threshold(bigint, text, numeric) IS 'R11: sets (or re-enables) an alert threshold of a payer: kind available_credit, cycle_spending or cycle_forecast. Evaluated at once. Returns its id. 55000 for a managed member (set it on its manager).';

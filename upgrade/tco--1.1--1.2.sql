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
           u.line_id, u.li, u.di, u.be, u.src, u.did
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
    pg_catalog.lower(tco.cycle_range(l.cycle))                               AS "BillingPeriodStart",
    pg_catalog.upper(tco.cycle_range(l.cycle))                               AS "BillingPeriodEnd",
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
LEFT JOIN tco.invoice i ON i.statement_id = l.statement_id
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

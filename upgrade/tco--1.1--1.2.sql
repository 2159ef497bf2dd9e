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

-- tco 1.0 -> 1.1.  Every change made to src/sql after 1.0 is repeated here,
-- so that ALTER EXTENSION tco UPDATE gives the same extension as a fresh 1.1
-- install (scripts/test_upgrade.sh compares the two catalogs fact by fact).
\echo Use "ALTER EXTENSION tco UPDATE TO '1.1'" to load this file. \quit

-- ==== access control for settlement data (issue 6): RLS on statements,
-- statement lines, settled cycles, benefits, contract discounts; the BI views
-- run with the reader's rights; grants to tco_reader.
ALTER VIEW tco.settlement_by_payer SET (security_invoker = true);
ALTER VIEW tco.settlement_by_member SET (security_invoker = true);
ALTER VIEW tco.settlement_by_unit SET (security_invoker = true);

CREATE FUNCTION tco.visible_payers() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 50 SET search_path = pg_catalog, pg_temp AS $$
    WITH me AS (SELECT tco.current_account_id() AS account_id)
    SELECT me.account_id FROM me WHERE me.account_id IS NOT NULL
    UNION
    SELECT m.account_id
      FROM tco.organization o JOIN me ON o.admin_account_id = me.account_id
      JOIN tco.member m ON m.org_id = o.org_id
$$;
COMMENT ON FUNCTION tco.visible_payers() IS 'Payers whose statements the invoking role may read: its own account, and every current member of the organization it administers. Empty for an unmapped role.';

CREATE FUNCTION tco.paying_managers() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 1 SET search_path = pg_catalog, pg_temp AS $$
    SELECT t.management_account_id
      FROM tco.trusteeship t
     WHERE t.member_account_id = tco.current_account_id()
       AND t.established_at <= pg_catalog.now()
       AND (t.ended_at IS NULL OR t.ended_at > pg_catalog.now())
$$;
COMMENT ON FUNCTION tco.paying_managers() IS 'The management account of the invoking role''s account in its current trusteeship (empty if none): its vouchers and stored-value cards pay for the account.';

CREATE FUNCTION tco.visible_entities() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 5 SET search_path = pg_catalog, pg_temp AS $$
    SELECT DISTINCT a.entity_id FROM tco.account a
     WHERE a.account_id IN (SELECT tco.visible_accounts()) AND a.entity_id IS NOT NULL
$$;
COMMENT ON FUNCTION tco.visible_entities() IS 'Entities of the accounts the invoking role may read: their entity-level contract discounts are readable.';

ALTER TABLE tco.statement ENABLE ROW LEVEL SECURITY;
CREATE POLICY statement_admin_all ON tco.statement TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY statement_reader_visible ON tco.statement FOR SELECT TO tco_reader
    USING (payer_account_id IN (SELECT tco.visible_payers()));

ALTER TABLE tco.statement_line ENABLE ROW LEVEL SECURITY;
CREATE POLICY statement_line_admin_all ON tco.statement_line TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY statement_line_reader_visible ON tco.statement_line FOR SELECT TO tco_reader
    USING (statement_id IN (SELECT s.statement_id FROM tco.statement s
                     WHERE s.payer_account_id IN (SELECT tco.visible_payers())));

ALTER TABLE tco.settled_cycle ENABLE ROW LEVEL SECURITY;
CREATE POLICY settled_cycle_admin_all ON tco.settled_cycle TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY settled_cycle_reader_visible ON tco.settled_cycle FOR SELECT TO tco_reader
    USING ((org_id IS NULL AND tco.current_account_id() IS NOT NULL)
           OR org_id IN (SELECT tco.visible_organizations()));

ALTER TABLE tco.benefit ENABLE ROW LEVEL SECURITY;
CREATE POLICY benefit_admin_all ON tco.benefit TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY benefit_reader_visible ON tco.benefit FOR SELECT TO tco_reader
    USING (owner_account_id IN (SELECT tco.visible_accounts())
           OR (kind IN ('voucher', 'stored_value_card') AND owner_account_id IN (SELECT tco.paying_managers())));

ALTER TABLE tco.contract_discount ENABLE ROW LEVEL SECURITY;
CREATE POLICY contract_discount_admin_all ON tco.contract_discount TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY contract_discount_reader_visible ON tco.contract_discount FOR SELECT TO tco_reader
    USING (account_id IN (SELECT tco.visible_accounts()) OR entity_id IN (SELECT tco.visible_entities()));

REVOKE EXECUTE ON FUNCTION tco.visible_payers(), tco.paying_managers(), tco.visible_entities() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.visible_payers(), tco.paying_managers(), tco.visible_entities() TO tco_admin;
GRANT SELECT ON tco.statement, tco.statement_line, tco.settled_cycle, tco.benefit, tco.contract_discount,
                tco.settlement_by_payer, tco.settlement_by_member, tco.settlement_by_unit
    TO tco_reader;
GRANT EXECUTE ON FUNCTION tco.visible_payers(), tco.paying_managers(), tco.visible_entities() TO tco_reader;

-- ==== clean-up: tco.deposit / tco.withdraw share tco.ledger_move, and
-- tco.refund_prepaid / tco.terminate_prepaid share tco.prepaid_close (same
-- behaviour).
CREATE FUNCTION tco.ledger_move(account_id bigint, amount numeric, kind text) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_balance numeric;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_amount(amount, 'amount');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = ledger_move.account_id),
                               'account', account_id);
    INSERT INTO tco.ledger (account_id, amount, kind)
        VALUES (ledger_move.account_id,
                CASE WHEN ledger_move.kind IN ('withdraw', 'top_up_out', 'payment') THEN -ledger_move.amount
                     ELSE ledger_move.amount END,
                ledger_move.kind)
        RETURNING balance_after INTO new_balance;
    RETURN new_balance;
END $$;
COMMENT ON FUNCTION tco.ledger_move(bigint, numeric, text) IS 'Internal: checks the account and a positive amount, books one ledger row of the kind (debit kinds negative) and returns the new balance. Used by tco.deposit and tco.withdraw.';

CREATE OR REPLACE FUNCTION tco.deposit(account_id bigint, amount numeric) RETURNS numeric
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.ledger_move(account_id, amount, 'deposit')
$$;
COMMENT ON FUNCTION tco.deposit(bigint, numeric) IS 'Credits external money to an account. Returns the new balance.';

-- R10: withdraw is allowed for a managed member too; its balance is not used for payment.
CREATE OR REPLACE FUNCTION tco.withdraw(account_id bigint, amount numeric) RETURNS numeric
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.ledger_move(account_id, amount, 'withdraw')
$$;
COMMENT ON FUNCTION tco.withdraw(bigint, numeric) IS 'Pays out part of the account''s own cash balance (never below zero, TC009). A managed member may withdraw its own balance (R10). Returns the new balance.';

CREATE FUNCTION tco.prepaid_close(resource_id bigint, what text, final_status text) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    resource tco.prepaid_resource := tco.lock_prepaid_resource(resource_id);
    refund   numeric;
BEGIN
    PERFORM tco.r12_prepaid_check(resource, what, false);
    refund := tco.prepaid_unused_value(resource, resource.price);
    UPDATE tco.prepaid_resource r SET status = final_status WHERE r.resource_id = resource.resource_id;
    PERFORM tco.prepaid_credit_refund(resource, refund, what);
    RETURN refund;
END $$;
COMMENT ON FUNCTION tco.prepaid_close(bigint, text, text) IS 'Internal: ends an active prepaid resource with final_status (refunded or terminated) after the R12 check for `what`, crediting the unused share of its price to the owner. Returns the amount refunded.';

CREATE OR REPLACE FUNCTION tco.refund_prepaid(resource_id bigint) RETURNS numeric
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.prepaid_close(resource_id, 'refund', 'refunded')
$$;
COMMENT ON FUNCTION tco.refund_prepaid(bigint) IS 'Cancels a prepaid resource and credits the unused share of its price to the owner. R12: refused while passed to a manager (TC007). Returns the amount refunded.';

CREATE OR REPLACE FUNCTION tco.terminate_prepaid(resource_id bigint) RETURNS numeric
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.prepaid_close(resource_id, 'termination', 'terminated')
$$;
COMMENT ON FUNCTION tco.terminate_prepaid(bigint) IS 'Terminates a prepaid resource early (released now) and credits the unused share of its price to the owner. R12: refused while passed to a manager (TC007). Returns the amount refunded.';
REVOKE EXECUTE ON FUNCTION tco.ledger_move(bigint, numeric, text), tco.prepaid_close(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.ledger_move(bigint, numeric, text), tco.prepaid_close(bigint, text, text) TO tco_admin;

-- ==== tco.policy_allows in C (src/policy.c): same rules, same errors.
CREATE OR REPLACE FUNCTION tco.policy_allows(account_id bigint, action text) RETURNS boolean
AS 'MODULE_PATHNAME', 'tco_policy_allows'
LANGUAGE C STABLE;

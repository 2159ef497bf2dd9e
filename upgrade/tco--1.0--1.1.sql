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

-- ==== sharing (R9): voucher pools, resource packs, savings plans, shares
-- (src/sql/40_settlement.sql benefit columns and kinds, 45_sharing.sql,
-- 51_sharing_access.sql, grants as in 99_grants.sql, identity handling as in
-- 98_dump.sql).
ALTER TABLE tco.benefit DROP CONSTRAINT benefit_kind;
ALTER TABLE tco.benefit ADD CONSTRAINT benefit_kind CHECK (kind IN ('coupon', 'voucher', 'stored_value_card', 'resource_pack', 'savings_plan'));
ALTER TABLE tco.benefit
    ADD COLUMN pool_org_id bigint REFERENCES tco.organization ON DELETE RESTRICT,
    ADD COLUMN plan_discount_rate numeric(7,6),
    ADD CONSTRAINT benefit_pool_voucher CHECK (pool_org_id IS NULL OR kind = 'voucher'),
    ADD CONSTRAINT benefit_pack_product CHECK (kind <> 'resource_pack' OR product_code IS NOT NULL),
    ADD CONSTRAINT benefit_plan_rate CHECK ((kind = 'savings_plan') = (plan_discount_rate IS NOT NULL)
                                        AND (plan_discount_rate IS NULL OR (plan_discount_rate >= 0 AND plan_discount_rate < 1))),
    ADD CONSTRAINT benefit_plan_balance CHECK (kind <> 'savings_plan' OR balance = initial_amount);
COMMENT ON COLUMN tco.benefit.kind IS 'resource_pack, savings_plan, coupon, voucher or stored_value_card; settlement uses them in that order (DESIGN section 5, README "Sharing").';
COMMENT ON COLUMN tco.benefit.pool_org_id IS 'Set for a voucher of that organization''s voucher pool: it pays only the lines of accounts it is shared with (tco.benefit_share), never through its owner.';
COMMENT ON COLUMN tco.benefit.plan_discount_rate IS 'Savings plans only: the discount rate of the commitment (the hourly fee is initial_amount * (1 - rate)); initial_amount is the hourly commitment.';

-- Sharing (R9; DESIGN sections 2 and 5): voucher pools, resource packs and
-- savings plans, shared with chosen accounts or units.  Settlement applies
-- them in C (src/settle.c, src/share.c); README "Sharing" is the manual.
--
-- Model.
--   * A voucher pool belongs to one organization.  Money enters it (fund),
--     leaves it as pool vouchers (issue: a tco.benefit row of kind voucher
--     with pool_org_id set) and comes back when a voucher is reclaimed.  Its
--     balance is the sum of its ledger (tco.voucher_pool_entry) and never
--     goes below zero.
--   * A pool voucher pays nothing through its owner: only lines of the
--     accounts it is shared with, whoever pays them.
--   * A resource pack (an amount of one product) and a savings plan (an
--     hourly commitment, optionally for one product) pay lines consumed by
--     their owner and by the accounts they are shared with.
--   * A share (tco.benefit_share) names one account or one unit; a unit
--     share covers every member placed in that unit or any unit below it.
--     A share covers lines whose period starts in [shared_at, revoked_at).
--     Who is in the unit's subtree is resolved when the cycle is settled,
--     against the unit tree and memberships of that moment (units created
--     or moved in later count; an account share covers the account only
--     while it is a member of the share's organization).
--   * Revoking a share ends it.  Revoking the last active share of a pool
--     voucher reclaims its remaining balance to the pool at once (so lines
--     not yet settled, also those before the revoke, are not paid by it any
--     more); tco.reclaim_voucher revokes every share and reclaims.  Revoking
--     a share of a pack or plan reclaims nothing: the owner keeps it.
--
-- Error codes:
--   TC020  sharing rule: this benefit cannot be shared, or the target is not
--          in the sharing organization
--   TC021  the voucher pool has not enough balance
--   TC022  a share was already revoked; shares are history and only their
--          revocation may be recorded
--   TC008  R14: a share that starts or ends in a settled cycle; the pool
--          ledger and shares are append-only
--   22004, 22023, 23503 as elsewhere (NULL, bad value, unknown id)

CREATE TABLE tco.voucher_pool (
    org_id     bigint PRIMARY KEY REFERENCES tco.organization ON DELETE RESTRICT,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tco.voucher_pool IS 'The voucher pool of an organization (R9). Its balance is the sum of its ledger, tco.voucher_pool_entry (see view tco.voucher_pool_balance).';

CREATE TABLE tco.voucher_pool_entry (
    entry_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id     bigint NOT NULL REFERENCES tco.voucher_pool ON DELETE RESTRICT,
    event      text NOT NULL CONSTRAINT voucher_pool_entry_event CHECK (event IN ('fund', 'issue', 'reclaim')),
    amount     numeric(20,6) NOT NULL,
    benefit_id bigint REFERENCES tco.benefit ON DELETE RESTRICT,
    share_id   bigint,
    at         timestamptz NOT NULL DEFAULT now(),
    by_role    name NOT NULL DEFAULT current_user,
    CONSTRAINT voucher_pool_entry_sign CHECK (CASE event WHEN 'issue' THEN amount < 0 ELSE amount > 0 END),
    CONSTRAINT voucher_pool_entry_voucher CHECK ((event = 'fund') = (benefit_id IS NULL))
);
CREATE INDEX voucher_pool_entry_org ON tco.voucher_pool_entry (org_id);
CREATE INDEX voucher_pool_entry_benefit ON tco.voucher_pool_entry (benefit_id);
COMMENT ON TABLE tco.voucher_pool_entry IS 'Append-only ledger of a voucher pool: fund (+), issue of a pool voucher (-), reclaim of a voucher''s remaining balance (+). The sum per pool never goes below zero.';
COMMENT ON COLUMN tco.voucher_pool_entry.amount IS 'Signed: positive into the pool, negative out of it.';
COMMENT ON COLUMN tco.voucher_pool_entry.share_id IS 'For a reclaim: the revoked share that triggered it (NULL: tco.reclaim_voucher on an unshared voucher).';

CREATE TABLE tco.benefit_share (
    share_id         bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    benefit_id       bigint NOT NULL REFERENCES tco.benefit ON DELETE RESTRICT,
    org_id           bigint NOT NULL REFERENCES tco.organization ON DELETE RESTRICT,
    account_id       bigint REFERENCES tco.account ON DELETE RESTRICT,
    unit_id          bigint,
    shared_at        timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    shared_by        name NOT NULL DEFAULT current_user,
    revoked_by       name,
    reclaimed_amount numeric(20,6),
    CONSTRAINT benefit_share_one_target CHECK ((account_id IS NULL) <> (unit_id IS NULL)),
    CONSTRAINT benefit_share_unit_same_org FOREIGN KEY (unit_id, org_id) REFERENCES tco.org_unit (unit_id, org_id),
    CONSTRAINT benefit_share_finite CHECK (isfinite(shared_at) AND (revoked_at IS NULL OR isfinite(revoked_at))),
    CONSTRAINT benefit_share_window CHECK (revoked_at IS NULL OR revoked_at >= shared_at),
    CONSTRAINT benefit_share_reclaim CHECK (reclaimed_amount IS NULL OR (revoked_at IS NOT NULL AND reclaimed_amount >= 0))
);
CREATE UNIQUE INDEX benefit_share_active ON tco.benefit_share (benefit_id, coalesce(account_id, 0), coalesce(unit_id, 0))
    WHERE revoked_at IS NULL;
CREATE INDEX benefit_share_account ON tco.benefit_share (account_id) WHERE account_id IS NOT NULL;
CREATE INDEX benefit_share_unit ON tco.benefit_share (unit_id) WHERE unit_id IS NOT NULL;
CREATE INDEX benefit_share_org ON tco.benefit_share (org_id);
COMMENT ON TABLE tco.benefit_share IS 'History of sharing (R9): a pool voucher, resource pack or savings plan shared with one account or one unit (and its whole subtree) of an organization, for lines starting in [shared_at, revoked_at). Rows are never deleted; revoking sets revoked_at.';
COMMENT ON COLUMN tco.benefit_share.org_id IS 'The sharing organization: the pool''s for a pool voucher, the owner''s for a pack or plan. Defaults to it.';
COMMENT ON COLUMN tco.benefit_share.account_id IS 'Shared with this account (while it is a member of org_id).';
COMMENT ON COLUMN tco.benefit_share.unit_id IS 'Shared with every member of this unit and of the units below it, as the tree stands when a cycle is settled.';
COMMENT ON COLUMN tco.benefit_share.revoked_at IS 'End of the share (NULL: active). Lines starting at or after it are not covered.';
COMMENT ON COLUMN tco.benefit_share.reclaimed_amount IS 'Remaining balance of the pool voucher returned to the pool when this share was revoked (NULL: nothing reclaimed).';

SELECT pg_catalog.pg_extension_config_dump('tco.voucher_pool', '');
SELECT pg_catalog.pg_extension_config_dump('tco.voucher_pool_entry', '');
SELECT pg_catalog.pg_extension_config_dump('tco.benefit_share', '');

CREATE VIEW tco.voucher_pool_balance AS
SELECT p.org_id,
       coalesce(sum(e.amount) FILTER (WHERE e.event = 'fund'), 0) AS funded,
       coalesce(-sum(e.amount) FILTER (WHERE e.event = 'issue'), 0) AS issued,
       coalesce(sum(e.amount) FILTER (WHERE e.event = 'reclaim'), 0) AS reclaimed,
       coalesce(sum(e.amount), 0) AS balance
FROM tco.voucher_pool p LEFT JOIN tco.voucher_pool_entry e USING (org_id)
GROUP BY p.org_id;
COMMENT ON VIEW tco.voucher_pool_balance IS 'Per voucher pool: money funded, issued as vouchers, reclaimed, and the balance available to issue (funded - issued + reclaimed).';
COMMENT ON COLUMN tco.voucher_pool_balance.balance IS 'Available to issue as new pool vouchers.';

-- ---------------------------------------------------------------------------
-- Rules (triggers: they hold for direct INSERT/UPDATE/DELETE too)

-- The pool balance never goes below zero.  The pool row is locked first, so
-- concurrent entries of one pool are checked one after the other.
CREATE FUNCTION tco.voucher_pool_entry_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    total numeric;
BEGIN
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
CREATE TRIGGER voucher_pool_entry_check AFTER INSERT ON tco.voucher_pool_entry
    FOR EACH ROW EXECUTE FUNCTION tco.voucher_pool_entry_check();
CREATE TRIGGER voucher_pool_entry_append_only BEFORE UPDATE OR DELETE ON tco.voucher_pool_entry
    FOR EACH ROW EXECUTE FUNCTION tco.append_only();
CREATE TRIGGER voucher_pool_entry_no_truncate BEFORE TRUNCATE ON tco.voucher_pool_entry
    FOR EACH STATEMENT EXECUTE FUNCTION tco.append_only();

-- A pool voucher is money taken from the pool: inserting one books the issue
-- (and fails when the pool cannot pay it); its amount, pool, owner and kind
-- never change, its balance only goes down (settlement, reclaim), and it is
-- never deleted.
CREATE FUNCTION tco.pool_voucher_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
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
CREATE TRIGGER pool_voucher_issue AFTER INSERT ON tco.benefit
    FOR EACH ROW EXECUTE FUNCTION tco.pool_voucher_check();
CREATE TRIGGER pool_voucher_check BEFORE UPDATE OR DELETE ON tco.benefit
    FOR EACH ROW EXECUTE FUNCTION tco.pool_voucher_check();

-- Whether an account is in the subtree of a unit now.
CREATE FUNCTION tco.unit_subtree(p_unit_id bigint) RETURNS SETOF bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE sub(unit_id) AS (
        SELECT p_unit_id
        UNION
        SELECT u.unit_id FROM sub JOIN tco.org_unit u ON u.parent_unit_id = sub.unit_id
    )
    SELECT unit_id FROM sub
$$;
COMMENT ON FUNCTION tco.unit_subtree(bigint) IS 'A unit and every unit below it, as the tree stands now.';

CREATE FUNCTION tco.benefit_share_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b       tco.benefit;
    owner_org bigint;
    until   timestamptz;
    others  boolean;
    amount  numeric;
BEGIN
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
CREATE TRIGGER benefit_share_check BEFORE INSERT OR UPDATE OR DELETE ON tco.benefit_share
    FOR EACH ROW EXECUTE FUNCTION tco.benefit_share_check();
CREATE TRIGGER benefit_share_no_truncate BEFORE TRUNCATE ON tco.benefit_share
    FOR EACH STATEMENT EXECUTE FUNCTION tco.append_only();

-- ---------------------------------------------------------------------------
-- Functions

CREATE FUNCTION tco.fund_voucher_pool(org_id bigint, amount numeric) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(amount, 'amount');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.organization o WHERE o.org_id = fund_voucher_pool.org_id),
                               'organization', org_id);
    IF amount <= 0 OR amount <> round(amount, 2) OR amount >= 1000000000000 THEN
        RAISE EXCEPTION 'pool funding % must be positive, below 1e12 and have at most 2 decimals', amount
            USING ERRCODE = '22023', HINT = 'Fund an amount such as 1000.00.';
    END IF;
    INSERT INTO tco.voucher_pool (org_id) VALUES (fund_voucher_pool.org_id) ON CONFLICT DO NOTHING;
    INSERT INTO tco.voucher_pool_entry (org_id, event, amount) VALUES (fund_voucher_pool.org_id, 'fund', amount);
    RETURN (SELECT b.balance FROM tco.voucher_pool_balance b WHERE b.org_id = fund_voucher_pool.org_id);
END $$;
COMMENT ON FUNCTION tco.fund_voucher_pool(bigint, numeric) IS
'Adds money to the voucher pool of an organization (creating the pool on first use). Returns the pool''s new balance.';

CREATE FUNCTION tco.issue_pool_voucher(org_id bigint, amount numeric, valid_from timestamptz, valid_to timestamptz,
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
    IF amount <= 0 OR amount <> round(amount, 2) OR amount >= 1000000000000 THEN
        RAISE EXCEPTION 'voucher amount % must be positive, below 1e12 and have at most 2 decimals', amount
            USING ERRCODE = '22023', HINT = 'Issue an amount such as 100.00.';
    END IF;
    IF valid_to <= valid_from THEN
        RAISE EXCEPTION 'voucher validity [%, %) is empty', valid_from, valid_to
            USING ERRCODE = '22023', HINT = 'valid_to (the expiry) must be after valid_from.';
    END IF;
    IF product_code IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tco.product p WHERE p.product_code = issue_pool_voucher.product_code) THEN
        RAISE EXCEPTION 'product "%" does not exist', product_code
            USING ERRCODE = '23503', HINT = 'List products in tco.product, or pass NULL for any product.';
    END IF;
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to, pool_org_id)
        VALUES ('voucher', admin, product_code, amount, amount, valid_from, valid_to, issue_pool_voucher.org_id)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.issue_pool_voucher(bigint, numeric, timestamptz, timestamptz, text) IS
'Issues a voucher of `amount` from the organization''s voucher pool (error TC021 if the pool has less), usable for lines starting in [valid_from, valid_to), for one product or any (NULL). It pays nothing until shared with tco.share_benefit(). Returns its benefit id.';

CREATE FUNCTION tco.grant_resource_pack(owner_account_id bigint, product_code text, amount numeric,
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
    IF NOT EXISTS (SELECT 1 FROM tco.product p WHERE p.product_code = grant_resource_pack.product_code) THEN
        RAISE EXCEPTION 'product "%" does not exist', product_code
            USING ERRCODE = '23503', HINT = 'A resource pack is for one product listed in tco.product.';
    END IF;
    IF amount <= 0 OR amount <> round(amount, 2) OR amount >= 1000000000000 THEN
        RAISE EXCEPTION 'resource pack amount % must be positive, below 1e12 and have at most 2 decimals', amount
            USING ERRCODE = '22023', HINT = 'Grant an amount such as 500.00.';
    END IF;
    IF valid_to <= valid_from THEN
        RAISE EXCEPTION 'resource pack validity [%, %) is empty', valid_from, valid_to
            USING ERRCODE = '22023', HINT = 'valid_to (the expiry) must be after valid_from.';
    END IF;
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to)
        VALUES ('resource_pack', owner_account_id, product_code, amount, amount, valid_from, valid_to)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.grant_resource_pack(bigint, text, numeric, timestamptz, timestamptz) IS
'Grants a resource pack: `amount` of one product, paying lines of that product starting in [valid_from, valid_to) consumed by the owner or by accounts it is shared with, until its balance is spent. Returns its benefit id.';

CREATE FUNCTION tco.grant_savings_plan(owner_account_id bigint, hourly_commitment numeric, discount_rate numeric,
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
    IF hourly_commitment <= 0 OR hourly_commitment <> round(hourly_commitment, 2) OR hourly_commitment >= 1000000000000 THEN
        RAISE EXCEPTION 'hourly commitment % must be positive, below 1e12 and have at most 2 decimals', hourly_commitment
            USING ERRCODE = '22023', HINT = 'Commit an amount per hour such as 10.00.';
    END IF;
    IF discount_rate < 0 OR discount_rate >= 1 OR discount_rate <> round(discount_rate, 6) THEN
        RAISE EXCEPTION 'savings plan rate % is not in [0, 1) with at most 6 decimals', discount_rate
            USING ERRCODE = '22023', HINT = 'A rate of 0.30 makes the hourly fee 70% of the commitment.';
    END IF;
    IF valid_to <= valid_from THEN
        RAISE EXCEPTION 'savings plan validity [%, %) is empty', valid_from, valid_to
            USING ERRCODE = '22023', HINT = 'valid_to (the end of the term) must be after valid_from.';
    END IF;
    IF product_code IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tco.product p WHERE p.product_code = grant_savings_plan.product_code) THEN
        RAISE EXCEPTION 'product "%" does not exist', product_code
            USING ERRCODE = '23503', HINT = 'List products in tco.product, or pass NULL for all products.';
    END IF;
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to, plan_discount_rate)
        VALUES ('savings_plan', owner_account_id, product_code, hourly_commitment, hourly_commitment, valid_from, valid_to, discount_rate)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.grant_savings_plan(bigint, numeric, numeric, timestamptz, timestamptz, text) IS
'Grants a savings plan: in every billing-zone hour of [valid_from, valid_to) it pays up to hourly_commitment of eligible lines (of product_code, or all products when NULL) starting in that hour, consumed by the owner or by accounts it is shared with. Its fee, billed to the owner outside settlement, is hourly_commitment * (1 - discount_rate) per hour (tco.savings_plan_fee). Returns its benefit id.';

CREATE FUNCTION tco.savings_plan_fee(benefit_id bigint, cycle tco.billing_cycle) RETURNS numeric
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b     tco.benefit;
    r     tstzrange;
    hours numeric;
BEGIN
    PERFORM tco.require_arg(benefit_id, 'benefit_id');
    PERFORM tco.require_arg(cycle, 'cycle');
    SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = savings_plan_fee.benefit_id AND x.kind = 'savings_plan';
    PERFORM tco.require_exists(FOUND, 'savings plan', benefit_id);
    r := tco.cycle_range(cycle) * tstzrange(tco.granularity_trunc('hour', b.valid_from),
                                            tco.granularity_ceil('hour', b.valid_to));
    IF isempty(r) THEN
        RETURN 0;
    END IF;
    hours := (SELECT count(*) FROM generate_series(lower(r), upper(r) - interval '1 microsecond', interval '1 hour'));
    RETURN round(hours * b.initial_amount * (1 - b.plan_discount_rate), 2);
END $$;
COMMENT ON FUNCTION tco.savings_plan_fee(bigint, tco.billing_cycle) IS
'The commitment fee of a savings plan for one cycle: the hours of its term in the cycle times hourly_commitment * (1 - discount_rate), rounded half-up to 2 decimals. Bill it to the owner as an ordinary bill line.';

CREATE FUNCTION tco.share_benefit(benefit_id bigint, account_id bigint DEFAULT NULL, unit_id bigint DEFAULT NULL,
                                  at timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(benefit_id, 'benefit_id');
    PERFORM tco.require_arg(at, 'at');
    IF (account_id IS NULL) = (unit_id IS NULL) THEN
        RAISE EXCEPTION 'a share needs exactly one of account_id and unit_id'
            USING ERRCODE = '22023', HINT = 'Pass an account id to share with one account, or a unit id to share with a unit and its subtree.';
    END IF;
    IF account_id IS NOT NULL THEN
        PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = share_benefit.account_id), 'account', account_id);
    ELSE
        PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.org_unit u WHERE u.unit_id = share_benefit.unit_id), 'unit', unit_id);
    END IF;
    BEGIN
        INSERT INTO tco.benefit_share (benefit_id, account_id, unit_id, shared_at)
            VALUES (share_benefit.benefit_id, share_benefit.account_id, share_benefit.unit_id, at)
            RETURNING share_id INTO new_id;
    EXCEPTION WHEN unique_violation THEN
        RAISE EXCEPTION 'benefit % is already shared with % %', benefit_id,
                CASE WHEN account_id IS NOT NULL THEN 'account' ELSE 'unit' END, coalesce(account_id, unit_id)
            USING ERRCODE = '23505', HINT = 'A benefit has at most one active share per account or unit.';
    END;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.share_benefit(bigint, bigint, bigint, timestamptz) IS
'Shares a pool voucher, resource pack or savings plan with one account (account_id) or one unit and its whole subtree (unit_id), for lines starting at or after `at`. Returns the share id.';

CREATE FUNCTION tco.revoke_share(share_id bigint, at timestamptz DEFAULT now()) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s tco.benefit_share;
BEGIN
    PERFORM tco.require_arg(share_id, 'share_id');
    PERFORM tco.require_arg(at, 'at');
    SELECT * INTO s FROM tco.benefit_share x WHERE x.share_id = revoke_share.share_id;
    PERFORM tco.require_exists(FOUND, 'share', share_id);
    IF s.revoked_at IS NOT NULL THEN
        RAISE EXCEPTION 'share % was already revoked at %', share_id, s.revoked_at
            USING ERRCODE = 'TC022', HINT = 'A share is revoked once.';
    END IF;
    IF at < s.shared_at THEN
        RAISE EXCEPTION 'share % cannot be revoked at %, before it started at %', share_id, at, s.shared_at
            USING ERRCODE = '22023', HINT = 'Revoke at or after the share''s start.';
    END IF;
    -- The voucher first, then the share: the same lock order as
    -- tco.reclaim_voucher, so concurrent revokes and reclaims do not deadlock.
    PERFORM 1 FROM tco.benefit b WHERE b.benefit_id = s.benefit_id FOR UPDATE;
    UPDATE tco.benefit_share x SET revoked_at = at WHERE x.share_id = revoke_share.share_id AND x.revoked_at IS NULL
        RETURNING * INTO s;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'share % was revoked concurrently', share_id
            USING ERRCODE = 'TC022', HINT = 'A share is revoked once.';
    END IF;
    RETURN coalesce(s.reclaimed_amount, 0);
END $$;
COMMENT ON FUNCTION tco.revoke_share(bigint, timestamptz) IS
'Ends a share at `at`: lines starting from then on are not covered by it. When it was the last active share of a pool voucher, the voucher''s remaining balance goes back to the pool. Returns the amount reclaimed (0 if none).';

CREATE FUNCTION tco.reclaim_voucher(benefit_id bigint, at timestamptz DEFAULT now()) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b      tco.benefit;
    total  numeric := 0;
    sid    bigint;
BEGIN
    PERFORM tco.require_arg(benefit_id, 'benefit_id');
    PERFORM tco.require_arg(at, 'at');
    -- Lock first: a settlement using this voucher finishes before we look.
    SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = reclaim_voucher.benefit_id FOR UPDATE;
    PERFORM tco.require_exists(FOUND, 'benefit', benefit_id);
    IF b.pool_org_id IS NULL THEN
        RAISE EXCEPTION 'benefit % is not a pool voucher', benefit_id
            USING ERRCODE = 'TC020', HINT = 'Only vouchers issued from a voucher pool can be reclaimed; revoke shares of packs and plans with tco.revoke_share().';
    END IF;
    FOR sid IN SELECT s.share_id FROM tco.benefit_share s
                WHERE s.benefit_id = reclaim_voucher.benefit_id AND s.revoked_at IS NULL ORDER BY s.share_id
    LOOP
        total := total + tco.revoke_share(sid, greatest(at, (SELECT s.shared_at FROM tco.benefit_share s WHERE s.share_id = sid)));
    END LOOP;
    SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = reclaim_voucher.benefit_id;
    IF b.balance > 0 THEN
        UPDATE tco.benefit x SET balance = 0 WHERE x.benefit_id = b.benefit_id;
        INSERT INTO tco.voucher_pool_entry (org_id, event, amount, benefit_id)
            VALUES (b.pool_org_id, 'reclaim', b.balance, b.benefit_id);
        total := total + b.balance;
    END IF;
    RETURN total;
END $$;
COMMENT ON FUNCTION tco.reclaim_voucher(bigint, timestamptz) IS
'Revokes every active share of a pool voucher at `at` and returns its remaining balance to the pool. Returns the amount reclaimed.';

-- The same coverage rule as settlement (src/share.c), for tests and users.
CREATE FUNCTION tco.benefit_covers(benefit_id bigint, account_id bigint, at timestamptz) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (b.kind IN ('resource_pack', 'savings_plan') AND b.owner_account_id = benefit_covers.account_id)
        OR EXISTS (
            SELECT 1 FROM tco.benefit_share s
            JOIN tco.member m ON m.account_id = benefit_covers.account_id AND m.org_id = s.org_id
            WHERE s.benefit_id = b.benefit_id
              AND s.shared_at <= benefit_covers.at
              AND (s.revoked_at IS NULL OR benefit_covers.at < s.revoked_at)
              AND (s.account_id = m.account_id
                   OR m.unit_id IN (SELECT tco.unit_subtree(s.unit_id) WHERE s.unit_id IS NOT NULL)))
    FROM tco.benefit b
    WHERE b.benefit_id = benefit_covers.benefit_id
      AND (b.pool_org_id IS NOT NULL OR b.kind IN ('resource_pack', 'savings_plan'))
$$;
COMMENT ON FUNCTION tco.benefit_covers(bigint, bigint, timestamptz) IS
'Whether a pool voucher, resource pack or savings plan may pay a line of account_id starting at `at`, judged on the current unit tree and memberships (as settlement does). NULL for other benefits.';

-- 51_access_settlement.sql: a manager's pool vouchers are not its managed members' (R9).
ALTER POLICY benefit_reader_visible ON tco.benefit
    USING (owner_account_id IN (SELECT tco.visible_accounts())
           OR (kind IN ('voucher', 'stored_value_card') AND pool_org_id IS NULL
               AND owner_account_id IN (SELECT tco.paying_managers())));

-- Access to the sharing tables (src/sql/45_sharing.sql), following
-- 50_access.sql: tco_admin sees and writes everything; a tco_reader sees the
-- voucher pool (and its ledger) of the organization it administers, the
-- shares with its visible accounts, with its unit or a unit above it, or of
-- the organization it administers, and the benefits of those shares.

CREATE FUNCTION tco.administered_organizations() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 1 SET search_path = pg_catalog, pg_temp AS $$
    SELECT o.org_id FROM tco.organization o WHERE o.admin_account_id = tco.current_account_id()
$$;
COMMENT ON FUNCTION tco.administered_organizations() IS 'The organization whose admin account the invoking role is mapped to (empty if none).';

-- Units whose shares cover the invoking role's account: its unit and every
-- unit above it.
CREATE FUNCTION tco.shared_units_of_current_account() RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER ROWS 5 SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE up(unit_id) AS (
        SELECT m.unit_id FROM tco.member m WHERE m.account_id = tco.current_account_id()
        UNION
        SELECT u.parent_unit_id FROM up JOIN tco.org_unit u ON u.unit_id = up.unit_id
         WHERE u.parent_unit_id IS NOT NULL
    )
    SELECT unit_id FROM up
$$;
COMMENT ON FUNCTION tco.shared_units_of_current_account() IS 'The unit of the invoking role''s account and every unit above it: shares with these units cover the account.';

ALTER TABLE tco.voucher_pool ENABLE ROW LEVEL SECURITY;
CREATE POLICY voucher_pool_admin_all ON tco.voucher_pool TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY voucher_pool_reader_visible ON tco.voucher_pool FOR SELECT TO tco_reader
    USING (org_id IN (SELECT tco.administered_organizations()));
ALTER TABLE tco.voucher_pool_entry ENABLE ROW LEVEL SECURITY;
CREATE POLICY voucher_pool_entry_admin_all ON tco.voucher_pool_entry TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY voucher_pool_entry_reader_visible ON tco.voucher_pool_entry FOR SELECT TO tco_reader
    USING (org_id IN (SELECT tco.administered_organizations()));
ALTER TABLE tco.benefit_share ENABLE ROW LEVEL SECURITY;
CREATE POLICY benefit_share_admin_all ON tco.benefit_share TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY benefit_share_reader_visible ON tco.benefit_share FOR SELECT TO tco_reader
    USING (account_id IN (SELECT tco.visible_accounts()) OR org_id IN (SELECT tco.administered_organizations())
           OR unit_id IN (SELECT tco.shared_units_of_current_account()));

-- A reader also sees the benefits shared with it (through the shares it may
-- see), besides those tco.benefit_reader_visible (51_access_settlement.sql)
-- shows it.
CREATE POLICY benefit_reader_shared ON tco.benefit FOR SELECT TO tco_reader
    USING (benefit_id IN (SELECT s.benefit_id FROM tco.benefit_share s));

-- 98_dump.sql: identity sequences dumped; explicit share ids keep the sequence ahead.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('tco.voucher_pool_entry', 'entry_id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('tco.benefit_share', 'share_id')::regclass, '');
CREATE TRIGGER benefit_share_sync_identity AFTER INSERT ON tco.benefit_share
    FOR EACH STATEMENT EXECUTE FUNCTION tco.sync_identity('share_id');

-- 99_grants.sql
REVOKE ALL ON tco.voucher_pool, tco.voucher_pool_entry, tco.benefit_share, tco.voucher_pool_balance FROM PUBLIC;
REVOKE ALL ON SEQUENCE tco.voucher_pool_entry_entry_id_seq, tco.benefit_share_share_id_seq FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION tco.voucher_pool_entry_check(), tco.pool_voucher_check(), tco.unit_subtree(bigint),
    tco.benefit_share_check(), tco.fund_voucher_pool(bigint, numeric),
    tco.issue_pool_voucher(bigint, numeric, timestamptz, timestamptz, text),
    tco.grant_resource_pack(bigint, text, numeric, timestamptz, timestamptz),
    tco.grant_savings_plan(bigint, numeric, numeric, timestamptz, timestamptz, text),
    tco.savings_plan_fee(bigint, tco.billing_cycle), tco.share_benefit(bigint, bigint, bigint, timestamptz),
    tco.revoke_share(bigint, timestamptz), tco.reclaim_voucher(bigint, timestamptz),
    tco.benefit_covers(bigint, bigint, timestamptz), tco.administered_organizations(),
    tco.shared_units_of_current_account() FROM PUBLIC;
GRANT ALL ON tco.voucher_pool, tco.voucher_pool_entry, tco.benefit_share, tco.voucher_pool_balance TO tco_admin;
GRANT ALL ON SEQUENCE tco.voucher_pool_entry_entry_id_seq, tco.benefit_share_share_id_seq TO tco_admin;
GRANT EXECUTE ON FUNCTION tco.voucher_pool_entry_check(), tco.pool_voucher_check(), tco.unit_subtree(bigint),
    tco.benefit_share_check(), tco.fund_voucher_pool(bigint, numeric),
    tco.issue_pool_voucher(bigint, numeric, timestamptz, timestamptz, text),
    tco.grant_resource_pack(bigint, text, numeric, timestamptz, timestamptz),
    tco.grant_savings_plan(bigint, numeric, numeric, timestamptz, timestamptz, text),
    tco.savings_plan_fee(bigint, tco.billing_cycle), tco.share_benefit(bigint, bigint, bigint, timestamptz),
    tco.revoke_share(bigint, timestamptz), tco.reclaim_voucher(bigint, timestamptz),
    tco.benefit_covers(bigint, bigint, timestamptz), tco.administered_organizations(),
    tco.shared_units_of_current_account() TO tco_admin;
GRANT SELECT ON tco.voucher_pool, tco.voucher_pool_entry, tco.benefit_share TO tco_reader;
GRANT EXECUTE ON FUNCTION tco.administered_organizations(), tco.shared_units_of_current_account() TO tco_reader;

-- ==== invoices, alerts (R11), settlement concurrency
-- Trusteeship changes take the settlement lock shared (40_settlement.sql).
CREATE OR REPLACE FUNCTION tco.r14_trusteeship_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acct   bigint;
    until  timestamptz;
    moment timestamptz;
BEGIN
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

-- ---- from src/sql/42_invoice.sql
-- Invoices (R7, seeds 000 and 004): one invoice per statement at most.
--
-- Who may issue the invoice of a statement (the statement's payer is the
-- invoice's recipient, "billed to"):
--   * the payer itself: a trusteeship manager's invoice covers its managed
--     members, because its statement already holds their lines (R7); a
--     self-pay member may issue its own;
--   * the admin of the organization the statement belongs to (statement.org_id,
--     the payer's organization at settlement): "the organization admin account
--     can ... issue invoices to members" (seed 000, self-pay mode);
--   * nobody else (TC023).  A managed member has no statement of its own and
--     therefore no invoice; it cannot issue its manager's.
-- An invoice needs its statement PAID (55000 otherwise): cloud invoices are
-- issued for the amount actually paid, and a paid statement no longer changes,
-- so the invoice amount is final.  A statement with nothing due (due_total
-- 0.00, everything paid by discounts and benefits) gets no invoice (55000).
-- Invoices are append-only (TC008): a wrong invoice is corrected outside tco
-- (credit note), never rewritten.
--
-- Error codes: 22004 NULL argument, 23503 unknown statement or account,
-- 23505 statement already invoiced, 55000 statement unpaid or nothing due,
-- TC023 issuer not allowed, TC008 update/delete of an invoice.

CREATE TABLE tco.invoice (
    invoice_id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    statement_id         bigint NOT NULL REFERENCES tco.statement ON DELETE RESTRICT,
    issuer_account_id    bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    recipient_account_id bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    cycle                tco.billing_cycle NOT NULL,
    amount               numeric(20,2) NOT NULL,
    issued_at            timestamptz NOT NULL DEFAULT now(),
    issued_by            name NOT NULL DEFAULT current_user,
    CONSTRAINT invoice_one_per_statement UNIQUE (statement_id)
);
CREATE INDEX invoice_recipient ON tco.invoice (recipient_account_id, cycle);
COMMENT ON TABLE tco.invoice IS 'Invoices: at most one per statement (UNIQUE, also under concurrency). Issued by the statement''s payer or by the admin of its organization, for a paid statement with something due. Append-only.';
COMMENT ON COLUMN tco.invoice.statement_id IS 'The statement invoiced (its lines are the invoice lines, see tco.invoice_line).';
COMMENT ON COLUMN tco.invoice.issuer_account_id IS 'Account that issued it: the payer itself, or the admin of the statement''s organization.';
COMMENT ON COLUMN tco.invoice.recipient_account_id IS 'Account billed: the statement''s payer (a manager for its managed members'' consumption too).';
COMMENT ON COLUMN tco.invoice.cycle IS 'Billing cycle of the statement.';
COMMENT ON COLUMN tco.invoice.amount IS 'Invoiced amount: the statement''s due_total.';
COMMENT ON COLUMN tco.invoice.issued_by IS 'Database role that inserted it.';
SELECT pg_catalog.pg_extension_config_dump('tco.invoice', '');

-- Who may issue the invoice of a statement: its payer, or the admin of its
-- organization.
CREATE FUNCTION tco.may_issue_invoice(st tco.statement, issuer bigint) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT issuer = st.payer_account_id
        OR EXISTS (SELECT 1 FROM tco.organization o
                    WHERE o.org_id = st.org_id AND o.admin_account_id = issuer)
$$;
COMMENT ON FUNCTION tco.may_issue_invoice(tco.statement, bigint) IS 'Whether an account may issue the invoice of a statement: the statement''s payer, or the admin of the statement''s organization.';

-- BEFORE INSERT: fills recipient, cycle and amount from the statement and
-- enforces every rule, so a direct INSERT is checked like tco.issue_invoice.
CREATE FUNCTION tco.invoice_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st tco.statement;
BEGIN
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
COMMENT ON FUNCTION tco.invoice_check() IS 'BEFORE INSERT on tco.invoice: the statement exists and is paid with something due (55000), the issuer is its payer or its organization''s admin (TC023); fills recipient, cycle and amount from the statement.';
CREATE TRIGGER invoice_check BEFORE INSERT ON tco.invoice
    FOR EACH ROW EXECUTE FUNCTION tco.invoice_check();
CREATE TRIGGER invoice_append_only BEFORE UPDATE OR DELETE ON tco.invoice
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER invoice_no_truncate BEFORE TRUNCATE ON tco.invoice
    FOR EACH STATEMENT EXECUTE FUNCTION tco.r14_append_only();

CREATE FUNCTION tco.issue_invoice(statement_id bigint, issuer_account_id bigint DEFAULT NULL)
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
    SELECT * INTO existing FROM tco.invoice i WHERE i.statement_id = st.statement_id;
    IF FOUND THEN
        RAISE EXCEPTION 'statement % already has invoice % (issued by account %)',
                st.statement_id, existing.invoice_id, existing.issuer_account_id
            USING ERRCODE = '23505', HINT = 'A statement is invoiced once; look the invoice up in tco.invoice.';
    END IF;
    INSERT INTO tco.invoice (statement_id, issuer_account_id)
        VALUES (st.statement_id, issuer)
        RETURNING invoice_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.issue_invoice(bigint, bigint) IS
'Issues the invoice of a paid statement and returns its id. issuer_account_id defaults to the account of the invoking role (tco.account_login), else the statement''s payer. Errors: 23505 already invoiced, 55000 unpaid or nothing due, TC023 issuer not allowed (only the payer or its organization''s admin; R7: a managed member issues none).';

-- tco.invoice_line (the lines of each invoice) is in 57_billing_access.sql:
-- it filters by tco.visible_accounts(), defined in 50_access.sql.

-- ---- from src/sql/44_alert.sql
-- Alerts (R11): thresholds per payer on its available credit and on its
-- spending in a billing cycle (its own consumption plus its managed members').
--
-- Kinds:
--   available_credit  fires when tco.available_credit(account) < threshold;
--                     value = the available credit, cycle = the current cycle
--                     (tco.cycle_of(now())).
--   cycle_spending    fires when the payer's spending in a cycle >= threshold;
--                     value = tco.cycle_spending(account, cycle): the list
--                     amounts (before discounts and benefits) of the bill lines
--                     it pays in that cycle, its managed members' included.
-- Alerts are addressed to payers: a threshold cannot be set on an account
-- that is a managed member now (55000; its manager's thresholds cover it), and
-- a threshold of an account that has become a managed member is skipped.
--
-- Once per cycle: a threshold fires at most once per billing cycle (UNIQUE
-- (threshold_id, cycle)); it is armed again in the next cycle.  A fired alert
-- is a row of tco.alert and a NOTIFY on channel tco_alerts with a JSON payload
-- {alert_id, threshold_id, kind, account_id, threshold, value, cycle}, sent
-- when the transaction commits (nothing is sent for a rolled-back one).
--
-- When thresholds are evaluated (all in the transaction that made the change):
--   * tco.account UPDATE that changes balance or credit_limit (every ledger
--     movement updates the balance): available_credit of those accounts;
--   * tco.bill_line INSERT or UPDATE (statement-level, transition table):
--     cycle_spending of the lines' accounts and of their managers, for the
--     cycles of the lines;
--   * tco.settled_cycle INSERT (the end of tco.settle_cycle): both kinds, for
--     every payer with a statement of that cycle (spending from statements);
--   * creating or re-enabling a threshold: that threshold at once;
--   * tco.check_alerts(account_id) on demand.

CREATE TABLE tco.alert_threshold (
    threshold_id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    kind         text NOT NULL CONSTRAINT alert_threshold_kind CHECK (kind IN ('available_credit', 'cycle_spending')),
    threshold    numeric(20,2) NOT NULL,
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_threshold_once UNIQUE (account_id, kind, threshold),
    CONSTRAINT alert_threshold_spending_positive CHECK (kind <> 'cycle_spending' OR threshold > 0)
);
COMMENT ON TABLE tco.alert_threshold IS 'R11: alert thresholds of payers: available_credit (fires when the available credit falls below it) and cycle_spending (fires when the spending of a cycle, managed members included, reaches it). Each fires at most once per billing cycle.';
COMMENT ON COLUMN tco.alert_threshold.account_id IS 'The payer (not a managed member: its manager''s thresholds cover it).';
COMMENT ON COLUMN tco.alert_threshold.kind IS 'available_credit or cycle_spending.';
COMMENT ON COLUMN tco.alert_threshold.threshold IS 'available_credit: fires when the credit is below it; cycle_spending: fires when the spending reaches it (positive).';
COMMENT ON COLUMN tco.alert_threshold.enabled IS 'Disabled thresholds are not evaluated (thresholds with alerts cannot be deleted: disable them).';

CREATE TABLE tco.alert (
    alert_id     bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    threshold_id bigint NOT NULL REFERENCES tco.alert_threshold ON DELETE RESTRICT,
    account_id   bigint NOT NULL REFERENCES tco.account ON DELETE RESTRICT,
    kind         text NOT NULL,
    threshold    numeric(20,2) NOT NULL,
    value        numeric NOT NULL,
    cycle        tco.billing_cycle NOT NULL,
    fired_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_once_per_cycle UNIQUE (threshold_id, cycle)
);
CREATE INDEX alert_account ON tco.alert (account_id, cycle);
COMMENT ON TABLE tco.alert IS 'R11: fired alerts, append-only; each insert is also sent with NOTIFY tco_alerts (JSON payload). A threshold fires at most once per cycle.';
COMMENT ON COLUMN tco.alert.account_id IS 'The payer the alert is addressed to.';
COMMENT ON COLUMN tco.alert.value IS 'The available credit or the cycle spending that crossed the threshold.';
COMMENT ON COLUMN tco.alert.cycle IS 'available_credit: the cycle it fired in; cycle_spending: the cycle whose spending it measures.';
SELECT pg_catalog.pg_extension_config_dump('tco.alert_threshold', '');
SELECT pg_catalog.pg_extension_config_dump('tco.alert', '');

-- Spending of a payer in a cycle: list amounts of the lines it pays, its
-- managed members' included.  A cycle settled for the payer's organization is
-- read from its statement; an open one from the bill lines and the payer
-- function (R6).  Managers whose trusteeship ended up to a month before the
-- cycle can still pay lines in it (switch at the next boundary), so they are
-- searched too.
CREATE FUNCTION tco.cycle_spending(account_id bigint, cycle tco.billing_cycle) RETURNS numeric
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r tstzrange;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(cycle, 'cycle');
    IF EXISTS (SELECT 1 FROM tco.settled_cycle s
                WHERE s.cycle OPERATOR(tco.=) cycle_spending.cycle
                  AND (s.org_id IS NULL
                       OR s.org_id = (SELECT m.org_id FROM tco.member m WHERE m.account_id = cycle_spending.account_id))) THEN
        RETURN coalesce((SELECT sum(sl.list_amount) FROM tco.statement st
                         JOIN tco.statement_line sl ON sl.statement_id = st.statement_id
                         WHERE st.payer_account_id = cycle_spending.account_id
                           AND st.cycle OPERATOR(tco.=) cycle_spending.cycle), 0);
    END IF;
    r := tco.cycle_range(cycle);
    RETURN coalesce((
        SELECT sum(b.list_amount) FROM tco.bill_line b
        WHERE b.account_id IN (SELECT cycle_spending.account_id
                               UNION
                               SELECT t.member_account_id FROM tco.trusteeship t
                               WHERE t.management_account_id = cycle_spending.account_id
                                 AND tstzrange(t.established_at, t.ended_at)
                                     && tstzrange(lower(r) - interval '1 month', upper(r)))
          AND b.period_start >= lower(r) AND b.period_start < upper(r)
          AND tco.trusteeship_effective_payer(b.account_id, b.product_code, b.period_start) = cycle_spending.account_id), 0);
END $$;
COMMENT ON FUNCTION tco.cycle_spending(bigint, tco.billing_cycle) IS 'R11: spending of a payer in a cycle: list amounts (before discounts and benefits) of the bill lines it pays, its managed members'' included. From its statement once the cycle is settled.';

-- Evaluates the enabled thresholds of the given accounts and fires those
-- crossed and not yet fired in their cycle.  Returns the number fired.
CREATE FUNCTION tco.fire_alerts(account_ids bigint[], spending_cycle tco.billing_cycle,
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
          AND ((t.kind = 'available_credit' AND credit) OR (t.kind = 'cycle_spending' AND spending))
          AND NOT EXISTS (SELECT 1 FROM tco.alert a
                          WHERE a.threshold_id = t.threshold_id
                            AND a.cycle OPERATOR(tco.=) (CASE WHEN t.kind = 'available_credit' THEN now_cycle ELSE spending_cycle END))
          AND tco.manager_at(t.account_id, now()) IS NULL
        ORDER BY t.account_id, t.kind, t.threshold_id
    LOOP
        c := CASE WHEN th.kind = 'available_credit' THEN now_cycle ELSE spending_cycle END;
        IF last_key IS DISTINCT FROM th.account_id || '/' || th.kind THEN
            val := CASE WHEN th.kind = 'available_credit' THEN tco.available_credit(th.account_id)
                        ELSE tco.cycle_spending(th.account_id, spending_cycle) END;
            last_key := th.account_id || '/' || th.kind;
        END IF;
        IF (th.kind = 'available_credit' AND val < th.threshold)
           OR (th.kind = 'cycle_spending' AND val >= th.threshold) THEN
            INSERT INTO tco.alert (threshold_id, account_id, kind, threshold, value, cycle)
                VALUES (th.threshold_id, th.account_id, th.kind, th.threshold, val, c)
                ON CONFLICT ON CONSTRAINT alert_once_per_cycle DO NOTHING;
            GET DIAGNOSTICS n = ROW_COUNT;
            fired := fired + n;
        END IF;
    END LOOP;
    RETURN fired;
END $$;
COMMENT ON FUNCTION tco.fire_alerts(bigint[], tco.billing_cycle, boolean, boolean) IS 'Internal: evaluates the enabled thresholds of the accounts (available credit now; spending in spending_cycle) and fires each crossed one not yet fired in its cycle. Returns the number fired.';

CREATE FUNCTION tco.check_alerts(account_id bigint DEFAULT NULL, cycle tco.billing_cycle DEFAULT NULL)
RETURNS integer
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco.fire_alerts(CASE WHEN check_alerts.account_id IS NULL
                                THEN ARRAY(SELECT DISTINCT t.account_id FROM tco.alert_threshold t WHERE t.enabled)
                                ELSE ARRAY[check_alerts.account_id] END,
                           coalesce(check_alerts.cycle, tco.cycle_of(now())), true, true)
$$;
COMMENT ON FUNCTION tco.check_alerts(bigint, tco.billing_cycle) IS 'R11: evaluates the alert thresholds of one account (NULL: all) now: available credit, and spending in the cycle (default: the current one). Returns the number of alerts fired.';

CREATE FUNCTION tco.set_alert_threshold(account_id bigint, kind text, threshold numeric) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(account_id, 'account_id');
    PERFORM tco.require_arg(kind, 'kind');
    PERFORM tco.require_arg(threshold, 'threshold');
    IF threshold = 'NaN'::numeric OR threshold <> round(threshold, 2) THEN
        RAISE EXCEPTION 'alert threshold % has more than 2 decimals', threshold
            USING ERRCODE = '22023', HINT = 'Use an amount such as 100.00.';
    END IF;
    INSERT INTO tco.alert_threshold (account_id, kind, threshold)
        VALUES (set_alert_threshold.account_id, set_alert_threshold.kind, set_alert_threshold.threshold)
        ON CONFLICT ON CONSTRAINT alert_threshold_once DO UPDATE SET enabled = true
        RETURNING threshold_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.set_alert_threshold(bigint, text, numeric) IS 'R11: sets (or re-enables) an alert threshold of a payer: kind available_credit or cycle_spending. Evaluated at once. Returns its id. 55000 for a managed member (set it on its manager).';

-- BEFORE INSERT OR UPDATE on tco.alert_threshold: valid kind and amount, the
-- account exists and is a payer now.
CREATE FUNCTION tco.alert_threshold_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    mgr bigint;
BEGIN
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
CREATE TRIGGER alert_threshold_check BEFORE INSERT OR UPDATE ON tco.alert_threshold
    FOR EACH ROW EXECUTE FUNCTION tco.alert_threshold_check();

-- A new or re-enabled threshold is evaluated at once.
CREATE FUNCTION tco.alert_threshold_evaluate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.enabled THEN
        PERFORM tco.fire_alerts(ARRAY[NEW.account_id], tco.cycle_of(now()),
                                NEW.kind = 'available_credit', NEW.kind = 'cycle_spending');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER alert_threshold_evaluate AFTER INSERT OR UPDATE ON tco.alert_threshold
    FOR EACH ROW EXECUTE FUNCTION tco.alert_threshold_evaluate();

-- The JSON payload sent for an alert.
CREATE FUNCTION tco.alert_payload(a tco.alert) RETURNS json
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.json_build_object(
        'alert_id', a.alert_id, 'threshold_id', a.threshold_id, 'kind', a.kind,
        'account_id', a.account_id, 'threshold', a.threshold, 'value', a.value,
        'cycle', a.cycle::text)
$$;
COMMENT ON FUNCTION tco.alert_payload(tco.alert) IS 'R11: the JSON payload of an alert as sent on channel tco_alerts: alert_id, threshold_id, kind, account_id, threshold, value, cycle.';

-- Every fired alert is sent on channel tco_alerts (delivered at commit).
CREATE FUNCTION tco.alert_notify() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('tco_alerts', tco.alert_payload(NEW)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER alert_notify AFTER INSERT ON tco.alert
    FOR EACH ROW EXECUTE FUNCTION tco.alert_notify();
CREATE TRIGGER alert_append_only BEFORE UPDATE OR DELETE ON tco.alert
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();

-- Available credit: after balance or credit-limit changes.
CREATE FUNCTION tco.alert_account_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
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
CREATE TRIGGER alert_account AFTER UPDATE ON tco.account
    REFERENCING OLD TABLE AS old_accounts NEW TABLE AS new_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION tco.alert_account_trigger();

-- Spending: after bill lines arrive or change, for their accounts and the
-- managers that may pay them, per cycle of the lines.
CREATE FUNCTION tco.alert_bill_line_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
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
CREATE TRIGGER alert_bill_line_insert AFTER INSERT ON tco.bill_line
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.alert_bill_line_trigger();
CREATE TRIGGER alert_bill_line_update AFTER UPDATE ON tco.bill_line
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION tco.alert_bill_line_trigger();

-- After a settlement: every payer with a statement in the settled scope.
CREATE FUNCTION tco.alert_settled_trigger() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids bigint[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM tco.alert_threshold t WHERE t.enabled) THEN
        RETURN NULL;
    END IF;
    ids := ARRAY(SELECT DISTINCT s.payer_account_id FROM tco.statement s
                 WHERE s.cycle OPERATOR(tco.=) NEW.cycle AND (NEW.org_id IS NULL OR s.org_id = NEW.org_id)
                 ORDER BY 1);
    PERFORM tco.fire_alerts(ids, NEW.cycle, true, true);
    RETURN NULL;
END $$;
CREATE TRIGGER alert_settled AFTER INSERT ON tco.settled_cycle
    FOR EACH ROW EXECUTE FUNCTION tco.alert_settled_trigger();

-- ---- from src/sql/57_billing_access.sql
-- Access to invoices and alerts (DESIGN section 8, same scheme as
-- 50_access.sql): tco_admin sees and writes every row; tco_reader reads the
-- rows of its visible accounts only (invoices by recipient, alerts and
-- thresholds by account).

DO $rls$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
            ('invoice',         'recipient_account_id IN (SELECT tco.visible_accounts())'),
            ('alert',           'account_id IN (SELECT tco.visible_accounts())'),
            ('alert_threshold', 'account_id IN (SELECT tco.visible_accounts())')) AS v(tab, reader_qual)
    LOOP
        EXECUTE pg_catalog.format('ALTER TABLE tco.%I ENABLE ROW LEVEL SECURITY', t.tab);
        EXECUTE pg_catalog.format('CREATE POLICY %I ON tco.%I TO tco_admin USING (true) WITH CHECK (true)',
                                  t.tab || '_admin_all', t.tab);
        EXECUTE pg_catalog.format('CREATE POLICY %I ON tco.%I FOR SELECT TO tco_reader USING (%s)',
                                  t.tab || '_reader_visible', t.tab, t.reader_qual);
    END LOOP;
END
$rls$;

-- The lines of each invoice.  The view runs with its owner's rights (it reads
-- tco.statement_line), so it filters rows itself: tco_admin sees all, anyone
-- else the invoices of its visible accounts.
CREATE VIEW tco.invoice_line AS
SELECT i.invoice_id, i.statement_id, i.cycle, i.recipient_account_id, sl.account_id, sl.product_code,
       sl.account_id <> i.recipient_account_id AS for_member,
       sl.list_amount, sl.discount_amount, sl.benefit_amount, sl.due_amount, sl.lines
FROM tco.invoice i
JOIN tco.statement_line sl ON sl.statement_id = i.statement_id
WHERE pg_catalog.pg_has_role(tco.invoking_role(), 'tco_admin', 'USAGE')
   OR i.recipient_account_id IN (SELECT tco.visible_accounts());
COMMENT ON VIEW tco.invoice_line IS 'Lines of each invoice: its statement''s lines per consuming account and product (a manager''s invoice lists its managed members'' consumption). A tco_reader sees the invoices of its visible accounts only.';
COMMENT ON COLUMN tco.invoice_line.recipient_account_id IS 'Account billed (the statement''s payer).';
COMMENT ON COLUMN tco.invoice_line.account_id IS 'Consuming account of the line.';
COMMENT ON COLUMN tco.invoice_line.for_member IS 'True when the consumption is another account''s (a managed member on its manager''s invoice).';
COMMENT ON COLUMN tco.invoice_line.list_amount IS 'List amount (exact).';
COMMENT ON COLUMN tco.invoice_line.discount_amount IS 'Contract discount (exact).';
COMMENT ON COLUMN tco.invoice_line.benefit_amount IS 'Paid by benefits (exact).';
COMMENT ON COLUMN tco.invoice_line.due_amount IS 'Due amount (exact); the invoice amount is the sum rounded half-up to 2 decimals.';
COMMENT ON COLUMN tco.invoice_line.lines IS 'Number of bill lines.';

-- Identity sequences and explicit ids, as in 98_dump.sql.
SELECT pg_catalog.pg_extension_config_dump('tco.invoice_invoice_id_seq', '');
CREATE TRIGGER invoice_sync_identity AFTER INSERT ON tco.invoice FOR EACH STATEMENT EXECUTE FUNCTION tco.sync_identity('invoice_id');
SELECT pg_catalog.pg_extension_config_dump('tco.alert_threshold_threshold_id_seq', '');
CREATE TRIGGER alert_threshold_sync_identity AFTER INSERT ON tco.alert_threshold FOR EACH STATEMENT EXECUTE FUNCTION tco.sync_identity('threshold_id');
SELECT pg_catalog.pg_extension_config_dump('tco.alert_alert_id_seq', '');
CREATE TRIGGER alert_sync_identity AFTER INSERT ON tco.alert FOR EACH STATEMENT EXECUTE FUNCTION tco.sync_identity('alert_id');

-- Privileges as in 99_grants.sql.
REVOKE ALL ON tco.invoice, tco.invoice_line, tco.alert_threshold, tco.alert FROM PUBLIC;
REVOKE ALL ON SEQUENCE tco.invoice_invoice_id_seq, tco.alert_threshold_threshold_id_seq, tco.alert_alert_id_seq FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION tco.may_issue_invoice(tco.statement, bigint),
    tco.invoice_check(),
    tco.issue_invoice(bigint, bigint),
    tco.cycle_spending(bigint, tco.billing_cycle),
    tco.fire_alerts(bigint[], tco.billing_cycle, boolean, boolean),
    tco.check_alerts(bigint, tco.billing_cycle),
    tco.set_alert_threshold(bigint, text, numeric),
    tco.alert_threshold_check(),
    tco.alert_threshold_evaluate(),
    tco.alert_payload(tco.alert),
    tco.alert_notify(),
    tco.alert_account_trigger(),
    tco.alert_bill_line_trigger(),
    tco.alert_settled_trigger()
    FROM PUBLIC;
GRANT ALL ON tco.invoice, tco.invoice_line, tco.alert_threshold, tco.alert TO tco_admin;
GRANT ALL ON SEQUENCE tco.invoice_invoice_id_seq, tco.alert_threshold_threshold_id_seq, tco.alert_alert_id_seq TO tco_admin;
GRANT EXECUTE ON FUNCTION tco.may_issue_invoice(tco.statement, bigint),
    tco.invoice_check(),
    tco.issue_invoice(bigint, bigint),
    tco.cycle_spending(bigint, tco.billing_cycle),
    tco.fire_alerts(bigint[], tco.billing_cycle, boolean, boolean),
    tco.check_alerts(bigint, tco.billing_cycle),
    tco.set_alert_threshold(bigint, text, numeric),
    tco.alert_threshold_check(),
    tco.alert_threshold_evaluate(),
    tco.alert_payload(tco.alert),
    tco.alert_notify(),
    tco.alert_account_trigger(),
    tco.alert_bill_line_trigger(),
    tco.alert_settled_trigger()
    TO tco_admin;
GRANT SELECT ON tco.invoice, tco.invoice_line, tco.alert, tco.alert_threshold TO tco_reader;

-- ==== settlement speed (issue 5): packed per-line settlement record
-- tco.settled_line and tco.benefit_use (one row per line / use) become views
-- over tco.settled_pack (one row per run of lines of one statement, account
-- and product, with per-line arrays).  Rows written under 1.0 are moved into
-- packs (benefit use ids are renumbered; their order per line is kept).
CREATE TABLE tco.settled_pack (
    pack_id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    statement_id      bigint NOT NULL,
    payer_account_id  bigint NOT NULL,
    account_id        bigint NOT NULL,
    product_code      text NOT NULL,
    cycle             tco.billing_cycle NOT NULL,
    settled_at        timestamptz NOT NULL DEFAULT now(),
    line_ids          bigint[] NOT NULL,
    list_amounts      bigint[] NOT NULL,
    discount_rates    integer[] NOT NULL,
    discount_sources  smallint[] NOT NULL,
    discount_ids      bigint[] NOT NULL,
    discount_amounts  bigint[] NOT NULL,
    benefit_amounts   bigint[] NOT NULL,
    use_line_ids      bigint[] NOT NULL,
    use_benefit_ids   bigint[] NOT NULL,
    use_amounts       bigint[] NOT NULL,
    CONSTRAINT settled_pack_lines CHECK (
        cardinality(line_ids) > 0 AND array_ndims(line_ids) = 1
        AND cardinality(list_amounts) = cardinality(line_ids)
        AND cardinality(discount_rates) = cardinality(line_ids)
        AND cardinality(discount_sources) = cardinality(line_ids)
        AND cardinality(discount_ids) = cardinality(line_ids)
        AND cardinality(discount_amounts) = cardinality(line_ids)
        AND cardinality(benefit_amounts) = cardinality(line_ids)),
    CONSTRAINT settled_pack_uses CHECK (
        cardinality(use_benefit_ids) = cardinality(use_line_ids)
        AND cardinality(use_amounts) = cardinality(use_line_ids)
        AND cardinality(use_line_ids) < 65536)
) WITH (toast_tuple_target = 8160);
CREATE INDEX settled_pack_statement ON tco.settled_pack (statement_id);
CREATE INDEX settled_pack_account ON tco.settled_pack (account_id, product_code, cycle);
COMMENT ON TABLE tco.settled_pack IS 'How settled bill lines were priced, packed per run of lines of one consuming account and product on one statement: per-line arrays (amounts in int8 micro-units) and the benefit uses of those lines in use order. Read it through the views tco.settled_line and tco.benefit_use.';
COMMENT ON COLUMN tco.settled_pack.account_id IS 'The consuming account of every line of the pack.';
COMMENT ON COLUMN tco.settled_pack.product_code IS 'The product of every line of the pack.';
COMMENT ON COLUMN tco.settled_pack.cycle IS 'The settled cycle (the cycle of every line''s period start).';
COMMENT ON COLUMN tco.settled_pack.list_amounts IS 'Per line: list amount in micro-units (due = list - discount - benefit).';
COMMENT ON COLUMN tco.settled_pack.discount_rates IS 'Per line: contract discount rate in millionths.';
COMMENT ON COLUMN tco.settled_pack.discount_sources IS 'Per line: 0 none, 1 own, 2 admin, 3 manager, 4 entity, 5 own_new_trusteeship.';
COMMENT ON COLUMN tco.settled_pack.discount_ids IS 'Per line: the tco.contract_discount row used, 0 for none.';
COMMENT ON COLUMN tco.settled_pack.use_line_ids IS 'Benefit uses in use order: the line paid; use_benefit_ids and use_amounts (micro-units) run in parallel.';



INSERT INTO tco.settled_pack (statement_id, payer_account_id, account_id, product_code, cycle, settled_at,
                              line_ids, list_amounts, discount_rates, discount_sources, discount_ids,
                              discount_amounts, benefit_amounts, use_line_ids, use_benefit_ids, use_amounts)
WITH g AS (
    SELECT sl.statement_id, sl.payer_account_id, b.account_id, b.product_code, st.cycle, st.created_at,
           array_agg(sl.line_id ORDER BY b.period_start, sl.line_id) AS line_ids,
           array_agg((sl.list_amount * 1000000)::bigint ORDER BY b.period_start, sl.line_id) AS li,
           array_agg((sl.discount_rate * 1000000)::integer ORDER BY b.period_start, sl.line_id) AS rate,
           array_agg((pg_catalog.array_position('{none,own,admin,manager,entity,own_new_trusteeship}'::text[],
                                                sl.discount_source) - 1)::smallint ORDER BY b.period_start, sl.line_id) AS src,
           array_agg(coalesce(sl.discount_id, 0) ORDER BY b.period_start, sl.line_id) AS did,
           array_agg((sl.discount_amount * 1000000)::bigint ORDER BY b.period_start, sl.line_id) AS di,
           array_agg((sl.benefit_amount * 1000000)::bigint ORDER BY b.period_start, sl.line_id) AS be
    FROM tco.settled_line sl
    JOIN tco.bill_line b ON b.line_id = sl.line_id
    JOIN tco.statement st ON st.statement_id = sl.statement_id
    GROUP BY sl.statement_id, sl.payer_account_id, b.account_id, b.product_code, st.cycle, st.created_at
)
SELECT g.statement_id, g.payer_account_id, g.account_id, g.product_code, g.cycle, g.created_at,
       g.line_ids, g.li, g.rate, g.src, g.did, g.di, g.be,
       coalesce(u.ul, '{}'), coalesce(u.ub, '{}'), coalesce(u.ua, '{}')
FROM g
LEFT JOIN LATERAL (
    SELECT array_agg(bu.line_id ORDER BY bu.use_id) AS ul, array_agg(bu.benefit_id ORDER BY bu.use_id) AS ub,
           array_agg((bu.amount * 1000000)::bigint ORDER BY bu.use_id) AS ua
    FROM tco.benefit_use bu
    WHERE bu.statement_id = g.statement_id AND bu.line_id = ANY (g.line_ids)
) u ON true
ORDER BY g.statement_id, g.account_id, g.product_code;

-- leave the extension first: that also takes them out of what pg_dump saves
-- (pg_extension.extconfig), which a plain DROP TABLE would not
ALTER EXTENSION tco DROP SEQUENCE tco.benefit_use_use_id_seq;
ALTER EXTENSION tco DROP TABLE tco.benefit_use;
ALTER EXTENSION tco DROP TABLE tco.settled_line;
DROP TABLE tco.benefit_use;
DROP TABLE tco.settled_line;

CREATE VIEW tco.settled_line WITH (security_invoker = true) AS
SELECT u.line_id, p.statement_id, p.payer_account_id,
       (u.li * 0.000001)::numeric(20,6) AS list_amount,
       (u.rate * 0.000001)::numeric(7,6) AS discount_rate,
       ('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[u.src + 1] AS discount_source,
       nullif(u.did, 0) AS discount_id,
       (u.di * 0.000001)::numeric(20,6) AS discount_amount,
       (u.be * 0.000001)::numeric(20,6) AS benefit_amount,
       ((u.li - u.di - u.be) * 0.000001)::numeric(20,6) AS due_amount
FROM tco.settled_pack p
CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                          p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be);
COMMENT ON VIEW tco.settled_line IS 'How each settled bill line was priced; each line is on exactly one statement. list_amount = discount_amount + benefit_amount + due_amount exactly. A view over tco.settled_pack.';
COMMENT ON COLUMN tco.settled_line.discount_source IS 'Where the rate came from (R8): own, admin (self-pay, same entity as the admin), manager (legacy trusteeship), entity (new trusteeship), own_new_trusteeship, or none.';
COMMENT ON COLUMN tco.settled_line.discount_id IS 'The tco.contract_discount row used (NULL: none).';

CREATE VIEW tco.benefit_use WITH (security_invoker = true) AS
SELECT p.pack_id * 65536 + u.n AS use_id, u.benefit_id, u.line_id, p.statement_id,
       (u.a * 0.000001)::numeric(20,6) AS amount, p.settled_at AS at
FROM tco.settled_pack p
CROSS JOIN LATERAL unnest(p.use_benefit_ids, p.use_line_ids, p.use_amounts) WITH ORDINALITY AS u(benefit_id, line_id, a, n);
COMMENT ON VIEW tco.benefit_use IS 'Append-only record of every benefit redemption (R14): which benefit paid how much of which line, on which statement. A view over tco.settled_pack; use_id orders the uses (a line''s uses in the order they were made).';

SELECT pg_catalog.pg_extension_config_dump('tco.settled_pack', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('tco.settled_pack', 'pack_id')::regclass, '');

CREATE TRIGGER r14_benefit_use_append_only INSTEAD OF UPDATE OR DELETE ON tco.benefit_use
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_settled_line_append_only INSTEAD OF UPDATE OR DELETE ON tco.settled_line
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_settled_pack_append_only BEFORE UPDATE OR DELETE ON tco.settled_pack
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();

CREATE OR REPLACE FUNCTION tco.r14_bill_line_update_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bad record;
BEGIN
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

CREATE OR REPLACE FUNCTION tco.explain_line(line_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bl tco.bill_line;
    sl tco.settled_line;
    st tco.statement;
BEGIN
    PERFORM tco.require_arg(line_id, 'line_id');
    SELECT * INTO bl FROM tco.bill_line b WHERE b.line_id = explain_line.line_id;
    PERFORM tco.require_exists(FOUND, 'bill line', line_id);
    -- the pack of the line's account, product and cycle (tco.settled_line
    -- would unnest every pack)
    SELECT u.line_id, p.statement_id, p.payer_account_id,
           (u.li * 0.000001)::numeric(20,6),
           (u.rate * 0.000001)::numeric(7,6),
           ('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[u.src + 1],
           nullif(u.did, 0),
           (u.di * 0.000001)::numeric(20,6),
           (u.be * 0.000001)::numeric(20,6),
           ((u.li - u.di - u.be) * 0.000001)::numeric(20,6)
      INTO sl
      FROM tco.settled_pack p
      CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                                p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
     WHERE p.account_id = bl.account_id AND p.product_code = bl.product_code
       AND p.cycle OPERATOR(tco.=) tco.cycle_of(bl.period_start) AND u.line_id = bl.line_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object(
            'line_id', bl.line_id, 'settled', false, 'cycle', tco.cycle_of(bl.period_start)::text,
            'list_amount', bl.list_amount,
            'payer', tco.explain_payer(bl.account_id, bl.product_code, bl.period_start));
    END IF;
    SELECT * INTO st FROM tco.statement s WHERE s.statement_id = sl.statement_id;
    RETURN jsonb_build_object(
        'line_id', bl.line_id,
        'settled', true,
        'cycle', st.cycle::text,
        'account_id', bl.account_id,
        'product_code', bl.product_code,
        'period_start', bl.period_start,
        'statement_id', sl.statement_id,
        'payer_account_id', sl.payer_account_id,
        'payer', tco.explain_payer(bl.account_id, bl.product_code, bl.period_start),
        'list_amount', sl.list_amount,
        'discount', jsonb_build_object('rate', sl.discount_rate, 'source', sl.discount_source,
                                       'discount_id', sl.discount_id, 'amount', sl.discount_amount),
        'benefits', coalesce((SELECT jsonb_agg(jsonb_build_object('benefit_id', u.benefit_id, 'kind', b.kind,
                                                                  'owner_account_id', b.owner_account_id,
                                                                  'amount', u.amount) ORDER BY u.use_id)
                              FROM (SELECT p.pack_id * 65536 + x.n AS use_id, x.benefit_id,
                                           (x.a * 0.000001)::numeric(20,6) AS amount
                                      FROM tco.settled_pack p
                                      CROSS JOIN LATERAL unnest(p.use_benefit_ids, p.use_line_ids, p.use_amounts)
                                                 WITH ORDINALITY AS x(benefit_id, line_id, a, n)
                                     WHERE p.account_id = bl.account_id AND p.product_code = bl.product_code
                                       AND p.cycle OPERATOR(tco.=) tco.cycle_of(bl.period_start)
                                       AND x.line_id = bl.line_id) u
                              JOIN tco.benefit b USING (benefit_id)), '[]'::jsonb),
        'benefit_amount', sl.benefit_amount,
        'due_amount', sl.due_amount);
END $$;
ALTER FUNCTION tco.r14_bill_line_update_check() SECURITY DEFINER;
ALTER FUNCTION tco.r14_bill_line_delete_check() SECURITY DEFINER;

ALTER TABLE tco.settled_pack ENABLE ROW LEVEL SECURITY;
CREATE POLICY settled_pack_admin_all ON tco.settled_pack TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY settled_pack_reader_visible ON tco.settled_pack FOR SELECT TO tco_reader
    USING (payer_account_id IN (SELECT tco.visible_payers()));

CREATE FUNCTION tco.settle_slice(a anyarray, lo integer, hi integer) RETURNS anyarray
AS 'MODULE_PATHNAME', 'tco_settle_slice'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION tco.settle_slice(anyarray, integer, integer) IS
'a[lo:hi] of a one-dimensional array of a fixed-length type without NULLs, by one copy (tco.settle_cycle writes its packs with it).';
REVOKE EXECUTE ON FUNCTION tco.settle_slice(anyarray, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.settle_slice(anyarray, integer, integer) TO tco_admin;

REVOKE ALL ON tco.settled_pack, tco.settled_line, tco.benefit_use FROM PUBLIC;
REVOKE ALL ON SEQUENCE tco.settled_pack_pack_id_seq FROM PUBLIC;
GRANT ALL ON tco.settled_pack, tco.settled_line, tco.benefit_use TO tco_admin;
GRANT ALL ON SEQUENCE tco.settled_pack_pack_id_seq TO tco_admin;
GRANT SELECT ON tco.settled_pack, tco.settled_line, tco.benefit_use TO tco_reader;

-- tco 1.3 -> 1.4: after a cycle closes (DESIGN section 5, README "After a
-- cycle closes"): late lines, corrections, the benefits a correction gives
-- back, commitment fees billed by settlement.  Every change made to src/sql
-- after 1.3 is repeated here, so that ALTER EXTENSION tco UPDATE gives the
-- same extension as a fresh 1.4 install (scripts/test_upgrade.sh compares
-- the two catalogs fact by fact).
\echo Use "ALTER EXTENSION tco UPDATE TO '1.4'" to load this file. \quit

-- Names resolve in pg_catalog only while this script runs (src/sql/00_guard.sql
-- says why); every tco object below is schema-qualified.
SET LOCAL search_path = pg_catalog, pg_temp;

-- ==== 30_trusteeship.sql: correction lines on tco.bill_line
ALTER TABLE tco.bill_line ADD COLUMN corrects_line_id bigint, ADD COLUMN correction_reason text;
-- a detached partition (tco.detach_cycle) gets the columns too, so that it
-- can be attached again
DO $detached$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT relname FROM tco.bill_line_cycle WHERE detached LOOP
        IF pg_catalog.to_regclass(pg_catalog.format('tco.%I', r.relname)) IS NOT NULL THEN
            EXECUTE pg_catalog.format('ALTER TABLE tco.%I ADD COLUMN corrects_line_id bigint, ADD COLUMN correction_reason text', r.relname);
        END IF;
    END LOOP;
END
$detached$;
ALTER TABLE tco.bill_line DROP CONSTRAINT bill_line_amount_not_negative;
ALTER TABLE tco.bill_line ADD CONSTRAINT bill_line_amount_not_negative CHECK (list_amount >= 0 OR corrects_line_id IS NOT NULL);
ALTER TABLE tco.bill_line ADD CONSTRAINT bill_line_correction CHECK ((corrects_line_id IS NULL) = (correction_reason IS NULL)
                                           AND corrects_line_id IS DISTINCT FROM line_id);
COMMENT ON COLUMN tco.bill_line.corrects_line_id IS 'Set on a correction line: the original line whose amount it corrects by its signed list amount (tco.correct_bill_line; README "After a cycle closes"). Only correction lines may be negative.';
COMMENT ON COLUMN tco.bill_line.correction_reason IS 'Why a correction line was made (required on correction lines).';

-- ==== 40_settlement.sql: the price of a resource pack; R14's hint; explain_line
ALTER TABLE tco.benefit ADD COLUMN price numeric(20,2);
ALTER TABLE tco.benefit ADD CONSTRAINT benefit_pack_price CHECK (price IS NULL OR (kind = 'resource_pack' AND price >= 0));
COMMENT ON COLUMN tco.benefit.price IS 'Resource packs only: what the owner pays for the pack, billed by the settlement of the cycle its term starts in (NULL: not billed by tco).';

-- ==== 40_settlement.sql: compact packs (README "Settlement speed"): a pack
-- written since 1.4 has one rate, source, discount id and benefit amount when
-- they are the same for all its lines, and no discount amounts (recomputed by
-- the views);
-- packs written before keep their per-line arrays, read as before
ALTER TABLE tco.settled_pack DROP CONSTRAINT settled_pack_lines;
ALTER TABLE tco.settled_pack ADD CONSTRAINT settled_pack_lines CHECK (
        cardinality(line_ids) > 0 AND array_ndims(line_ids) = 1
        AND cardinality(list_amounts) = cardinality(line_ids)
        AND cardinality(discount_rates) IN (1, cardinality(line_ids))
        AND cardinality(discount_sources) IN (1, cardinality(line_ids))
        AND cardinality(discount_ids) IN (1, cardinality(line_ids))
        AND cardinality(discount_amounts) IN (0, cardinality(line_ids))
        AND cardinality(benefit_amounts) IN (1, cardinality(line_ids)));
COMMENT ON COLUMN tco.settled_pack.discount_rates IS 'Per line: contract discount rate in millionths; one element when it is the same for every line of the pack (packs written since 1.4).';
COMMENT ON COLUMN tco.settled_pack.discount_sources IS 'Per line: 0 none, 1 own, 2 admin, 3 manager, 4 entity, 5 own_new_trusteeship; one element when the same for every line.';
COMMENT ON COLUMN tco.settled_pack.discount_ids IS 'Per line: the tco.contract_discount row used, 0 for none; one element when the same for every line.';
COMMENT ON COLUMN tco.settled_pack.discount_amounts IS 'Per line: discount in micro-units (packs written before 1.4); empty since 1.4: list x rate rounded half-up on the magnitude, exactly as settlement computed it (the views recompute it).';
COMMENT ON COLUMN tco.settled_pack.benefit_amounts IS 'Per line: what benefits paid, in micro-units; one element when the same for every line (packs written since 1.4).';
CREATE OR REPLACE VIEW tco.settled_line WITH (security_invoker = true) AS
SELECT u.line_id, p.statement_id, p.payer_account_id,
       (u.li * 0.000001)::numeric(20,6) AS list_amount,
       (d.rate * 0.000001)::numeric(7,6) AS discount_rate,
       ('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[d.src + 1] AS discount_source,
       nullif(d.did, 0) AS discount_id,
       (d.di * 0.000001)::numeric(20,6) AS discount_amount,
       (d.be * 0.000001)::numeric(20,6) AS benefit_amount,
       ((u.li - d.di - d.be) * 0.000001)::numeric(20,6) AS due_amount
FROM tco.settled_pack p
CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                          p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
-- packs written since 1.4 (src/settle_write.c) have one rate, source,
-- discount id and benefit amount for all their lines when they are the same
-- (the shorter arrays unnest padded with NULLs) and no discount amounts: list
-- x rate rounded half-up on the magnitude, exactly as settlement computed it
CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                           coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                           coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d;

CREATE OR REPLACE FUNCTION tco.r14_settled_error(c tco.billing_cycle, what text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'R14: billing cycle % is settled: %', c, what
        USING ERRCODE = 'TC008',
              HINT = 'A settled cycle is never rewritten: correct a settled line with tco.correct_bill_line (README "After a cycle closes").';
END $$;
CREATE OR REPLACE FUNCTION tco.explain_line(line_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    detached_cycle tco.billing_cycle;
    bl tco.bill_line;
    sl tco.settled_line;
    st tco.statement;
    after_close jsonb;
BEGIN
    PERFORM tco.require_arg(line_id, 'line_id');
    -- the line's period start from tco.bill_line_id reads one partition
    -- (36_partition.sql); lines restored without it are found all the same
    SELECT * INTO bl FROM tco.bill_line b
     WHERE b.line_id = explain_line.line_id
       AND b.period_start = (SELECT k.period_start FROM tco.bill_line_id k WHERE k.line_id = explain_line.line_id);
    IF NOT FOUND THEN
        SELECT * INTO bl FROM tco.bill_line b WHERE b.line_id = explain_line.line_id;
    END IF;
    IF NOT FOUND THEN
        SELECT r.cycle INTO detached_cycle
          FROM tco.bill_line_id k
          JOIN tco.bill_line_cycle r ON r.detached AND k.period_start >= r.range_start AND k.period_start < r.range_end
         WHERE k.line_id = explain_line.line_id;
        IF FOUND THEN
            RAISE EXCEPTION 'bill line % is in billing cycle %, whose partition of tco.bill_line is detached', line_id, detached_cycle
                USING ERRCODE = '55000',
                      HINT = pg_catalog.format('Attach it again with SELECT tco.attach_cycle(%L);', detached_cycle);
        END IF;
    END IF;
    PERFORM tco.require_exists(FOUND, 'bill line', line_id);
    -- a late line or a correction (41_late.sql): its charge cycle, when it
    -- arrived, which statement billed it, what it corrects
    SELECT jsonb_build_object('charge_cycle', k.charge_cycle::text, 'arrived_at', k.arrived_at,
                              'billing_cycle', k.billing_cycle::text, 'billed_on_statement', k.statement_id,
                              'billed_at', k.billed_at,
                              'why', CASE WHEN k.statement_id IS NULL
                                          THEN 'it arrived after its cycle was settled; the next settlement of a later cycle bills it'
                                          ELSE 'it arrived after its cycle was settled and was billed on the statement of the first cycle settled after it arrived, priced as of its own period' END)
      INTO after_close FROM tco.late_line k WHERE k.line_id = bl.line_id;
    IF bl.corrects_line_id IS NOT NULL THEN
        after_close := coalesce(after_close, '{}'::jsonb)
                       || jsonb_build_object('corrects_line_id', bl.corrects_line_id, 'correction_reason', bl.correction_reason);
    END IF;
    after_close := CASE WHEN after_close IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('late', after_close) END;
    -- the pack of the line's account, product and cycle (tco.settled_line
    -- would unnest every pack)
    SELECT u.line_id, p.statement_id, p.payer_account_id,
           (u.li * 0.000001)::numeric(20,6),
           (d.rate * 0.000001)::numeric(7,6),
           ('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[d.src + 1],
           nullif(d.did, 0),
           (d.di * 0.000001)::numeric(20,6),
           (d.be * 0.000001)::numeric(20,6),
           ((u.li - d.di - d.be) * 0.000001)::numeric(20,6)
      INTO sl
      FROM tco.settled_pack p
      CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                                p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
      -- a pack's compact arrays (tco.settled_line)
      CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                                 coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
      CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                                 coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d
     WHERE p.account_id = bl.account_id AND p.product_code = bl.product_code
       AND p.cycle OPERATOR(tco.=) tco.cycle_of(bl.period_start) AND u.line_id = bl.line_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object(
            'line_id', bl.line_id, 'settled', false, 'cycle', tco.cycle_of(bl.period_start)::text,
            'list_amount', bl.list_amount,
            'payer', tco.explain_payer(bl.account_id, bl.product_code, bl.period_start)) || after_close;
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
        'due_amount', sl.due_amount) || after_close;
END $$;
COMMENT ON FUNCTION tco.explain_line(bigint) IS
'Why a bill line costs what it costs: its statement and payer (with tco.explain_payer), the discount rate and its source, every benefit used and how much, and the due amount. A late or correction line also has "late": its charge cycle, when it arrived, the billing cycle and statement that billed it, and what it corrects. cycle is the cycle of the statement. An unsettled line gives {"settled": false, ...} with its payer; an unknown line is error 23503.';

-- ==== 41_late.sql (new)
-- After a cycle closes (DESIGN section 5, "Late lines and corrections" and
-- "Commitments are billed"; README "After a cycle closes"): late lines,
-- corrections, the benefits a correction gives back, and the commitment
-- fees settlement bills.
--
-- Late lines.  A bill line whose cycle is already settled for its scope (the
-- whole cycle, or the organization of its account) when it arrives is
-- accepted: it stays in its cycle's partition with its true period and is
-- queued in tco.late_line by the statement trigger of tco.bill_line
-- (src/ingest.c).  The first tco.settle_cycle of a later cycle whose scope
-- covers the line (the whole cycle, or the line's organization) bills it: on
-- that cycle's statement of the line's payer, priced as of its own period
-- (payer by R6 at its period start, the contract discount valid then, the
-- benefits valid then that still have a balance), and writes the statement
-- and the billing cycle on the queue row.  Its per-line record
-- (tco.settled_pack) has the line's *charge cycle* as its cycle, so per charge
-- cycle every line is on exactly one statement; the statement's lines
-- (tco.statement_line) sum every line billed on it, late ones included.  A
-- late line not billed yet may be updated or deleted like a line of an open
-- cycle; a billed one is settled history (R14).
--
-- Corrections.  A settled line is never rewritten: tco.correct_bill_line adds
-- a correction line, a bill line with the same account, product and period
-- whose list amount is the signed difference and which references the
-- original (corrects_line_id, always the original line, also for a
-- correction of a correction) with a reason.  It is billed like a late line.
-- Negative amounts exist only on correction lines, and the net amount of a
-- line with its corrections never goes below zero (trigger
-- bill_line_correction_check).  A negative correction gives back, in this
-- order: the contract discount at the rate of the line's period (a negative
-- discount), what the payer paid for the line and its earlier corrections
-- (a negative due amount), then what benefits paid for them, last use first
-- (negative benefit uses): to the benefit's balance when the benefit is
-- still valid after the billing cycle, else as a credit to the payer's
-- balance through the ledger (kind 'refund'); what a savings plan covered
-- goes back to no one (its fee is billed per hour of commitment, used or
-- not).  Every give-back is a row of tco.benefit_return.
--
-- Commitments billed.  Settlement of a cycle first makes, for each savings
-- plan of its scope valid in the cycle, a bill line of the plan's owner of
-- product 'tco:savings_plan_fee' (its fee for the hours of its term in the
-- cycle, tco.savings_plan_fee), and for each resource pack with a price whose
-- term starts in the cycle, a line of product 'tco:resource_pack_price';
-- charge type 'prepaid' (FOCUS ChargeCategory 'Purchase').  tco.commitment_charge
-- holds one row per benefit and cycle, so a fee is billed exactly once, also
-- when the cycle is settled per organization or settled again.  Resource
-- packs and savings plans never pay these lines; contract discounts,
-- coupons, vouchers and cards pay them as any line.
--
-- Error codes: 22023 bad argument (negative new amount, empty reason, a
-- correction that does not match its original), 23503 unknown line, 23514
-- a correction that would take the net amount below zero.

CREATE TABLE tco.late_line (
    line_id       bigint PRIMARY KEY,
    account_id    bigint NOT NULL,
    period_start  timestamptz NOT NULL,
    charge_cycle  tco.billing_cycle NOT NULL,
    arrived_at    timestamptz NOT NULL DEFAULT now(),
    billing_cycle tco.billing_cycle,
    statement_id  bigint REFERENCES tco.statement ON DELETE RESTRICT,
    billed_at     timestamptz,
    CONSTRAINT late_line_billed CHECK ((statement_id IS NULL) = (billing_cycle IS NULL)
                                       AND (statement_id IS NULL) = (billed_at IS NULL)),
    CONSTRAINT late_line_billed_later CHECK (billing_cycle IS NULL OR billing_cycle > charge_cycle)
);
CREATE INDEX late_line_pending ON tco.late_line (charge_cycle) WHERE statement_id IS NULL;
CREATE INDEX late_line_statement ON tco.late_line (statement_id);
CREATE INDEX late_line_account ON tco.late_line (account_id);
COMMENT ON TABLE tco.late_line IS 'Bill lines that arrived after their cycle was settled (and correction lines of settled lines): the charge cycle they belong to, and once billed the statement and billing cycle that carry them (README "After a cycle closes").';
COMMENT ON COLUMN tco.late_line.charge_cycle IS 'The cycle of the line''s period start (FOCUS: the charge period''s cycle).';
COMMENT ON COLUMN tco.late_line.arrived_at IS 'When the line was written.';
COMMENT ON COLUMN tco.late_line.billing_cycle IS 'The cycle whose settlement billed it (NULL: not billed yet).';
COMMENT ON COLUMN tco.late_line.statement_id IS 'The statement it is billed on (of billing_cycle, of the line''s payer).';
SELECT pg_catalog.pg_extension_config_dump('tco.late_line', '');

CREATE TABLE tco.commitment_charge (
    benefit_id bigint NOT NULL REFERENCES tco.benefit ON DELETE RESTRICT,
    cycle      tco.billing_cycle NOT NULL,
    line_id    bigint NOT NULL UNIQUE,
    amount     numeric(20,2) NOT NULL CHECK (amount > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (benefit_id, cycle)
);
COMMENT ON TABLE tco.commitment_charge IS 'Commitment fees billed by settlement: the bill line of a savings plan''s fee for a cycle, or of a resource pack''s price in the cycle its term starts; one per benefit and cycle.';
SELECT pg_catalog.pg_extension_config_dump('tco.commitment_charge', '');

CREATE TABLE tco.benefit_return (
    return_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    line_id          bigint NOT NULL,
    corrects_line_id bigint NOT NULL,
    statement_id     bigint NOT NULL,
    payer_account_id bigint NOT NULL,
    benefit_id       bigint NOT NULL REFERENCES tco.benefit ON DELETE RESTRICT,
    amount           numeric(20,6) NOT NULL CHECK (amount > 0),
    returned_to      text NOT NULL CHECK (returned_to IN ('benefit', 'payer_balance', 'commitment')),
    ledger_entry_id  bigint REFERENCES tco.ledger ON DELETE RESTRICT,
    returned_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX benefit_return_benefit ON tco.benefit_return (benefit_id);
COMMENT ON TABLE tco.benefit_return IS 'What negative correction lines gave back of what benefits had paid: to the benefit''s balance (still valid), to the payer''s balance through the ledger (expired; ledger_entry_id), or to no one (a savings plan''s hour). Written by settlement.';
SELECT pg_catalog.pg_extension_config_dump('tco.benefit_return', '');

-- ---------------------------------------------------------------------------
-- Corrections

-- The original line of a line (itself, or the line a correction corrects),
-- found through tco.bill_line_id (one partition).
CREATE FUNCTION tco.bill_line_by_id(line_id bigint) RETURNS tco.bill_line
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT b FROM tco.bill_line b
     WHERE b.line_id = $1
       AND b.period_start = (SELECT k.period_start FROM tco.bill_line_id k WHERE k.line_id = $1)
$$;
COMMENT ON FUNCTION tco.bill_line_by_id(bigint) IS 'The bill line with this id, read from its own partition (NULL if none).';

-- A settled line: on a statement (its pack, by account, product and cycle).
CREATE FUNCTION tco.bill_line_is_settled(b tco.bill_line) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM tco.settled_pack p
                    WHERE p.account_id = b.account_id AND p.product_code = b.product_code
                      AND p.cycle OPERATOR(tco.=) tco.cycle_of(b.period_start)
                      AND b.line_id = ANY (p.line_ids))
$$;
COMMENT ON FUNCTION tco.bill_line_is_settled(tco.bill_line) IS 'Whether the line is on a statement (settled in its cycle, or billed as a late line).';

-- Row trigger (only rows with corrects_line_id): a correction references an
-- original line (not a correction) of the same account, product, charge
-- type and period, and the original with all its corrections stays >= 0.
-- The original is locked, so corrections of one line are made one at a time.
CREATE FUNCTION tco.bill_line_correction_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    orig tco.bill_line;
    net  numeric;
BEGIN
    IF tco.restoring() THEN
        RETURN NEW;
    END IF;
    SELECT b.* INTO orig FROM tco.bill_line b
     WHERE b.line_id = NEW.corrects_line_id
       AND b.period_start = (SELECT k.period_start FROM tco.bill_line_id k WHERE k.line_id = NEW.corrects_line_id)
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'bill line % corrects bill line %, which does not exist', NEW.line_id, NEW.corrects_line_id
            USING ERRCODE = '23503', HINT = 'A correction references the line it corrects (tco.correct_bill_line makes them).';
    END IF;
    IF orig.corrects_line_id IS NOT NULL THEN
        RAISE EXCEPTION 'bill line % corrects bill line %, which is itself a correction of bill line %',
                        NEW.line_id, NEW.corrects_line_id, orig.corrects_line_id
            USING ERRCODE = '22023', HINT = 'A correction references the original line; tco.correct_bill_line does it for you.';
    END IF;
    IF (orig.account_id, orig.product_code, orig.charge_type, orig.period_start, orig.period_end)
       IS DISTINCT FROM (NEW.account_id, NEW.product_code, NEW.charge_type, NEW.period_start, NEW.period_end) THEN
        RAISE EXCEPTION 'correction % of bill line % has another account, product, charge type or period', NEW.line_id, orig.line_id
            USING ERRCODE = '22023', HINT = 'A correction changes the amount of the same usage: copy the original''s account, product, charge type and period.';
    END IF;
    SELECT orig.list_amount + coalesce(sum(b.list_amount), 0) + NEW.list_amount INTO net
      FROM tco.bill_line b
     WHERE b.account_id = orig.account_id AND b.product_code = orig.product_code
       AND b.period_start = orig.period_start AND b.corrects_line_id = orig.line_id
       AND b.line_id <> NEW.line_id;
    IF net < 0 THEN
        RAISE EXCEPTION 'correction % would take bill line % to a net amount of %', NEW.line_id, orig.line_id, net
            USING ERRCODE = '23514', HINT = 'A line with its corrections is never below zero: correct it to zero at most.';
    END IF;
    RETURN NEW;
END $$;

CREATE FUNCTION tco.correct_bill_line(line_id bigint, new_list_amount numeric, reason text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    l     tco.bill_line;
    orig  tco.bill_line;
    net   numeric;
    delta numeric;
    new_id bigint;
BEGIN
    PERFORM tco.require_arg(line_id, 'line_id');
    PERFORM tco.require_arg(new_list_amount, 'new_list_amount');
    PERFORM tco.require_arg(reason, 'reason');
    IF new_list_amount = 'NaN'::numeric OR new_list_amount < 0 OR new_list_amount >= 1e14
       OR new_list_amount <> round(new_list_amount, 6) THEN
        RAISE EXCEPTION 'argument "new_list_amount" must be an amount >= 0 with at most 6 decimals below 10^14, got %', new_list_amount
            USING ERRCODE = '22023', HINT = 'Pass the amount the line should have had, e.g. 12.50 (0 cancels it).';
    END IF;
    IF btrim(reason) = '' THEN
        RAISE EXCEPTION 'argument "reason" must not be empty'
            USING ERRCODE = '22023', HINT = 'Say why the line is corrected (re-rated usage, meter fix ...).';
    END IF;
    l := tco.bill_line_by_id(line_id);
    PERFORM tco.require_exists(l.line_id IS NOT NULL, 'bill line', line_id);
    -- the original, locked: corrections of one line are made one at a time
    SELECT b.* INTO orig FROM tco.bill_line b
     WHERE b.line_id = coalesce(l.corrects_line_id, l.line_id)
       AND b.period_start = l.period_start
       FOR UPDATE;
    SELECT orig.list_amount + coalesce(sum(b.list_amount), 0) INTO net
      FROM tco.bill_line b
     WHERE b.account_id = orig.account_id AND b.product_code = orig.product_code
       AND b.period_start = orig.period_start AND b.corrects_line_id = orig.line_id;
    delta := new_list_amount - net;
    IF delta = 0 THEN
        RETURN NULL;
    END IF;
    -- an original that is on no statement and has no correction is simply
    -- updated (its cycle is open, or it is a late line not billed yet)
    IF net = orig.list_amount AND NOT tco.bill_line_is_settled(orig) THEN
        UPDATE tco.bill_line b SET list_amount = new_list_amount
         WHERE b.line_id = orig.line_id AND b.period_start = orig.period_start;
        RETURN orig.line_id;
    END IF;
    INSERT INTO tco.bill_line (account_id, product_code, charge_type, period_start, period_end, list_amount,
                               issued_at, tags, corrects_line_id, correction_reason)
    VALUES (orig.account_id, orig.product_code, orig.charge_type, orig.period_start, orig.period_end, delta,
            now(), orig.tags, orig.line_id, reason)
    RETURNING bill_line.line_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.correct_bill_line(bigint, numeric, text) IS
'Corrects the amount of a bill line to new_list_amount (the amount the usage should have had; 0 cancels it). A settled line is never rewritten: a correction line with the signed difference, referencing the original line and the reason, is added and billed by the next settlement (README "After a cycle closes"); a line on no statement and without corrections is updated in place. Returns the id of the line written (NULL when the amount is already right). line_id may be the original or one of its corrections.';

-- ---------------------------------------------------------------------------
-- What settlement calls (src/settle.c)

-- The fee lines of the commitments of a cycle's scope, made once per benefit
-- and cycle.  Returns the number of lines made.
CREATE FUNCTION tco.bill_commitments(cycle tco.billing_cycle, org_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r      tstzrange;
    b      record;
    amount numeric;
    span   tstzrange;
    new_id bigint;
    n      bigint := 0;
BEGIN
    PERFORM tco.require_arg(cycle, 'cycle');
    r := tco.cycle_range(cycle);
    FOR b IN
        SELECT x.benefit_id, x.kind, x.owner_account_id, x.valid_from, x.valid_to, x.price
          FROM tco.benefit x
         WHERE ((x.kind = 'savings_plan' AND x.valid_from < upper(r) AND x.valid_to > lower(r))
                OR (x.kind = 'resource_pack' AND x.price > 0 AND x.valid_from >= lower(r) AND x.valid_from < upper(r)))
           AND (bill_commitments.org_id IS NULL
                OR x.owner_account_id IN (SELECT m.account_id FROM tco.member m WHERE m.org_id = bill_commitments.org_id))
           AND NOT EXISTS (SELECT 1 FROM tco.commitment_charge c
                            WHERE c.benefit_id = x.benefit_id AND c.cycle OPERATOR(tco.=) bill_commitments.cycle)
         ORDER BY x.benefit_id
         FOR KEY SHARE OF x
    LOOP
        IF b.kind = 'savings_plan' THEN
            amount := tco.savings_plan_fee(b.benefit_id, cycle);
            span := r * tstzrange(tco.granularity_trunc('hour', b.valid_from), tco.granularity_ceil('hour', b.valid_to));
        ELSE
            amount := b.price;
            span := tstzrange(b.valid_from, least(upper(r), b.valid_to));
        END IF;
        CONTINUE WHEN amount <= 0 OR isempty(span);
        INSERT INTO tco.product (product_code, granularity, name)
        VALUES (CASE b.kind WHEN 'savings_plan' THEN 'tco:savings_plan_fee' ELSE 'tco:resource_pack_price' END, 'month',
                CASE b.kind WHEN 'savings_plan' THEN 'Savings plan fee (billed by tco)' ELSE 'Resource pack price (billed by tco)' END)
        ON CONFLICT DO NOTHING;
        INSERT INTO tco.bill_line (account_id, product_code, charge_type, period_start, period_end, list_amount, issued_at, tags)
        VALUES (b.owner_account_id,
                CASE b.kind WHEN 'savings_plan' THEN 'tco:savings_plan_fee' ELSE 'tco:resource_pack_price' END,
                'prepaid', lower(span), upper(span), amount, lower(span),
                jsonb_build_object('tco:benefit_id', b.benefit_id::text))
        RETURNING line_id INTO new_id;
        INSERT INTO tco.commitment_charge (benefit_id, cycle, line_id, amount) VALUES (b.benefit_id, cycle, new_id, amount);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION tco.bill_commitments(tco.billing_cycle, bigint) IS
'Called by tco.settle_cycle before it prices a cycle: a bill line of each savings plan''s fee for the cycle (tco.savings_plan_fee) and of each priced resource pack whose term starts in it, to its owner, once per benefit and cycle (tco.commitment_charge). Returns the number of lines made.';

-- What a negative correction gives back: the due its original line and
-- earlier corrections left (micro-units), and what each benefit paid for
-- them net of earlier give-backs, in first-use order.  Read from the packs of
-- the line's account, product and charge cycle.
CREATE FUNCTION tco.correction_history(corrects_line_id bigint, account_id bigint, product_code text,
                                       charge_cycle text, OUT due bigint, OUT benefit_ids bigint[],
                                       OUT amounts bigint[])
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH chain AS (
        SELECT $1 AS line_id
        UNION
        SELECT b.line_id FROM tco.bill_line b
         WHERE b.account_id = $2 AND b.product_code = $3 AND b.corrects_line_id = $1
           AND b.period_start = (SELECT k.period_start FROM tco.bill_line_id k WHERE k.line_id = $1)
    ), packs AS (
        SELECT p.* FROM tco.settled_pack p
         WHERE p.account_id = $2 AND p.product_code = $3 AND p.cycle OPERATOR(tco.=) $4::tco.billing_cycle
    ), uses AS (
        SELECT u.benefit_id, sum(u.a) AS a, min(p.pack_id * 65536 + u.n) AS first_use
          FROM packs p
          CROSS JOIN LATERAL unnest(p.use_benefit_ids, p.use_line_ids, p.use_amounts) WITH ORDINALITY AS u(benefit_id, line_id, a, n)
         WHERE u.line_id IN (SELECT line_id FROM chain)
         GROUP BY u.benefit_id
    )
    SELECT (SELECT coalesce(sum(u.li - d.di - d.be), 0)::bigint
              FROM packs p
              CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                                        p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
              -- a pack's compact arrays (tco.settled_line)
              CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                                         coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
              CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                                         coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d
             WHERE u.line_id IN (SELECT line_id FROM chain)),
           coalesce((SELECT array_agg(benefit_id ORDER BY first_use) FROM uses WHERE a > 0), '{}'),
           coalesce((SELECT array_agg(a::bigint ORDER BY first_use) FROM uses WHERE a > 0), '{}')
$$;

-- Gives back `amount` (micro-units) of what benefit_id paid, for correction
-- line line_id billed on statement_id of payer: to the benefit while it is
-- valid after `valid_after` (the end of the billing cycle), else to the
-- payer's balance (ledger 'refund', rounded half-up to the cent); a savings
-- plan's hour goes back to no one.  Recorded in tco.benefit_return.
CREATE FUNCTION tco.return_benefit(line_id bigint, corrects_line_id bigint, statement_id bigint, payer bigint,
                                   benefit_id bigint, amount bigint, valid_after timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b     tco.benefit;
    line  tco.bill_line;
    money numeric := amount * 0.000001;
    entry bigint;
    dest  text;
BEGIN
    -- only for a negative correction line on no statement yet, and never
    -- more than its amount in all (settlement calls it while pricing the line)
    SELECT b0.* INTO line FROM tco.bill_line b0
     WHERE b0.line_id = return_benefit.line_id
       AND b0.period_start = (SELECT k.period_start FROM tco.bill_line_id k WHERE k.line_id = return_benefit.line_id);
    IF line.line_id IS NULL OR line.corrects_line_id IS DISTINCT FROM return_benefit.corrects_line_id
       OR line.list_amount >= 0 OR amount <= 0 OR tco.bill_line_is_settled(line)
       OR coalesce((SELECT sum(r.amount) FROM tco.benefit_return r WHERE r.line_id = return_benefit.line_id), 0) + money
          > -line.list_amount THEN
        RAISE EXCEPTION 'nothing of benefit % can be given back for bill line %', benefit_id, line_id
            USING ERRCODE = '55000', HINT = 'Settlement gives back what benefits paid when it prices a negative correction line.';
    END IF;
    SELECT * INTO b FROM tco.benefit x WHERE x.benefit_id = return_benefit.benefit_id FOR NO KEY UPDATE;
    PERFORM tco.require_exists(FOUND, 'benefit', benefit_id);
    IF b.kind = 'savings_plan' THEN
        dest := 'commitment';
    ELSIF b.valid_to > valid_after THEN
        dest := 'benefit';
        UPDATE tco.benefit x SET balance = least(x.balance + money, x.initial_amount)
         WHERE x.benefit_id = return_benefit.benefit_id;
    ELSE
        dest := 'payer_balance';
        IF round(money, 2) > 0 THEN
            INSERT INTO tco.ledger (account_id, amount, kind, reference)
            VALUES (payer, round(money, 2), 'refund',
                    format('correction bill line %s: benefit %s had paid it and has expired', line_id, benefit_id))
            RETURNING entry_id INTO entry;
        END IF;
    END IF;
    INSERT INTO tco.benefit_return (line_id, corrects_line_id, statement_id, payer_account_id, benefit_id, amount,
                                    returned_to, ledger_entry_id)
    VALUES (line_id, corrects_line_id, statement_id, payer, benefit_id, money, dest, entry);
END $$;

-- Per statement, consuming account, product and charge cycle: the part of
-- each statement line that each charge cycle contributes (late and
-- correction lines are billed on a later cycle's statement).
CREATE VIEW tco.statement_line_by_charge_cycle WITH (security_invoker = true) AS
SELECT p.statement_id, p.account_id, p.product_code, p.cycle::text AS charge_cycle, s.cycle::text AS billing_cycle,
       (sum(u.li) * 0.000001)::numeric(20,6) AS list_amount,
       (sum(d.di) * 0.000001)::numeric(20,6) AS discount_amount,
       (sum(d.be) * 0.000001)::numeric(20,6) AS benefit_amount,
       (sum(u.li - d.di - d.be) * 0.000001)::numeric(20,6) AS due_amount,
       count(*) AS lines,
       (p.cycle OPERATOR(tco.<>) s.cycle) AS correction
FROM tco.settled_pack p
JOIN tco.statement s ON s.statement_id = p.statement_id
CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                          p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
-- a pack's compact arrays (tco.settled_line)
CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                           coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                           coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d
GROUP BY p.statement_id, p.account_id, p.product_code, p.cycle, s.cycle;
COMMENT ON VIEW tco.statement_line_by_charge_cycle IS 'Each statement line split by the charge cycle of its bill lines: lines of the statement''s own cycle, and late and correction lines of earlier cycles billed on it (correction = true).';

CREATE TRIGGER bill_line_correction_check BEFORE INSERT OR UPDATE ON tco.bill_line
    FOR EACH ROW WHEN (NEW.corrects_line_id IS NOT NULL) EXECUTE FUNCTION tco.bill_line_correction_check();

-- The queue is written by tco only (the bill line trigger, settlement): a
-- billed row is settled history (R14), a pending one goes when its line is
-- deleted or changed.  Give-backs and commitment charges are append-only.
CREATE FUNCTION tco.late_line_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF OLD.statement_id IS NOT NULL THEN
        RAISE EXCEPTION 'R14: late bill line % is billed on statement % and its record cannot change', OLD.line_id, OLD.statement_id
            USING ERRCODE = 'TC008', HINT = 'Correct the line with tco.correct_bill_line.';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER late_line_guard BEFORE UPDATE OR DELETE ON tco.late_line
    FOR EACH ROW EXECUTE FUNCTION tco.late_line_guard();
CREATE TRIGGER r14_commitment_charge_append_only BEFORE UPDATE OR DELETE ON tco.commitment_charge
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();
CREATE TRIGGER r14_benefit_return_append_only BEFORE UPDATE OR DELETE ON tco.benefit_return
    FOR EACH ROW EXECUTE FUNCTION tco.r14_append_only();

-- The cycle a late line of this account and charge cycle will most likely be
-- billed in: the cycle after the latest one settled for the account's scope,
-- and at least the one after its charge cycle.  Spending alerts count a late
-- line there until it is billed (then it is on that cycle's statement).
CREATE FUNCTION tco.late_billing_cycle(account_id bigint, charge_cycle tco.billing_cycle) RETURNS tco.billing_cycle
LANGUAGE sql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN s.cycle IS NULL OR s.cycle OPERATOR(tco.<=) $2 THEN $2 OPERATOR(tco.+) 1
                ELSE s.cycle OPERATOR(tco.+) 1 END
      FROM (SELECT (SELECT x.cycle FROM tco.settled_cycle x
                     WHERE x.org_id IS NULL
                        OR x.org_id = (SELECT m.org_id FROM tco.member m WHERE m.account_id = $1)
                     ORDER BY x.cycle USING OPERATOR(tco.>) LIMIT 1) AS cycle) s
$$;
COMMENT ON FUNCTION tco.late_billing_cycle(bigint, tco.billing_cycle) IS 'The cycle whose settlement will bill a late line of this account and charge cycle, if cycles are settled in order: the one after the latest cycle settled for the account''s scope, at least the one after the charge cycle (NULL for a NULL argument).';

-- ==== 44_alert.sql: late lines count in the cycle that bills them
CREATE OR REPLACE FUNCTION tco.cycle_spending(account_id bigint, cycle tco.billing_cycle) RETURNS numeric
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
          AND NOT EXISTS (SELECT 1 FROM tco.late_line k WHERE k.line_id = b.line_id)
          AND tco.trusteeship_effective_payer(b.account_id, b.product_code, b.period_start) = cycle_spending.account_id), 0)
         -- late and correction lines not billed yet count in the cycle that will bill them
         + coalesce((
        SELECT sum(b.list_amount) FROM tco.late_line k
        JOIN tco.bill_line b ON b.line_id = k.line_id AND b.period_start = k.period_start
        WHERE k.statement_id IS NULL
          AND tco.late_billing_cycle(k.account_id, k.charge_cycle) OPERATOR(tco.=) cycle_spending.cycle
          AND tco.trusteeship_effective_payer(b.account_id, b.product_code, b.period_start) = cycle_spending.account_id), 0);
END $$;
COMMENT ON FUNCTION tco.cycle_spending(bigint, tco.billing_cycle) IS 'R11: spending of a payer in a cycle: list amounts (before discounts and benefits) of the bill lines it pays, its managed members'' included, late and correction lines counted in the cycle that bills them (tco.late_billing_cycle until billed). From its statement once the cycle is settled.';

-- ==== 45_sharing.sql: a resource pack may have a price
DROP FUNCTION tco.grant_resource_pack(bigint, text, numeric, timestamptz, timestamptz);
CREATE FUNCTION tco.grant_resource_pack(owner_account_id bigint, product_code text, amount numeric,
                                        valid_from timestamptz, valid_to timestamptz,
                                        price numeric DEFAULT NULL) RETURNS bigint
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
    IF price IS NOT NULL THEN
        PERFORM tco.require_amount(price, 'price');
    END IF;
    INSERT INTO tco.benefit (kind, owner_account_id, product_code, initial_amount, balance, valid_from, valid_to, price)
        VALUES ('resource_pack', owner_account_id, product_code, amount, amount, valid_from, valid_to, price)
        RETURNING benefit_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.grant_resource_pack(bigint, text, numeric, timestamptz, timestamptz, numeric) IS
'Grants a resource pack: `amount` of one product, paying lines of that product starting in [valid_from, valid_to) consumed by the owner or by accounts it is shared with, until its balance is spent. With a price, settlement of the cycle its term starts in bills the price to the owner (README "After a cycle closes"). Returns its benefit id.';
COMMENT ON FUNCTION tco.grant_savings_plan(bigint, numeric, numeric, timestamptz, timestamptz, text) IS
'Grants a savings plan: in every billing-zone hour of [valid_from, valid_to) it pays up to hourly_commitment of eligible lines (of product_code, or all products when NULL) starting in that hour, consumed by the owner or by accounts it is shared with. Its fee, billed to the owner by settlement for each cycle of its term (README "After a cycle closes"), is hourly_commitment * (1 - discount_rate) per hour (tco.savings_plan_fee). Returns its benefit id.';
COMMENT ON FUNCTION tco.savings_plan_fee(bigint, tco.billing_cycle) IS
'The commitment fee of a savings plan for one cycle: the hours of its term in the cycle times hourly_commitment * (1 - discount_rate), rounded half-up to 2 decimals. Settlement bills it to the owner (tco.bill_commitments).';

-- ==== 46_focus.sql: ChargeClass Correction, commitment fees
CREATE OR REPLACE VIEW tco.focus_cost_and_usage WITH (security_invoker = true) AS
WITH line AS (
    SELECT p.pack_id, p.statement_id, p.payer_account_id, p.account_id, p.product_code, p.cycle,
           s.cycle AS billing_cycle, tco.cycle_range(s.cycle) AS period, u.line_id, u.li, d.di, d.be, d.src, d.did
    FROM tco.settled_pack p
    JOIN tco.statement s ON s.statement_id = p.statement_id
    CROSS JOIN LATERAL unnest(p.line_ids, p.list_amounts, p.discount_rates, p.discount_sources, p.discount_ids,
                              p.discount_amounts, p.benefit_amounts) AS u(line_id, li, rate, src, did, di, be)
    -- a pack's compact arrays (tco.settled_line)
    CROSS JOIN LATERAL (SELECT coalesce(u.rate, p.discount_rates[1]) AS rate, coalesce(u.src, p.discount_sources[1]) AS src,
                               coalesce(u.did, p.discount_ids[1]) AS did, coalesce(u.be, p.benefit_amounts[1]) AS be) k
    CROSS JOIN LATERAL (SELECT k.rate, k.src, k.did, k.be,
                               coalesce(u.di, round(u.li::numeric * k.rate * 0.000001)::bigint) AS di) d
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
    CASE WHEN l.cycle OPERATOR(tco.<>) l.billing_cycle OR bl.corrects_line_id IS NOT NULL
         THEN 'Correction' END                                               AS "ChargeClass",
    CASE l.product_code WHEN 'tco:savings_plan_fee' THEN 'Savings plan ' || cc.benefit_id || ' fee of account ' || l.account_id
                        WHEN 'tco:resource_pack_price' THEN 'Resource pack ' || cc.benefit_id || ' price of account ' || l.account_id
         ELSE l.product_code || CASE bl.charge_type WHEN 'prepaid' THEN ' prepaid order' ELSE ' usage' END
                             || ' of account ' || l.account_id END
      || CASE WHEN bl.corrects_line_id IS NOT NULL THEN ' (correction of bill line ' || bl.corrects_line_id || ': ' || bl.correction_reason || ')'
              WHEN l.cycle OPERATOR(tco.<>) l.billing_cycle THEN ' (late, of cycle ' || l.cycle::text || ')'
              ELSE '' END                                                    AS "ChargeDescription",
    CASE WHEN l.product_code = 'tco:savings_plan_fee' THEN 'Recurring'
         WHEN bl.charge_type = 'prepaid' THEN 'One-Time' ELSE 'Usage-Based' END AS "ChargeFrequency",
    l.product_code                                                           AS "ServiceName",
    'Other'::text                                                            AS "ServiceCategory",
    cf.currency                                                              AS "BillingCurrency",
    coalesce(ia.name, cf.provider)                                           AS "InvoiceIssuerName",
    cf.provider                                                              AS "ProviderName",
    cf.provider                                                              AS "PublisherName",
    NULL::numeric                                                            AS "PricingQuantity",
    NULL::text                                                               AS "PricingUnit",
    coalesce(c.benefit_id, cc.benefit_id)::text                              AS "CommitmentDiscountId",
    CASE coalesce(c.kind, cb.kind) WHEN 'resource_pack' THEN 'Usage' WHEN 'savings_plan' THEN 'Spend' END AS "CommitmentDiscountCategory",
    CASE WHEN c.kind IS NOT NULL THEN 'Used' END                             AS "CommitmentDiscountStatus",
    CASE coalesce(c.kind, cb.kind) WHEN 'resource_pack' THEN 'Resource Pack' WHEN 'savings_plan' THEN 'Savings Plan' END AS "CommitmentDiscountType",
    bl.tags                                                                  AS "Tags",
    i.invoice_id::text                                                       AS "InvoiceId",
    l.billing_cycle::text                                                    AS "x_BillingCycle",
    l.line_id                                                                AS "x_LineId",
    l.statement_id                                                           AS "x_StatementId",
    st.org_id                                                                AS "x_OrganizationId",
    (l.di * 0.000001)::numeric(20,6)                                         AS "x_DiscountAmount",
    ('{none,own,admin,manager,entity,own_new_trusteeship}'::text[])[l.src + 1] AS "x_DiscountSource",
    (l.be * 0.000001)::numeric(20,6)                                         AS "x_BenefitAmount",
    l.cycle::text                                                            AS "x_ChargeCycle",
    bl.corrects_line_id                                                      AS "x_CorrectsLineId"
FROM line l
JOIN tco.bill_line bl ON bl.line_id = l.line_id
JOIN tco.statement st ON st.statement_id = l.statement_id
LEFT JOIN tco.account pa ON pa.account_id = l.payer_account_id
LEFT JOIN tco.account sa ON sa.account_id = l.account_id
LEFT JOIN tco.invoice i ON i.statement_id = l.statement_id AND i.voided_at IS NULL
LEFT JOIN tco.account ia ON ia.account_id = i.issuer_account_id
LEFT JOIN commitment c ON c.line_id = l.line_id
LEFT JOIN tco.commitment_charge cc ON cc.line_id = l.line_id
LEFT JOIN tco.benefit cb ON cb.benefit_id = cc.benefit_id
CROSS JOIN cfg cf;
COMMENT ON COLUMN tco.focus_cost_and_usage."ChargeClass" IS 'FOCUS: Correction for a late line (billed in a later cycle than its charge period''s) or a correction line; NULL otherwise.';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_BillingCycle" IS 'tco: the billing cycle (YYYY-MM) of the statement that bills the line: filter exports on it.';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_ChargeCycle" IS 'tco: the cycle of the line''s period start (differs from x_BillingCycle for late and correction lines).';
COMMENT ON COLUMN tco.focus_cost_and_usage."x_CorrectsLineId" IS 'tco: the original line a correction line corrects (NULL otherwise).';

-- ==== 51_access_settlement.sql: row-level security of the new tables
-- After a cycle closes (41_late.sql): a late line is visible with the
-- accounts a reader may read, or with the statement that bills it; a
-- give-back with its statement; a commitment charge with its benefit.
ALTER TABLE tco.late_line ENABLE ROW LEVEL SECURITY;
CREATE POLICY late_line_admin_all ON tco.late_line TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY late_line_reader_visible ON tco.late_line FOR SELECT TO tco_reader
    USING (account_id IN (SELECT tco.visible_accounts())
           OR statement_id IN (SELECT s.statement_id FROM tco.statement s));
ALTER TABLE tco.benefit_return ENABLE ROW LEVEL SECURITY;
CREATE POLICY benefit_return_admin_all ON tco.benefit_return TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY benefit_return_reader_visible ON tco.benefit_return FOR SELECT TO tco_reader
    USING (statement_id IN (SELECT s.statement_id FROM tco.statement s));
ALTER TABLE tco.commitment_charge ENABLE ROW LEVEL SECURITY;
CREATE POLICY commitment_charge_admin_all ON tco.commitment_charge TO tco_admin USING (true) WITH CHECK (true);
CREATE POLICY commitment_charge_reader_visible ON tco.commitment_charge FOR SELECT TO tco_reader
    USING (benefit_id IN (SELECT b.benefit_id FROM tco.benefit b));

-- ==== 98_dump.sql, 99_grants.sql: as a fresh install gives them
SELECT pg_catalog.pg_extension_config_dump('tco.benefit_return_return_id_seq', '');
REVOKE ALL ON tco.late_line, tco.commitment_charge, tco.benefit_return, tco.statement_line_by_charge_cycle FROM PUBLIC;
REVOKE ALL ON SEQUENCE tco.benefit_return_return_id_seq FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON tco.late_line, tco.commitment_charge, tco.benefit_return,
    tco.statement_line_by_charge_cycle TO tco_admin;
GRANT ALL ON SEQUENCE tco.benefit_return_return_id_seq TO tco_admin;
GRANT SELECT ON tco.late_line, tco.benefit_return, tco.commitment_charge, tco.statement_line_by_charge_cycle TO tco_reader;
CREATE TRIGGER tco_no_truncate BEFORE TRUNCATE ON tco.late_line
    FOR EACH STATEMENT EXECUTE FUNCTION tco.refuse_truncate();
CREATE TRIGGER tco_no_truncate BEFORE TRUNCATE ON tco.commitment_charge
    FOR EACH STATEMENT EXECUTE FUNCTION tco.refuse_truncate();
CREATE TRIGGER tco_no_truncate BEFORE TRUNCATE ON tco.benefit_return
    FOR EACH STATEMENT EXECUTE FUNCTION tco.refuse_truncate();
CREATE TRIGGER tco_writer_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.late_line
    FOR EACH STATEMENT EXECUTE FUNCTION tco.writer_guard();
CREATE TRIGGER tco_writer_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.commitment_charge
    FOR EACH STATEMENT EXECUTE FUNCTION tco.writer_guard();
CREATE TRIGGER tco_writer_guard BEFORE INSERT OR UPDATE OR DELETE ON tco.benefit_return
    FOR EACH STATEMENT EXECUTE FUNCTION tco.writer_guard();
REVOKE EXECUTE ON FUNCTION tco.bill_line_by_id(bigint), tco.bill_line_is_settled(tco.bill_line),
    tco.bill_line_correction_check(), tco.correct_bill_line(bigint, numeric, text),
    tco.bill_commitments(tco.billing_cycle, bigint), tco.correction_history(bigint, bigint, text, text),
    tco.return_benefit(bigint, bigint, bigint, bigint, bigint, bigint, timestamptz), tco.late_line_guard(),
    tco.late_billing_cycle(bigint, tco.billing_cycle),
    tco.grant_resource_pack(bigint, text, numeric, timestamptz, timestamptz, numeric) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.bill_line_by_id(bigint), tco.bill_line_is_settled(tco.bill_line),
    tco.bill_line_correction_check(), tco.correct_bill_line(bigint, numeric, text),
    tco.bill_commitments(tco.billing_cycle, bigint), tco.correction_history(bigint, bigint, text, text),
    tco.return_benefit(bigint, bigint, bigint, bigint, bigint, bigint, timestamptz), tco.late_line_guard(),
    tco.late_billing_cycle(bigint, tco.billing_cycle),
    tco.grant_resource_pack(bigint, text, numeric, timestamptz, timestamptz, numeric) TO tco_admin;

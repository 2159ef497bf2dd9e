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

-- tco 1.0 -> 1.1.  Every change made to src/sql after 1.0 is repeated here,
-- so that ALTER EXTENSION tco UPDATE gives the same extension as a fresh 1.1
-- install (scripts/test_upgrade.sh compares the two catalogs fact by fact).
\echo Use "ALTER EXTENSION tco UPDATE TO '1.1'" to load this file. \quit

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
    USING (account_id IN (SELECT tco.visible_accounts()) OR payer_account_id IN (SELECT tco.visible_accounts()));

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

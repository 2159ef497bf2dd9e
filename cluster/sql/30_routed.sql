-- Schema tco of the router: the functions of DESIGN section 6 with the same
-- names, arguments and results, routed by PL/Proxy to the shard holding the
-- organization or account (RUN ON its partition, shard_id - 1), split by
-- shard (SPLIT) for bill lines, and run on every shard in parallel (RUN ON
-- ALL) for cluster-wide calls.  Each px_* function is the PL/Proxy call; the
-- tco.* function around it finds the shard in the directory (unknown ids are
-- 23503 as on one server), and turns a connection failure into an error
-- naming the shard (tco_cluster.raise_if_unreachable).  Errors raised on a
-- shard keep their SQLSTATE, message and hint (PL/Proxy passes them on).

-- Keep a router sequence ahead of an explicit id, as tco keeps its identity
-- sequences (src/sql/98_dump.sql): ids in the lower half of the range only.
CREATE FUNCTION tco_cluster.advance_seq(seq regclass, id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF id IS NOT NULL AND id > 0 AND id <= 4611686018427387903
       AND id > coalesce(pg_catalog.pg_sequence_last_value(seq), 0) THEN
        PERFORM pg_catalog.setval(seq, id);
    END IF;
END $$;

-- ---------------------------------------------------------------------------
-- PL/Proxy calls on one shard: p_part is its partition (shard_id - 1).

CREATE FUNCTION tco_cluster.px_create_account(p_part integer, p_account_id bigint, p_name text, p_entity_id bigint,
                                              p_balance numeric, p_credit_limit numeric) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.create_account(p_account_id, p_name, p_entity_id, p_balance, p_credit_limit);
$$;
CREATE FUNCTION tco_cluster.px_create_organization(p_part integer, p_org_id bigint, p_root_unit_id bigint,
                                                   p_admin bigint, p_name text) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco_shard.create_organization(p_org_id, p_root_unit_id, p_admin, p_name);
$$;
CREATE FUNCTION tco_cluster.px_create_unit(p_part integer, p_unit_id bigint, p_org_id bigint, p_name text,
                                           p_parent bigint) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco_shard.create_unit(p_unit_id, p_org_id, p_name, p_parent);
$$;
CREATE FUNCTION tco_cluster.px_add_member(p_part integer, p_org_id bigint, p_account_id bigint, p_unit_id bigint,
                                          p_policy tco.settlement_policy) RETURNS void
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.add_member(p_org_id, p_account_id, p_unit_id, p_policy);
$$;
CREATE FUNCTION tco_cluster.px_remove_member(p_part integer, p_account_id bigint) RETURNS void
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.remove_member(p_account_id);
$$;
CREATE FUNCTION tco_cluster.px_establish_trusteeship(p_part integer, p_member bigint, p_manager bigint, p_at timestamptz) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.establish_trusteeship(p_member, p_manager, p_at);
$$;
CREATE FUNCTION tco_cluster.px_move_trusteeship(p_part integer, p_member bigint, p_manager bigint, p_at timestamptz) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.move_trusteeship(p_member, p_manager, p_at);
$$;
CREATE FUNCTION tco_cluster.px_end_trusteeship(p_part integer, p_member bigint, p_at timestamptz) RETURNS void
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.end_trusteeship(p_member, p_at);
$$;
CREATE FUNCTION tco_cluster.px_trusteeship_effective_payer(p_part integer, p_account_id bigint, p_product_code text,
                                                           p_at timestamptz) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.trusteeship_effective_payer(p_account_id, p_product_code, p_at);
$$;
CREATE FUNCTION tco_cluster.px_explain_payer(p_part integer, p_account_id bigint, p_product_code text,
                                             p_at timestamptz) RETURNS jsonb
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.explain_payer(p_account_id, p_product_code, p_at);
$$;
CREATE FUNCTION tco_cluster.px_available_credit(p_part integer, p_account_id bigint) RETURNS numeric
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.available_credit(p_account_id);
$$;
CREATE FUNCTION tco_cluster.px_service_available(p_part integer, p_account_id bigint) RETURNS boolean
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.service_available(p_account_id);
$$;
CREATE FUNCTION tco_cluster.px_deposit(p_part integer, p_account_id bigint, p_amount numeric) RETURNS numeric
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.deposit(p_account_id, p_amount);
$$;
CREATE FUNCTION tco_cluster.px_grant_benefit(p_part integer, p_kind text, p_owner bigint, p_amount numeric,
                                             p_valid_to timestamptz, p_product_code text) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT CASE p_kind WHEN 'coupon' THEN tco.grant_coupon(p_owner, p_amount, p_valid_to, p_product_code)
                       WHEN 'voucher' THEN tco.grant_voucher(p_owner, p_amount, p_valid_to, p_product_code)
                       ELSE tco.grant_stored_value_card(p_owner, p_amount, p_valid_to, p_product_code) END;
$$;
CREATE FUNCTION tco_cluster.px_set_contract_discount(p_part integer, p_account_id bigint, p_entity_id bigint, p_rate numeric,
                                                     p_product_code text, p_valid_from timestamptz,
                                                     p_valid_to timestamptz) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.set_contract_discount(p_account_id, p_entity_id, p_rate, p_product_code, p_valid_from, p_valid_to);
$$;
CREATE FUNCTION tco_cluster.px_set_contract_discount_all(p_entity_id bigint, p_rate numeric, p_product_code text,
                                                         p_valid_from timestamptz, p_valid_to timestamptz) RETURNS SETOF bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ALL;
    SELECT tco.set_contract_discount(NULL::bigint, p_entity_id, p_rate, p_product_code, p_valid_from, p_valid_to);
$$;
CREATE FUNCTION tco_cluster.px_settle_cycle(p_part integer, p_cycle tco.billing_cycle, p_org_id bigint,
                                            OUT statements bigint, OUT lines bigint,
                                            OUT list_total numeric, OUT due_total numeric)
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT s.statements, s.lines, s.list_total, s.due_total FROM tco.settle_cycle(p_cycle, p_org_id) s;
$$;
-- Cluster-wide: every shard in parallel, one row each.
CREATE FUNCTION tco_cluster.px_settle_cycle_all(p_cycle tco.billing_cycle,
                                                OUT statements bigint, OUT lines bigint,
                                                OUT list_total numeric, OUT due_total numeric) RETURNS SETOF record
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ALL;
    SELECT s.statements, s.lines, s.list_total, s.due_total FROM tco.settle_cycle(p_cycle) s;
$$;
CREATE FUNCTION tco_cluster.px_cycle_of(p_at timestamptz) RETURNS tco.billing_cycle
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ANY;
    SELECT tco.cycle_of(p_at);
$$;
CREATE FUNCTION tco_cluster.px_cycle_range(p_cycle tco.billing_cycle) RETURNS tstzrange
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ANY;
    SELECT tco.cycle_range(p_cycle);
$$;
CREATE FUNCTION tco_cluster.px_set_billing_timezone_all(p_zone text) RETURNS SETOF text
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ALL;
    SELECT tco.set_billing_timezone(p_zone);
$$;
-- A bill line's account on one shard (NULL: not there) or on every shard
-- (one row per shard), and its correction (tco.correct_bill_line).
CREATE FUNCTION tco_cluster.px_line_account(p_part integer, p_line_id bigint) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT (tco.bill_line_by_id(p_line_id)).account_id;
$$;
CREATE FUNCTION tco_cluster.px_line_account_all(p_line_id bigint) RETURNS SETOF bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON ALL;
    SELECT (tco.bill_line_by_id(p_line_id)).account_id;
$$;
CREATE FUNCTION tco_cluster.px_correct_bill_line(p_part integer, p_line_id bigint, p_new_list_amount numeric,
                                                 p_reason text) RETURNS bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT tco.correct_bill_line(p_line_id, p_new_list_amount, p_reason);
$$;
-- Bill lines: the arrays are split by shard (p_part holds each line's
-- partition), so each shard gets one call with its own lines.
CREATE FUNCTION tco_cluster.px_insert_bill_lines(p_part integer[], p_account_id bigint[], p_product_code text[],
                                                 p_charge_type tco.charge_type[], p_period_start timestamptz[],
                                                 p_period_end timestamptz[], p_list_amount numeric[],
                                                 p_issued_at timestamptz[], p_paid_at timestamptz[]) RETURNS SETOF bigint
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster';
    SPLIT ALL;
    RUN ON p_part;
    SELECT tco.insert_bill_lines(p_account_id, p_product_code, p_charge_type, p_period_start, p_period_end,
                                 p_list_amount, p_issued_at, p_paid_at);
$$;

-- ---------------------------------------------------------------------------
-- Global data: written on the router, copied to every shard.

CREATE FUNCTION tco.create_entity(entity_id bigint, name text, verified boolean DEFAULT false) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_id bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'argument "name" must not be NULL' USING ERRCODE = '22004', HINT = 'Pass a value for every required argument.';
    END IF;
    new_id := coalesce(entity_id, pg_catalog.nextval('tco_cluster.entity_id_seq'));
    INSERT INTO tco_cluster.entity (entity_id, name, verified) VALUES (new_id, name, coalesce(verified, false));
    PERFORM tco_cluster.advance_seq('tco_cluster.entity_id_seq', new_id);
    PERFORM tco_cluster.push_globals(NULL, ARRAY[new_id], ARRAY[name], ARRAY[coalesce(verified, false)],
                                     '{}', '{}', NULL, NULL);
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.create_entity(bigint, text, boolean) IS 'Router: creates an entity (global: copied to every shard). Returns its id.';

CREATE FUNCTION tco.create_product(product_code text, granularity tco.granularity) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF product_code IS NULL OR granularity IS NULL THEN
        RAISE EXCEPTION 'argument "%" must not be NULL', CASE WHEN product_code IS NULL THEN 'product_code' ELSE 'granularity' END
            USING ERRCODE = '22004', HINT = 'Pass a value for every required argument.';
    END IF;
    INSERT INTO tco_cluster.product (product_code, granularity) VALUES (product_code, granularity);
    PERFORM tco_cluster.push_globals(NULL, '{}', '{}', '{}', ARRAY[product_code], ARRAY[granularity], NULL, NULL);
    RETURN product_code;
END $$;
COMMENT ON FUNCTION tco.create_product(text, tco.granularity) IS 'Router: creates a product (global: copied to every shard). Returns its code.';

CREATE FUNCTION tco.set_billing_timezone(zone text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF zone IS NULL THEN
        RAISE EXCEPTION 'billing time zone must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass a zone name such as ''UTC'' or ''Asia/Shanghai''.';
    END IF;
    INSERT INTO tco_cluster.config (billing_timezone) VALUES (zone)
        ON CONFLICT (singleton) DO UPDATE SET billing_timezone = excluded.billing_timezone;
    -- each shard validates the zone (22023 for an offset or an unknown name)
    PERFORM tco_cluster.push_globals(NULL, '{}', '{}', '{}', '{}', '{}', zone, NULL);
    RETURN zone;
END $$;
COMMENT ON FUNCTION tco.set_billing_timezone(text) IS 'Router: sets the billing time zone of the installation (global: copied to every shard, which validates it).';

CREATE FUNCTION tco.billing_timezone() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT c.billing_timezone FROM tco_cluster.config c), 'UTC')
$$;
COMMENT ON FUNCTION tco.billing_timezone() IS 'Router: the billing time zone of the installation (default UTC).';

CREATE FUNCTION tco_cluster.set_legacy_cutover(at timestamptz) RETURNS timestamptz
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF at IS NULL THEN
        RAISE EXCEPTION 'legacy cut-over must not be NULL' USING ERRCODE = '22004', HINT = 'Pass an instant.';
    END IF;
    INSERT INTO tco_cluster.config (legacy_cutover) VALUES (at)
        ON CONFLICT (singleton) DO UPDATE SET legacy_cutover = excluded.legacy_cutover;
    PERFORM tco_cluster.push_globals(NULL, '{}', '{}', '{}', '{}', '{}', NULL, at);
    RETURN at;
END $$;
COMMENT ON FUNCTION tco_cluster.set_legacy_cutover(timestamptz) IS 'Sets tco.config.legacy_cutover on every shard (the new-version cut-over of DESIGN section 4).';

CREATE FUNCTION tco.cycle_of(timestamptz) RETURNS tco.billing_cycle
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
BEGIN
    RETURN tco_cluster.px_cycle_of($1);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(NULL, 'tco.cycle_of', SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.cycle_of(timestamptz) IS 'Router: the billing cycle containing an instant (computed by a shard).';

CREATE FUNCTION tco.cycle_range(tco.billing_cycle) RETURNS tstzrange
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
BEGIN
    RETURN tco_cluster.px_cycle_range($1);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(NULL, 'tco.cycle_range', SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.cycle_range(tco.billing_cycle) IS 'Router: [start, next start) of a billing cycle (computed by a shard).';

-- ---------------------------------------------------------------------------
-- Accounts and organizations.

CREATE FUNCTION tco.create_account(account_id bigint, name text, entity_id bigint DEFAULT NULL,
                                   balance numeric DEFAULT 0, credit_limit numeric DEFAULT 0) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    new_id bigint := coalesce(account_id, pg_catalog.nextval('tco_cluster.account_id_seq'));
    s integer;
BEGIN
    -- Home shard: where the entity's accounts already are (a trusteeship or
    -- a pooled organization needs them together), else the least loaded.
    SELECT d.shard_id INTO s FROM tco_cluster.account_directory d
      JOIN tco_cluster.account_entity e ON e.account_id = d.account_id
     WHERE e.entity_id = create_account.entity_id
     GROUP BY d.shard_id ORDER BY count(*) DESC, d.shard_id LIMIT 1;
    s := coalesce(s, tco_cluster.least_loaded_shard(true));
    IF EXISTS (SELECT 1 FROM tco_cluster.account_directory d WHERE d.account_id = new_id) THEN
        RAISE EXCEPTION 'account % already exists', new_id
            USING ERRCODE = '23505', HINT = 'Choose another account id, or pass NULL for the next one.';
    END IF;
    INSERT INTO tco_cluster.account_directory (account_id, shard_id) VALUES (new_id, s);
    IF entity_id IS NOT NULL THEN
        INSERT INTO tco_cluster.account_entity (account_id, entity_id) VALUES (new_id, entity_id);
    END IF;
    PERFORM tco_cluster.advance_seq('tco_cluster.account_id_seq', new_id);
    RETURN tco_cluster.px_create_account(s - 1, new_id, name, entity_id, balance, credit_limit);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.create_account(bigint, text, bigint, numeric, numeric) IS 'Router: creates an account on its home shard: the shard holding most accounts of its entity, else the one with the fewest accounts. Returns its id.';

CREATE FUNCTION tco.create_organization(admin_account_id bigint, name text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(admin_account_id);
    target integer;
    new_org bigint;
    root bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'argument "name" must not be NULL' USING ERRCODE = '22004', HINT = 'Pass a value for every required argument.';
    END IF;
    -- A new organization goes to the shard with the fewest organizations: its
    -- admin moves there first when it can (an account with no settled or
    -- shared history, tco_cluster.move_account); otherwise the organization
    -- stays on the admin's shard.
    target := tco_cluster.least_loaded_shard(false);
    IF target <> s THEN
        BEGIN
            PERFORM tco_cluster.move_account(admin_account_id, target);
            s := target;
        EXCEPTION WHEN object_not_in_prerequisite_state OR SQLSTATE 'TC030' THEN
            NULL;   -- refused (55000), or its ids collide with the target's (TC030)
        END;
    END IF;
    new_org := pg_catalog.nextval('tco_cluster.org_id_seq');
    root := pg_catalog.nextval('tco_cluster.unit_id_seq');
    INSERT INTO tco_cluster.org_directory (org_id, shard_id) VALUES (new_org, s);
    UPDATE tco_cluster.account_directory d SET org_id = new_org WHERE d.account_id = admin_account_id;
    RETURN tco_cluster.px_create_organization(s - 1, new_org, root, admin_account_id, name);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.create_organization(bigint, text) IS 'Router: creates an organization on the shard with the fewest organizations, moving its admin account there first when it can (else on the admin''s shard). Returns org_id.';

CREATE FUNCTION tco.create_unit(org_id bigint, name text, parent_unit_id bigint DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.org_shard(org_id);
BEGIN
    RETURN tco_cluster.px_create_unit(s - 1, pg_catalog.nextval('tco_cluster.unit_id_seq'), org_id, name, parent_unit_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.create_unit(bigint, text, bigint) IS 'Router: creates a unit on its organization''s shard. Returns unit_id.';

CREATE FUNCTION tco.add_member(org_id bigint, account_id bigint, unit_id bigint DEFAULT NULL,
                               policy tco.settlement_policy DEFAULT 'self_pay') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.org_shard(org_id);
    a integer := tco_cluster.account_shard(account_id);
BEGIN
    IF a <> s THEN
        -- the account moves to the organization's shard first (two-phase commit)
        PERFORM tco_cluster.move_account(account_id, s);
    END IF;
    PERFORM tco_cluster.px_add_member(s - 1, org_id, account_id, unit_id, policy);
    UPDATE tco_cluster.account_directory d SET org_id = add_member.org_id WHERE d.account_id = add_member.account_id;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.add_member(bigint, bigint, bigint, tco.settlement_policy) IS 'Router: adds an account to an organization on the organization''s shard, moving the account there first when it lives on another shard.';

CREATE FUNCTION tco.remove_member(account_id bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    PERFORM tco_cluster.px_remove_member(s - 1, account_id);
    UPDATE tco_cluster.account_directory d SET org_id = NULL WHERE d.account_id = remove_member.account_id;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.remove_member(bigint) IS 'Router: removes an account from its organization (the account stays on that shard, its new home).';

-- ---------------------------------------------------------------------------
-- Trusteeship, payer, money: on the member's (account's) shard.

-- A trusteeship needs member and manager in one organization (R2), so on
-- one shard.  Accounts on two shards: the shard of the member cannot see the
-- manager, so the router raises R2 as one server raises it
-- (tco.r2_same_entity_check in src/sql/31_trusteeship_rules.sql), from each
-- account's entity and organization read on its own shard.  (One server
-- checks the time order, an active trusteeship and chains before R2; the
-- router reports R2 first.  The arguments are checked first, by the shard.)
CREATE FUNCTION tco_cluster.px_account_facts(p_part integer, p_account_id bigint,
                                             OUT entity_id bigint, OUT verified boolean, OUT org_id bigint)
LANGUAGE plproxy SET search_path = pg_catalog, pg_temp AS $$
    CLUSTER 'tco_cluster'; RUN ON p_part;
    SELECT a.entity_id, e.verified, m.org_id
      FROM tco.account a LEFT JOIN tco.entity e ON e.entity_id = a.entity_id LEFT JOIN tco.member m ON m.account_id = a.account_id
     WHERE a.account_id = p_account_id;
$$;
-- An account's entity, its entity's verification and its organization,
-- read on its shard (p_shard_id), which is named when it does not answer.
CREATE FUNCTION tco_cluster.account_facts(p_account_id bigint, p_shard_id integer,
                                          OUT entity_id bigint, OUT verified boolean, OUT org_id bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT f.entity_id, f.verified, f.org_id INTO entity_id, verified, org_id
      FROM tco_cluster.px_account_facts(p_shard_id - 1, p_account_id) f;
EXCEPTION WHEN internal_error THEN
    PERFORM tco_cluster.raise_if_unreachable(p_shard_id, SQLERRM);
    RAISE;
END $$;
CREATE FUNCTION tco_cluster.check_r2_across_shards(p_member bigint, p_manager bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s_member integer := tco_cluster.account_shard(p_member);
    s_manager integer := tco_cluster.account_shard(p_manager);
    mb record;
    mg record;
BEGIN
    IF s_member = s_manager THEN
        RETURN;
    END IF;
    SELECT * INTO mb FROM tco_cluster.account_facts(p_member, s_member);
    SELECT * INTO mg FROM tco_cluster.account_facts(p_manager, s_manager);
    IF mb.entity_id IS NULL OR mg.entity_id IS NULL OR mb.entity_id <> mg.entity_id OR NOT coalesce(mb.verified, false) THEN
        RAISE EXCEPTION 'R2: account % (entity %) and management account % (entity %) are not verified as the same entity',
                p_member, coalesce(mb.entity_id::text, 'none'), p_manager, coalesce(mg.entity_id::text, 'none')
            USING ERRCODE = 'TC002',
                  HINT = 'Financial trusteeship requires both accounts to be verified as one common entity (tco.account.entity_id, tco.entity.verified).';
    END IF;
    RAISE EXCEPTION 'R2: account % (organization %) and management account % (organization %) are not in the same organization',
            p_member, coalesce(mb.org_id::text, 'none'), p_manager, coalesce(mg.org_id::text, 'none')
        USING ERRCODE = 'TC002',
              HINT = 'Add both accounts to one organization with tco.add_member() first.';
END $$;
COMMENT ON FUNCTION tco_cluster.check_r2_across_shards(bigint, bigint) IS 'A trusteeship of accounts on two shards breaks R2 (one organization, so one shard): raises TC002 as one server does, from each account''s entity and organization on its shard; returns for accounts on one shard.';

CREATE FUNCTION tco.establish_trusteeship(member_account_id bigint, management_account_id bigint,
                                          at timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(member_account_id);
BEGIN
    IF management_account_id IS NOT NULL AND at IS NOT NULL AND pg_catalog.isfinite(at) THEN   -- else the shard refuses the arguments
        PERFORM tco_cluster.check_r2_across_shards(member_account_id, management_account_id);
    END IF;
    RETURN tco_cluster.px_establish_trusteeship(s - 1, member_account_id, management_account_id, at);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.establish_trusteeship(bigint, bigint, timestamptz) IS 'Router: tco.establish_trusteeship on the member''s shard (its manager is in the same organization, so on the same shard).';

CREATE FUNCTION tco.move_trusteeship(member_account_id bigint, new_management_account_id bigint,
                                     at timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(member_account_id);
BEGIN
    IF new_management_account_id IS NOT NULL AND at IS NOT NULL AND pg_catalog.isfinite(at) THEN   -- else the shard refuses the arguments
        PERFORM tco_cluster.check_r2_across_shards(member_account_id, new_management_account_id);
    END IF;
    RETURN tco_cluster.px_move_trusteeship(s - 1, member_account_id, new_management_account_id, at);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.move_trusteeship(bigint, bigint, timestamptz) IS 'Router: tco.move_trusteeship on the member''s shard.';

CREATE FUNCTION tco.end_trusteeship(member_account_id bigint, at timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(member_account_id);
BEGIN
    PERFORM tco_cluster.px_end_trusteeship(s - 1, member_account_id, at);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.end_trusteeship(bigint, timestamptz) IS 'Router: tco.end_trusteeship on the member''s shard.';

CREATE FUNCTION tco.trusteeship_effective_payer(account_id bigint, product_code text, at timestamptz) RETURNS bigint
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    RETURN tco_cluster.px_trusteeship_effective_payer(s - 1, account_id, product_code, at);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.trusteeship_effective_payer(bigint, text, timestamptz) IS 'Router: the payer of a line of the account for the product starting at the instant (R6), answered by the account''s shard.';

CREATE FUNCTION tco.explain_payer(account_id bigint, product_code text, at timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    RETURN tco_cluster.px_explain_payer(s - 1, account_id, product_code, at);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.explain_payer(bigint, text, timestamptz) IS 'Router: tco.explain_payer on the account''s shard.';

CREATE FUNCTION tco.available_credit(account_id bigint) RETURNS numeric
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    RETURN tco_cluster.px_available_credit(s - 1, account_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.available_credit(bigint) IS 'Router: tco.available_credit on the account''s shard (a managed member''s is its manager''s, on the same shard).';

CREATE FUNCTION tco.service_available(account_id bigint) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    RETURN tco_cluster.px_service_available(s - 1, account_id);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.service_available(bigint) IS 'Router: tco.service_available on the account''s shard.';

CREATE FUNCTION tco.deposit(account_id bigint, amount numeric) RETURNS numeric
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(account_id);
BEGIN
    RETURN tco_cluster.px_deposit(s - 1, account_id, amount);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.deposit(bigint, numeric) IS 'Router: tco.deposit on the account''s shard.';

CREATE FUNCTION tco_cluster.grant_benefit(p_kind text, p_owner bigint, p_amount numeric, p_valid_to timestamptz,
                                          p_product_code text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer := tco_cluster.account_shard(p_owner);
BEGIN
    RETURN tco_cluster.px_grant_benefit(s - 1, p_kind, p_owner, p_amount, p_valid_to, p_product_code);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
CREATE FUNCTION tco.grant_coupon(owner_account_id bigint, amount numeric, valid_to timestamptz, product_code text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco_cluster.grant_benefit('coupon', owner_account_id, amount, valid_to, product_code)
$$;
CREATE FUNCTION tco.grant_voucher(owner_account_id bigint, amount numeric, valid_to timestamptz, product_code text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco_cluster.grant_benefit('voucher', owner_account_id, amount, valid_to, product_code)
$$;
CREATE FUNCTION tco.grant_stored_value_card(owner_account_id bigint, amount numeric, valid_to timestamptz, product_code text DEFAULT NULL)
RETURNS bigint LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco_cluster.grant_benefit('stored_value_card', owner_account_id, amount, valid_to, product_code)
$$;
COMMENT ON FUNCTION tco.grant_coupon(bigint, numeric, timestamptz, text) IS 'Router: tco.grant_coupon on the owner''s shard (benefit ids are the shard''s).';
COMMENT ON FUNCTION tco.grant_voucher(bigint, numeric, timestamptz, text) IS 'Router: tco.grant_voucher on the owner''s shard (benefit ids are the shard''s).';
COMMENT ON FUNCTION tco.grant_stored_value_card(bigint, numeric, timestamptz, text) IS 'Router: tco.grant_stored_value_card on the owner''s shard (benefit ids are the shard''s).';

CREATE FUNCTION tco.set_contract_discount(account_id bigint, entity_id bigint, rate numeric,
                                          product_code text DEFAULT NULL, valid_from timestamptz DEFAULT now(),
                                          valid_to timestamptz DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer;
    id bigint;
BEGIN
    IF account_id IS NOT NULL THEN
        s := tco_cluster.account_shard(account_id);
        RETURN tco_cluster.px_set_contract_discount(s - 1, account_id, entity_id, rate, product_code, valid_from, valid_to);
    END IF;
    -- an entity-level discount applies to the entity's accounts on every shard
    SELECT min(x) INTO id FROM tco_cluster.px_set_contract_discount_all(entity_id, rate, product_code, valid_from, valid_to) x;
    RETURN id;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, 'tco.set_contract_discount', SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.set_contract_discount(bigint, bigint, numeric, text, timestamptz, timestamptz) IS 'Router: an account''s discount on its shard; an entity''s discount on every shard. Returns the discount id (per shard).';

-- ---------------------------------------------------------------------------
-- Bill lines and settlement.

CREATE FUNCTION tco.insert_bill_lines(account_id bigint[], product_code text[], charge_type tco.charge_type[],
                                      period_start timestamptz[], period_end timestamptz[], list_amount numeric[],
                                      issued_at timestamptz[], paid_at timestamptz[]) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    n integer := pg_catalog.cardinality(account_id);
    parts integer[];
    missing bigint;
    inserted bigint;
BEGIN
    IF account_id IS NULL OR product_code IS NULL OR period_start IS NULL OR period_end IS NULL OR list_amount IS NULL THEN
        RAISE EXCEPTION 'argument "%" must not be NULL',
                CASE WHEN account_id IS NULL THEN 'account_id' WHEN product_code IS NULL THEN 'product_code'
                     WHEN period_start IS NULL THEN 'period_start' WHEN period_end IS NULL THEN 'period_end'
                     ELSE 'list_amount' END
            USING ERRCODE = '22004', HINT = 'Pass a value for every required argument.';
    END IF;
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
    IF n = 0 THEN
        RETURN 0;
    END IF;
    SELECT pg_catalog.array_agg(d.shard_id - 1 ORDER BY u.i), min(u.a) FILTER (WHERE d.shard_id IS NULL)
      INTO parts, missing
      FROM pg_catalog.unnest(account_id) WITH ORDINALITY AS u(a, i)
      LEFT JOIN tco_cluster.account_directory d ON d.account_id = u.a;
    IF missing IS NOT NULL OR pg_catalog.array_position(account_id, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'bill line of account % that does not exist', coalesce(missing::text, 'NULL')
            USING ERRCODE = CASE WHEN missing IS NULL THEN '23502' ELSE '23503' END,
                  HINT = 'Create the account with tco.create_account() through the router first.';
    END IF;
    SELECT sum(x) INTO inserted
      FROM tco_cluster.px_insert_bill_lines(parts, account_id, product_code,
                                            coalesce(charge_type, pg_catalog.array_fill(NULL::tco.charge_type, ARRAY[n])),
                                            period_start, period_end, list_amount,
                                            coalesce(issued_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n])),
                                            coalesce(paid_at, pg_catalog.array_fill(NULL::timestamptz, ARRAY[n]))) x;
    RETURN inserted;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(NULL, 'tco.insert_bill_lines', SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.insert_bill_lines(bigint[], text[], tco.charge_type[], timestamptz[], timestamptz[], numeric[], timestamptz[], timestamptz[]) IS
'Router: the lines are split by the shard of their account (PL/Proxy SPLIT) and each shard inserts its own in one statement. Returns the number of lines inserted.';

-- A bill line's account.  The router keeps no directory of lines: a line
-- id drawn on a shard is in that shard's range (README "Running on several
-- servers", Ids), so that shard is asked first; a line that moved with its
-- account, or that was drawn before its shard had a range, is looked for on
-- every shard (RUN ON ALL).  NULL: the line is on no shard.
CREATE FUNCTION tco_cluster.account_of_line(line_id bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    guess integer;
    a bigint;
BEGIN
    IF line_id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT s.shard_id INTO guess FROM tco_cluster.shard_conf s WHERE s.shard_id = account_of_line.line_id / tco_cluster.id_range_size();
    IF guess IS NOT NULL THEN
        BEGIN
            a := tco_cluster.px_line_account(guess - 1, line_id);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
            PERFORM tco_cluster.reraise(guess, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
            RAISE;
        END;
        IF a IS NOT NULL THEN
            RETURN a;
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM tco_cluster.shard_conf) THEN
        RETURN NULL;
    END IF;
    BEGIN
        SELECT min(x) INTO a FROM tco_cluster.px_line_account_all(line_id) x;
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
        PERFORM tco_cluster.reraise(NULL, pg_catalog.format('looking for bill line %s on every shard', line_id), SQLSTATE, SQLERRM, e_detail, e_hint);
        RAISE;
    END;
    RETURN a;
END $$;
COMMENT ON FUNCTION tco_cluster.account_of_line(bigint) IS 'The account of a bill line (NULL: on no shard), asked of the shard whose id range holds the line id, else of every shard.';

CREATE FUNCTION tco_cluster.shard_of_line(line_id bigint) RETURNS integer
LANGUAGE sql STRICT SET search_path = pg_catalog, pg_temp AS $$
    SELECT tco_cluster.shard_of_account(tco_cluster.account_of_line(line_id))
$$;
COMMENT ON FUNCTION tco_cluster.shard_of_line(bigint) IS 'The shard holding a bill line (NULL: on no shard): its account''s.';

CREATE FUNCTION tco.correct_bill_line(line_id bigint, new_list_amount numeric, reason text) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    a bigint := tco_cluster.account_of_line(line_id);
    s integer;
BEGIN
    IF a IS NOT NULL THEN
        -- not while the account moves (tco_cluster.move_account holds this
        -- lock): the directory read after it names the shard the line is on
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtext('tco_cluster.move_account'), pg_catalog.hashint8(a));
        s := tco_cluster.account_shard(a);
    ELSE
        -- on no shard: a shard refuses it as one server does (the arguments
        -- first, then 23503 for the line)
        SELECT sc.shard_id INTO s FROM tco_cluster.shard_conf sc WHERE sc.shard_id = correct_bill_line.line_id / tco_cluster.id_range_size();
        s := coalesce(s, tco_cluster.least_loaded_shard(true));
    END IF;
    RETURN tco_cluster.px_correct_bill_line(s - 1, line_id, new_list_amount, reason);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, NULL, SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.correct_bill_line(bigint, numeric, text) IS
'Router: tco.correct_bill_line on the shard of the line''s account (found with tco_cluster.account_of_line). Returns the id of the line written there (the shard''s id), NULL when the amount is already right; 23503 for a line on no shard, as on one server.';

CREATE FUNCTION tco.settle_cycle(cycle tco.billing_cycle, org_id bigint DEFAULT NULL,
                                 OUT statements bigint, OUT lines bigint, OUT list_total numeric, OUT due_total numeric)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e_detail text;
    e_hint text;
    s integer;
BEGIN
    IF cycle IS NULL THEN
        RAISE EXCEPTION 'argument "cycle" must not be NULL' USING ERRCODE = '22004', HINT = 'Pass a cycle such as ''2023-02''.';
    END IF;
    IF org_id IS NOT NULL THEN
        s := tco_cluster.org_shard(org_id);
        SELECT r.statements, r.lines, r.list_total, r.due_total INTO statements, lines, list_total, due_total
          FROM tco_cluster.px_settle_cycle(s - 1, cycle, org_id) r;
        RETURN;
    END IF;
    statements := 0; lines := 0; list_total := 0; due_total := 0;
    IF EXISTS (SELECT 1 FROM tco_cluster.shard_conf) THEN
        SELECT coalesce(sum(r.statements), 0), coalesce(sum(r.lines), 0), coalesce(sum(r.list_total), 0), coalesce(sum(r.due_total), 0)
          INTO statements, lines, list_total, due_total
          FROM tco_cluster.px_settle_cycle_all(cycle) r;
    END IF;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS e_detail = PG_EXCEPTION_DETAIL, e_hint = PG_EXCEPTION_HINT;
    PERFORM tco_cluster.reraise(s, pg_catalog.format('settlement of cycle %s on every shard', cycle), SQLSTATE, SQLERRM, e_detail, e_hint);
    RAISE;
END $$;
COMMENT ON FUNCTION tco.settle_cycle(tco.billing_cycle, bigint) IS
'Router: settles one organization on its shard, or (org_id NULL) every shard in parallel (PL/Proxy RUN ON ALL) and returns the summed row. Idempotent per shard: after a shard outage, rerun it to complete what was missing.';

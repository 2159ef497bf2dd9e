-- The INSERTs of DESIGN section 6 as functions: tco.create_entity,
-- tco.create_account, tco.create_product and tco.insert_bill_lines (a router
-- can route a function call, not an INSERT; README "Functions").  Each is
-- exactly the INSERT it stands for, so every trigger and rule applies as
-- for direct DML; NULL for an id means "take the default".

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
    -- the partitions of new cycles first, so that the lines go straight into
    -- them (36_partition.sql)
    PERFORM tco.prepare_cycles_of(period_start);
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

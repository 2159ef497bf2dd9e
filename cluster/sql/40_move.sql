-- Moving an account to another shard (DESIGN section 10): see below.
CREATE FUNCTION tco_cluster.move_account(account_id bigint, to_shard_id integer) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'account % lives on shard %, not on shard % of the organization', account_id,
            tco_cluster.shard_of_account(account_id), to_shard_id
        USING ERRCODE = '0A000', HINT = 'Moving accounts between shards is not available yet: create the account after its organization.';
END $$;

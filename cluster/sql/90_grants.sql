-- Privileges of the router.  Nothing is usable by PUBLIC except the
-- functions supporting tco.billing_cycle.  tco_admin runs the routed
-- functions, reads the directory and the shard list with conninfo, and adds
-- shards (tco_cluster.add_shard, SECURITY DEFINER); only superusers map
-- roles to credentials (tco_cluster.map_role).  tco_reader reads the BI views (through its
-- own user mappings: the shards' row-level security applies), the directory
-- and the shard list without conninfo, and calls the read-only functions.
REVOKE ALL ON SCHEMA tco, tco_cluster FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA tco, tco_cluster FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA tco_cluster FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA tco, tco_cluster FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tco.billing_cycle_in(cstring), tco.billing_cycle_out(tco.billing_cycle),
                          tco.billing_cycle_recv(internal), tco.billing_cycle_send(tco.billing_cycle) TO PUBLIC;

GRANT USAGE ON SCHEMA tco, tco_cluster TO tco_admin, tco_reader;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tco TO tco_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA tco_cluster TO tco_admin;
-- map_role stays with superusers: a mapping without a password
-- (password_required false) lets its role connect to the shards without one.
-- The moves' internals run inside tco_cluster.move_account and recover():
-- deciding a move's outcome by hand could half-move an account.
REVOKE EXECUTE ON FUNCTION tco_cluster.map_role(name, text, text),
                           tco_cluster.create_fdw_mapping(name, text, text), tco_cluster.rebuild_views(),
                           tco_cluster.install_shard_support(name), tco_cluster.recover_move(bigint, boolean, text),
                           tco_cluster.dblink_exec(text, text), tco_cluster.dblink_connect(text, text),
                           tco_cluster.dblink_disconnect_all(), tco_cluster.dblink_value(text, text),
                           tco_cluster.dblink_values(text, text),
                           tco_cluster.copy_moved_rows(text, text, jsonb, integer) FROM tco_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON tco_cluster.org_directory, tco_cluster.account_directory, tco_cluster.account_entity,
                                        tco_cluster.entity, tco_cluster.product, tco_cluster.config TO tco_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA tco_cluster TO tco_admin;
GRANT UPDATE ON ALL SEQUENCES IN SCHEMA tco_cluster TO tco_admin;
GRANT SELECT ON tco_cluster.shard, tco_cluster.org_directory, tco_cluster.account_directory,
                tco_cluster.entity, tco_cluster.product TO tco_admin, tco_reader;
GRANT SELECT ON tco.settlement_by_payer, tco.settlement_by_member, tco.settlement_by_unit TO tco_admin, tco_reader;
GRANT EXECUTE ON FUNCTION tco.billing_timezone(), tco.cycle_of(timestamptz), tco.cycle_range(tco.billing_cycle),
                          tco.trusteeship_effective_payer(bigint, text, timestamptz),
                          tco.explain_payer(bigint, text, timestamptz),
                          tco.available_credit(bigint), tco.service_available(bigint),
                          tco_cluster.shard_of_org(bigint), tco_cluster.shard_of_account(bigint),
                          tco_cluster.org_shard(bigint), tco_cluster.account_shard(bigint),
                          tco_cluster.raise_if_unreachable(integer, text), tco_cluster.raise_unreachable_shards(text, text),
                          tco_cluster.raise_remote_error(text, text, text, text),
                          tco_cluster.reraise(integer, text, text, text, text, text),
                          tco_cluster.is_connection_failure(text), tco_cluster.describe_shard(integer),
                          tco_cluster.redact(text), tco_cluster.px_ping(integer),
                          tco_cluster.px_cycle_of(timestamptz), tco_cluster.px_cycle_range(tco.billing_cycle),
                          tco_cluster.px_trusteeship_effective_payer(integer, bigint, text, timestamptz),
                          tco_cluster.px_explain_payer(integer, bigint, text, timestamptz),
                          tco_cluster.px_available_credit(integer, bigint), tco_cluster.px_service_available(integer, bigint)
    TO tco_reader;

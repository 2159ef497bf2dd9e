#!/usr/bin/env bash
# One tco installation over several servers (DESIGN section 10, README
# "Running on several servers"): starts a router and three shards, plus one
# single tco server for reference, each a throwaway cluster of its own
# (private socket directory and port, run as postgres, all stopped at the end,
# also on failure), then:
#   1. the same workload (test/cluster/workload.sql) against one server and
#      against the router: identical output (payers, settlement, BI views);
#   2. the router's own checks (test/cluster/router.sql): topology, directory,
#      SPLIT reaching each shard once, remote SQL of the BI views;
#   3. faults, security and account moves (below).
# Run by scripts/test.sh; alone: TCO_PGROOT=... bash scripts/test_cluster.sh
source "$(dirname "$0")/common.sh"
cd "$TCO_ROOT"
if [ -z "${PGHOST:-}" ]; then          # alone: set up as scripts/test.sh does
    ensure_deps
    build_install
fi
[ "$(id -u)" -eq 0 ] && export PGUSER=postgres
export PGUSER="${PGUSER:-$(id -un)}"

CL_TMP=$(mktemp -d /tmp/tco-cluster.XXXXXX); chmod 755 "$CL_TMP"
NODES=(router shard1 shard2 shard3 single)
declare -A PORT
cleanup() {
    local n
    for n in "${NODES[@]}"; do node_stop "$CL_TMP/$n"; done
    rm -rf "$CL_TMP"
}
trap cleanup EXIT

for n in "${NODES[@]}"; do
    PORT[$n]=$(node_start "$CL_TMP/$n")
done
log "router ${PORT[router]}, shards ${PORT[shard1]} ${PORT[shard2]} ${PORT[shard3]}, single ${PORT[single]} (sockets under $CL_TMP)"
# psql on a node: on NODE [psql args...]
on() { local n=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -h "$CL_TMP/$n" -p "${PORT[$n]}" "$@"; }
conninfo() { echo "host=$CL_TMP/$1 port=${PORT[$1]} dbname=tco"; }

for n in shard1 shard2 shard3 single; do
    on "$n" -d postgres -c 'CREATE DATABASE tco' >/dev/null
    on "$n" -d tco -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION tco CASCADE' >/dev/null
done
on router -d postgres -c 'CREATE DATABASE tco' >/dev/null
on router -d tco >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION tco_cluster CASCADE;
SELECT tco_cluster.add_shard('shard1', '$(conninfo shard1)');
SELECT tco_cluster.add_shard('shard2', '$(conninfo shard2)');
SELECT tco_cluster.add_shard('shard3', '$(conninfo shard3)');
SQL

log "1. differential: the same workload on one server and on the router"
on single -d tco -f test/cluster/workload.sql >"$CL_TMP/single.out"
on router -d tco -f test/cluster/workload.sql >"$CL_TMP/router.out"
if ! diff -u "$CL_TMP/single.out" "$CL_TMP/router.out" >"$CL_TMP/workload.diff"; then
    head -n 60 "$CL_TMP/workload.diff"; echo "FAIL: the router's answers differ from one server's"; exit 1
fi
lines=$(wc -l <"$CL_TMP/router.out")
[ "$lines" -gt 2000 ] || { echo "FAIL: the workload output is too short ($lines lines)"; exit 1; }
log "identical output ($lines lines)"
[ -n "${TCO_CLUSTER_KEEP:-}" ] && cp "$CL_TMP/router.out" "$TCO_CLUSTER_KEEP"
on router -d tco -c 'SELECT * FROM tco_cluster.shard ORDER BY shard_id'

#!/usr/bin/env bash
# Random SQL against tco with sqlsmith (Debian's sqlsmith), its own command,
# not part of the suite (README "Fuzzing and memcheck"):
#   bash scripts/sqlsmith.sh                    SMITH_QUERIES=20000 queries, seeds 1..SMITH_SEEDS (3)
# A throwaway server holds the demo's sample organization, settled; sqlsmith
# generates queries over every table, view and function it can see (tco's
# included), as a superuser.  The run fails if the server crashed (a backend
# killed by a signal, recovery) or if any error of SQLSTATE class XX was
# raised inside a tco function (the server logs every error with its
# SQLSTATE and context; errors of PostgreSQL's own functions are counted,
# not judged).
source "$(dirname "$0")/common.sh"
set +e
trap pg_stop EXIT
ensure_deps sqlsmith || exit 1
build_install || exit 1
pg_start || exit 1
cd "$TCO_ROOT"
QUERIES=${SMITH_QUERIES:-20000}
SEEDS=${SMITH_SEEDS:-3}
cat >>"$PG_TMP/data/postgresql.conf" <<CONF
log_line_prefix = '%e '
log_error_verbosity = default
statement_timeout = '2s'
CONF
as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -w reload >/dev/null
psql -qX -c 'CREATE DATABASE tco_smith' >/dev/null
PGDATABASE=tco_smith psql -X -q -v ON_ERROR_STOP=1 -f demo/sample.sql >/dev/null || exit 1
PGDATABASE=tco_smith psql -X -q -v ON_ERROR_STOP=1 -c "SELECT tco.settle_cycle('2023-01')" >/dev/null || exit 1
target="host=$PGHOST port=$PGPORT dbname=tco_smith user=$PGUSER"
for seed in $(seq 1 "$SEEDS"); do
    log "sqlsmith seed $seed: $QUERIES queries"
    as_pg sqlsmith --target="$target" --seed="$seed" --max-queries="$QUERIES" >"$PG_TMP/smith-$seed.log" 2>&1
    tail -n 3 "$PG_TMP/smith-$seed.log"
    if ! psql -qX -d tco_smith -c 'SELECT 1' >/dev/null 2>&1; then
        echo "server not answering after seed $seed"; exit 1
    fi
done
log=$PG_TMP/server.log
crashes=$(grep -cE 'terminated by signal|was terminated by|server process .* exited with exit code [^0]|database system was not properly shut down' "$log")
# an XX error whose context or statement is inside tco
tco_xx=$(awk '/^XX[0-9A-Z]{3} ERROR:/ {err=$0; getline ctx; if (err ~ /tco/ || ctx ~ /tco\./) print err}' "$log" | sort | uniq -c)
all_xx=$(grep -c '^XX[0-9A-Z]\{3\} ERROR:' "$log")
errors=$(grep -c ' ERROR:' "$log")
echo "sqlsmith: $((SEEDS * QUERIES)) queries, $errors errors, $all_xx of class XX, $crashes crash(es)"
[ "$all_xx" -gt 0 ] && { echo "class XX errors (most frequent first):"; grep '^XX[0-9A-Z]\{3\} ERROR:' "$log" | sort | uniq -c | sort -rn | head -5; }
[ -n "$tco_xx" ] && { echo "class XX errors in tco:"; echo "$tco_xx"; }
if [ "$crashes" -gt 0 ] || [ -n "$tco_xx" ]; then
    grep -E -B2 -A8 'terminated by signal' "$log" | head -60
    echo "sqlsmith: NOT CLEAN"; exit 1
fi
echo "sqlsmith: CLEAN"

#!/usr/bin/env bash
# The long fuzz run (issue 16), as its own command, not part of scripts/test.sh:
# test/fuzz_c.sql (every C function of schema tco and its SQL wrappers called
# with random and extreme arguments, no error of class XX, the server alive
# after each batch; the payer and billing-time differential checks) with
# FUZZ_N calls per function (default 2000; FUZZ_PARALLEL_N, default a tenth,
# in parallel mode) for each of FUZZ_SEEDS seeds (default 3), against a
# throwaway server.  Exits non-zero on any failure,
# and if the server log shows a crash.
#   FUZZ_N=5000 FUZZ_SEEDS=5 bash scripts/fuzz.sh
source "$(dirname "$0")/common.sh"
trap pg_stop EXIT

FUZZ_N=${FUZZ_N:-2000}
FUZZ_PARALLEL_N=${FUZZ_PARALLEL_N:-$(( FUZZ_N / 10 ))}   # calls in parallel mode start a worker each
FUZZ_SEEDS=${FUZZ_SEEDS:-3}
ensure_deps
build_install
pg_start
cd "$TCO_ROOT"
psql -qX -v ON_ERROR_STOP=1 -c 'CREATE DATABASE tco_fuzz' >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d tco_fuzz -c 'CREATE EXTENSION pgtap' >/dev/null
status=0
for i in $(seq 1 "$FUZZ_SEEDS"); do
    seed=$(awk -v i="$i" 'BEGIN { printf "%.4f", (i * 0.1618) - int(i * 0.1618) }')
    log "fuzz: $FUZZ_N calls per function, seed $seed"
    start=$(date +%s)
    if ! PGOPTIONS="-c fuzz.n=$FUZZ_N -c fuzz.parallel_n=$FUZZ_PARALLEL_N -c fuzz.seed=$seed" pg_prove -d tco_fuzz --ext .sql test/fuzz_c.sql; then
        status=1
    fi
    echo "    $(( $(date +%s) - start )) s"
done
if grep -E "terminated by signal|server process .* was terminated|PANIC" "$PG_TMP/server.log"; then
    echo "FAIL: the server log shows a crash"
    status=1
fi
[ "$status" -eq 0 ] && echo "PASS: no error of class XX, no crash" || echo "FAIL"
exit "$status"

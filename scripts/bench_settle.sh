#!/usr/bin/env bash
# The settlement benchmark alone (README "Settlement speed"): scripts/bench.sh
# without the payer benchmark, on its own throwaway server.  Same
# environment variables (BENCH_SETTLE_LINES, BENCH_ORDERS, BENCH_WORK_MEMS,
# BENCH_SCALE_LINES, BENCH_ACCOUNTS, BENCH_RUNS, BENCH_OUT), e.g.
#   BENCH_SETTLE_LINES=1000000 BENCH_SCALE_LINES=0 bash scripts/bench_settle.sh
exec env BENCH_PAYER=0 bash "$(dirname "$0")/bench.sh" "$@"

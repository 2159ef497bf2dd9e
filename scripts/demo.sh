#!/usr/bin/env bash
# The main job: install what is missing, build and install tco, start a
# throwaway PostgreSQL 15, load a realistic sample organization, show it,
# run a settlement and show the result.  The server is stopped at the end.
source "$(dirname "$0")/common.sh"
trap pg_stop EXIT
ensure_deps graphviz
build_install
pg_start
cd "$TCO_ROOT"
psql -qX -c 'CREATE DATABASE tco_demo' >/dev/null
export PGDATABASE=tco_demo
log "loading the sample: 3 organizations, 3000 accounts, trusteeships, two months of bill lines"
psql -X -q -v ON_ERROR_STOP=1 -f demo/sample.sql >/dev/null
psql -X -v ON_ERROR_STOP=1 -f demo/show.sql
for f in demo/settle.sql; do
    [ -f "$f" ] && psql -X -v ON_ERROR_STOP=1 -f "$f"
done
log "org chart of 'Initech IT' (Graphviz DOT, first lines)"
psql -X -At -v ON_ERROR_STOP=1 -c "SELECT tco.org_chart(3, 'dot')" > /tmp/tco-demo-org-chart.dot
head -n 12 /tmp/tco-demo-org-chart.dot
if command -v dot >/dev/null; then
    dot -Tsvg /tmp/tco-demo-org-chart.dot -o /tmp/tco-demo-org-chart.svg && echo "rendered to /tmp/tco-demo-org-chart.svg"
fi

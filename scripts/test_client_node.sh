#!/usr/bin/env bash
# tco from Node.js application code with node-pg: test/clients/test_node_pg.js,
# in its own database on the suite's server (PGHOST/PGPORT), as a login role
# granted tco_admin and one granted tco_reader.  The npm packages (pg,
# lossless-json) are installed from test/clients/package-lock.json into
# test/clients/node_modules (git-ignored).  README "Real clients".
set -euo pipefail
cd "$(dirname "$0")/.."
DB=tco_client_node APP=tco_node_app READER=tco_node_reader
if [ ! -d test/clients/node_modules/pg ] || [ test/clients/package-lock.json -nt test/clients/node_modules/.package-lock.json ]; then
    [ -n "${HOME:-}" ] || export npm_config_cache=/tmp/tco-npm-cache   # npm keeps its cache under $HOME
    (cd test/clients && { npm ci --no-audit --no-fund --loglevel=error || { sleep 5; npm ci --no-audit --no-fund --loglevel=error; }; })
fi
source scripts/client_db.sh
PGDATABASE=$DB TCO_APP_ROLE=$APP TCO_READER_ROLE=$READER node test/clients/test_node_pg.js

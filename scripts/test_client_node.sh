#!/usr/bin/env bash
# tco from Node.js application code with node-pg: test/clients/test_node_pg.js,
# in its own database on the suite's server (PGHOST/PGPORT), as a login role
# granted tco_admin and one granted tco_reader.  The npm packages (pg,
# lossless-json) are installed from test/clients/package-lock.json into
# test/clients/node_modules (git-ignored).  README "Real clients".
set -euo pipefail
cd "$(dirname "$0")/.."
DB=tco_client_node APP=tco_node_app READER=tco_node_reader
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
if [ ! -d test/clients/node_modules/pg ] || [ test/clients/package-lock.json -nt test/clients/node_modules/.package-lock.json ]; then
    [ -n "${HOME:-}" ] || export npm_config_cache=/tmp/tco-npm-cache   # npm keeps its cache under $HOME
    (cd test/clients && { npm ci --no-audit --no-fund --loglevel=error || { sleep 5; npm ci --no-audit --no-fund --loglevel=error; }; })
fi
cleanup() {
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "DROP ROLE IF EXISTS $APP" -c "DROP ROLE IF EXISTS $READER" \
        >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
"${PSQL[@]}" -d "$DB" >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
CREATE ROLE $APP LOGIN IN ROLE tco_admin;
CREATE ROLE $READER LOGIN IN ROLE tco_reader;
SQL
PGDATABASE=$DB TCO_APP_ROLE=$APP TCO_READER_ROLE=$READER node test/clients/test_node_pg.js

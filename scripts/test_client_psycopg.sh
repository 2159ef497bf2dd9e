#!/usr/bin/env bash
# tco from Python application code with psycopg 3 (Debian's python3-psycopg,
# installed by ensure_deps): test/clients/test_psycopg.py, in its own
# database on the suite's server (PGHOST/PGPORT), as a login role granted
# tco_admin and one granted tco_reader.  README "Real clients".
set -euo pipefail
cd "$(dirname "$0")/.."
DB=tco_client_py APP=tco_py_app READER=tco_py_reader
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
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
# Debian's interpreter, where python3-psycopg is installed
PGDATABASE=$DB TCO_APP_ROLE=$APP TCO_READER_ROLE=$READER /usr/bin/python3 test/clients/test_psycopg.py

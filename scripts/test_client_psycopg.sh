#!/usr/bin/env bash
# tco from Python application code with psycopg 3 (Debian's python3-psycopg,
# installed by ensure_deps): test/clients/test_psycopg.py, in its own
# database on the suite's server (PGHOST/PGPORT), as a login role granted
# tco_admin and one granted tco_reader.  README "Real clients".
set -euo pipefail
cd "$(dirname "$0")/.."
DB=tco_client_py APP=tco_py_app READER=tco_py_reader
source scripts/client_db.sh
# Debian's interpreter, where python3-psycopg is installed
PGDATABASE=$DB TCO_APP_ROLE=$APP TCO_READER_ROLE=$READER /usr/bin/python3 test/clients/test_psycopg.py

# Shared by scripts/test_client_psycopg.sh and scripts/test_client_node.sh
# (sourced, not run): a database $DB with tco on the suite's server
# (PGHOST/PGPORT), a login role $APP granted tco_admin and a login role
# $READER granted tco_reader, all dropped again when the script exits.
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
client_db_cleanup() {
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "DROP ROLE IF EXISTS $APP" -c "DROP ROLE IF EXISTS $READER" \
        >/dev/null 2>&1 || true
}
trap client_db_cleanup EXIT
client_db_cleanup
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
"${PSQL[@]}" -d "$DB" >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
CREATE ROLE $APP LOGIN IN ROLE tco_admin;
CREATE ROLE $READER LOGIN IN ROLE tco_reader;
SQL

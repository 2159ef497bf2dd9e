#!/usr/bin/env bash
# pg_dump + restore keeps every row of every tco table and every rule.
# Uses the server in PGHOST/PGPORT (the test suite's).  Restore runs with
# session_replication_role = replica: the data are restored as they were,
# without the triggers that would otherwise re-derive them (a root unit per
# organization, history rows).  See README "Backup and restore".
set -euo pipefail
cd "$(dirname "$0")/.."
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -c 'DROP DATABASE IF EXISTS tco_dump_src' -c 'DROP DATABASE IF EXISTS tco_dump_dst' \
             -c 'CREATE DATABASE tco_dump_src' -c 'CREATE DATABASE tco_dump_dst'
"${PSQL[@]}" -d tco_dump_src -f demo/sample.sql >/dev/null
# settled cycles, statements, invoices and alerts too
[ -f demo/settle.sql ] && "${PSQL[@]}" -d tco_dump_src -f demo/settle.sql >/dev/null
dump=$(mktemp /tmp/tco-dump.XXXXXX)
pg_dump -Fc -d tco_dump_src -f "$dump"
PGOPTIONS='-c session_replication_role=replica' pg_restore --exit-on-error -d tco_dump_dst "$dump"
rm -f "$dump"

# a digest of every row of every table of the extension
tables=$("${PSQL[@]}" -At -d tco_dump_src -c "SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tco' AND c.relkind = 'r'")
fail=0
for t in $tables; do
    q="SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '-') FROM tco.$t x"
    a=$("${PSQL[@]}" -At -d tco_dump_src -c "$q"); b=$("${PSQL[@]}" -At -d tco_dump_dst -c "$q")
    if [ "$a" != "$b" ]; then echo "tco.$t differs after restore: $a vs $b"; fail=1; fi
done
echo "compared $(echo $tables | wc -w) tables"

# rules still hold after restore, and new ids do not collide with restored ones
out=$(psql -X -q -At -d tco_dump_dst 2>&1 <<'SQL' || true
SELECT tco.billing_timezone();
INSERT INTO tco.entity (name, verified) VALUES ('after restore', true) RETURNING 'new entity ok';
SELECT tco.create_unit(1, 'after restore') > 0 AS new_unit_ok;
SELECT tco.add_member(1, 4);
SQL
)
echo "$out"
echo "$out" | grep -q '^Asia/Shanghai$' || { echo "billing time zone lost"; fail=1; }
echo "$out" | grep -q 'new entity ok' || { echo "identity sequence not restored"; fail=1; }
echo "$out" | grep -q '^t$' || { echo "unit creation failed after restore"; fail=1; }
echo "$out" | grep -q 'already a member of organization' || { echo "membership rule not enforced after restore"; fail=1; }
"${PSQL[@]}" -c 'DROP DATABASE tco_dump_src' -c 'DROP DATABASE tco_dump_dst'
[ $fail -eq 0 ] && echo "dump/restore: ok"
exit $fail

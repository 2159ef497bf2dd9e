#!/usr/bin/env bash
# Plain pg_dump + pg_restore keep every row of every tco table and every rule
# (README "Backup and restore"), with no extra option and no
# session_replication_role, along three paths:
#   1. pg_dump -Fc, then pg_restore into a new database (a superuser);
#   2. pg_dump in plain format, then psql (a superuser);
#   3. pg_dump --data-only, then psql into a fresh CREATE EXTENSION tco, run by
#      the database owner, an ordinary role with tco_admin and BYPASSRLS.
# pg_dump and pg_restore run with row_security = off, and tco's triggers
# then take the rows as stored history (tco.restoring()): no root unit,
# history row, alert or ledger balance is derived twice, and no past action is
# judged again.  Afterwards, and for anyone else at any time, every rule holds.
# Uses the server in PGHOST/PGPORT (the test suite's).
set -euo pipefail
cd "$(dirname "$0")/.."
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
dbs="tco_dump_src tco_dump_fc tco_dump_plain tco_dump_data"
for d in $dbs; do "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $d"; done
"${PSQL[@]}" -c 'DROP ROLE IF EXISTS tco_t_dbowner' -c 'CREATE ROLE tco_t_dbowner LOGIN BYPASSRLS' -c 'GRANT tco_admin TO tco_t_dbowner' 2>/dev/null \
  || "${PSQL[@]}" -c 'CREATE ROLE tco_t_dbowner LOGIN BYPASSRLS' -c 'GRANT tco_admin TO tco_t_dbowner'
"${PSQL[@]}" -c 'CREATE DATABASE tco_dump_src' -c 'CREATE DATABASE tco_dump_fc' -c 'CREATE DATABASE tco_dump_plain' \
             -c 'CREATE DATABASE tco_dump_data OWNER tco_t_dbowner'
"${PSQL[@]}" -d tco_dump_src -f demo/sample.sql >/dev/null
# settled cycles, statements, invoices and alerts too
[ -f demo/settle.sql ] && "${PSQL[@]}" -d tco_dump_src -f demo/settle.sql >/dev/null
# several partitions of tco.bill_line (README "Storage"): the demo's two
# cycles, two prepared ahead, and a settled cycle detached for archiving
"${PSQL[@]}" -d tco_dump_src -c "SELECT tco.prepare_cycles('2023-03', '2023-04')" \
    -c "SELECT tco.detach_cycle('2023-01')" >/dev/null
tmp=$(mktemp -d /tmp/tco-dump.XXXXXX); chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
fail=0
# 1. custom format + pg_restore, no options
# (pg_dump warns of org_unit's self-reference: a COPY checks its foreign keys
# at its end, so a unit may come before its parent)
pg_dump -Fc -d tco_dump_src -f "$tmp/fc.dump" 2>/dev/null
pg_restore --exit-on-error -d tco_dump_fc "$tmp/fc.dump" || { echo "pg_restore reported errors"; fail=1; }
# 2. plain format + psql
pg_dump -d tco_dump_src -f "$tmp/plain.sql" 2>/dev/null
"${PSQL[@]}" -d tco_dump_plain -f "$tmp/plain.sql" >/dev/null || { echo "psql restore of the plain dump failed"; fail=1; }
# 3. data only, into a fresh install, by the database owner
"${PSQL[@]}" -d tco_dump_data -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION tco CASCADE'
pg_dump --data-only -d tco_dump_src -f "$tmp/data.sql" 2>/dev/null
PGUSER=tco_t_dbowner "${PSQL[@]}" -d tco_dump_data -f "$tmp/data.sql" >/dev/null \
    || { echo "data-only restore by the database owner failed"; fail=1; }

# a digest of every row of every table of the extension
tables=$("${PSQL[@]}" -At -d tco_dump_src -c "SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tco' AND c.relkind = 'r'")
for dst in tco_dump_fc tco_dump_plain tco_dump_data; do
    for t in $tables; do
        q="SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '-') FROM tco.$t x"
        a=$("${PSQL[@]}" -At -d tco_dump_src -c "$q"); b=$("${PSQL[@]}" -At -d "$dst" -c "$q")
        if [ "$a" != "$b" ]; then echo "$dst: tco.$t differs after restore: $a vs $b"; fail=1; fi
    done
    echo "$dst: compared $(echo $tables | wc -w) tables"
done

# the partitions are restored as partitions, the detached one standalone, and
# it can be attached again with all its lines
parts_q="SELECT string_agg(r.cycle::text || ' ' || r.relname || ' ' || r.detached || ' '
                   || coalesce((SELECT i.inhparent::regclass::text FROM pg_inherits i
                                 WHERE i.inhrelid = format('tco.%I', r.relname)::regclass), '-'), ', ' ORDER BY r.cycle)
         FROM tco.bill_line_cycle r"
src_parts=$("${PSQL[@]}" -At -d tco_dump_src -c "$parts_q")
echo "partitions: $src_parts"
[ "$(echo "$src_parts" | grep -o 'tco.bill_line$\|tco.bill_line,' | wc -l)" -ge 3 ] || { echo "the source has fewer than 3 attached partitions"; fail=1; }
for dst in tco_dump_fc tco_dump_plain tco_dump_data; do
    b=$("${PSQL[@]}" -At -d "$dst" -c "$parts_q")
    [ "$b" = "$src_parts" ] || { echo "$dst: partitions differ after restore: $b"; fail=1; }
    n=$("${PSQL[@]}" -At -d "$dst" -c "SELECT tco.attach_cycle('2023-01')" -c "SELECT count(*) FROM tco.bill_line")
    m=$("${PSQL[@]}" -At -d tco_dump_src -c "SELECT count(*) FROM tco.bill_line") 
    m=$((m + $("${PSQL[@]}" -At -d tco_dump_src -c "SELECT count(*) FROM tco.bill_line_p2023_01")))
    [ "$(echo "$n" | tail -n 1)" = "$m" ] || { echo "$dst: $n lines after attaching 2023-01, expected $m"; fail=1; }
done

# rules still hold after restore, and new ids do not collide with restored ones
for dst in tco_dump_fc tco_dump_plain tco_dump_data; do
    out=$(psql -X -q -At -d "$dst" 2>&1 <<'SQL' || true
SELECT tco.billing_timezone();
INSERT INTO tco.entity (name, verified) VALUES ('after restore', true) RETURNING 'new entity ok';
SELECT tco.create_unit(1, 'after restore') > 0 AS new_unit_ok;
SELECT tco.add_member(1, 4);
SQL
)
    echo "$out" | grep -q '^Asia/Shanghai$' || { echo "$dst: billing time zone lost"; fail=1; }
    echo "$out" | grep -q 'new entity ok' || { echo "$dst: identity sequence not restored"; fail=1; }
    echo "$out" | grep -q '^t$' || { echo "$dst: unit creation failed after restore"; fail=1; }
    echo "$out" | grep -q 'already a member of organization' || { echo "$dst: membership rule not enforced after restore"; fail=1; }
done
# direct DML stays guarded: row_security = off does not switch the rules off
# for a role that does not bypass row-level security (tco_admin alone), not
# on a table under RLS (PostgreSQL refuses the query) nor on one without it
"${PSQL[@]}" -c 'DROP ROLE IF EXISTS tco_t_ops2' -c 'CREATE ROLE tco_t_ops2 LOGIN' -c 'GRANT tco_admin TO tco_t_ops2'
out=$(PGUSER=tco_t_ops2 psql -X -q -At -d tco_dump_fc 2>&1 <<'SQL' || true
SET row_security = off;
SELECT tco.restoring();
INSERT INTO tco.member (account_id, org_id, unit_id) SELECT account_id, org_id, unit_id FROM tco.member LIMIT 1;
INSERT INTO tco.ledger (account_id, amount, kind) VALUES (4, -1e9, 'withdraw');
SQL
)
echo "$out" | grep -q '^f$' || { echo "restore mode for a role without BYPASSRLS"; fail=1; }
echo "$out" | grep -q 'would be affected by row-level security' || { echo "tco_admin wrote a table under RLS with row_security off"; fail=1; }
echo "$out" | grep -q 'PL/pgSQL function tco.ledger_apply()' || { echo "ledger rule not run for tco_admin with row_security off: $out"; fail=1; }
for d in $dbs; do "${PSQL[@]}" -c "DROP DATABASE $d"; done
"${PSQL[@]}" -c 'DROP ROLE tco_t_dbowner' -c 'DROP ROLE tco_t_ops2'
[ $fail -eq 0 ] && echo "dump/restore: ok"
exit $fail

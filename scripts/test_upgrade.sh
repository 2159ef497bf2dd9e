#!/usr/bin/env bash
# Upgrades: an install of every released version, updated with ALTER EXTENSION
# UPDATE, must be the same extension as a fresh install of the current version
# (scripts/catalog_digest.sql compares every catalog fact), and data written
# under the old version must survive the update and settle under the new one.
# Uses the server in PGHOST/PGPORT (the test suite's).
set -euo pipefail
cd "$(dirname "$0")/.."
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
current=$(sed -n "s/^default_version = '\(.*\)'/\1/p" tco.control)
fail=0
# digests in a directory of this run (several work trees may test at once)
dig=$(mktemp -d /tmp/tco-digest.XXXXXX)
trap 'rm -rf "$dig"' EXIT
"${PSQL[@]}" -c 'DROP DATABASE IF EXISTS tco_upgrade_new' -c 'CREATE DATABASE tco_upgrade_new'
"${PSQL[@]}" -d tco_upgrade_new -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION tco CASCADE'
"${PSQL[@]}" -d tco_upgrade_new -f scripts/catalog_digest.sql > "$dig/new.txt"
for script in $(ls upgrade/tco--*.sql | grep -v -- "--.*--"); do
    old=$(basename "$script" .sql); old=${old#tco--}
    [ "$old" = "$current" ] && continue
    db=tco_upgrade_from_${old//./_}
    "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    "${PSQL[@]}" -d "$db" -c 'SET client_min_messages = warning' -c "CREATE EXTENSION tco VERSION '$old' CASCADE"
    # data written under the old version: an organization, a trusteeship, bill lines
    "${PSQL[@]}" -d "$db" >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT tco.set_billing_timezone('Asia/Shanghai');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Upgrade Ltd', true);
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES (1, 'admin', 1, 1000), (2, 'member', 1, 50), (3, 'self', 1, 10);
SELECT tco.create_organization(1, 'Upgrade Org');
SELECT tco.add_member(1, 2), tco.add_member(1, 3);
SELECT tco.establish_trusteeship(2, 1, '2023-01-01 00:00+08');
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
SELECT 2 + g % 2, 'cvm', timestamptz '2023-02-01 00:00+08' + g * interval '1 hour',
       timestamptz '2023-02-01 01:00+08' + g * interval '1 hour', 1.25
FROM generate_series(0, 99) g;
INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount)
SELECT 1001 + g, 3, 'cvm', timestamptz '2023-01-10 00:00+08' + g * interval '1 hour',
       timestamptz '2023-01-10 01:00+08' + g * interval '1 hour', 2.345678
FROM generate_series(0, 9) g;
INSERT INTO tco.contract_discount (discount_id, account_id, rate, valid_from) VALUES (77, 3, 0.1, '-infinity');
SQL
    # from 1.3 on, lines of a cycle without partition wait in the default
    # partition until tco.prepare_cycles (36_partition.sql): prepare them,
    # as the lines moved by the update to 1.3 are
    case "$old" in 1.0|1.1|1.2) ;; *)
        "${PSQL[@]}" -d "$db" -c "SELECT tco.prepare_cycles('2023-01', '2023-02')" >/dev/null ;;
    esac
    # a cycle settled under the old version, with a discount and a coupon: its
    # record must survive the update.
    if [ "$old" = "1.0" ]; then
        # 1.0 stored one row per settled line; written by hand as its
        # settle_cycle wrote it (the library's 1.0 mode writes the same:
        # scripts/test_old_versions.sh).
        "${PSQL[@]}" -d "$db" >/dev/null <<'SQL'
INSERT INTO tco.benefit (benefit_id, kind, owner_account_id, initial_amount, balance, valid_from, valid_to)
    VALUES (55, 'coupon', 3, 5, 0, '-infinity', '2024-01-01');
INSERT INTO tco.statement (statement_id, payer_account_id, cycle, org_id, list_total, discount_total, benefit_total, due_total)
    VALUES (900, 3, '2023-01', 1, 23.46, 2.35, 5.00, 16.11);
INSERT INTO tco.statement_line VALUES (900, 3, 'cvm', 23.45678, 2.34568, 5, 16.1111, 10);
INSERT INTO tco.settled_line
SELECT line_id, 900, 3, 2.345678, 0.1, 'own', 77, 0.234568, b, 2.111110 - b
FROM (SELECT line_id, CASE line_id WHEN 1001 THEN 2.111110 WHEN 1002 THEN 2.111110 WHEN 1003 THEN 0.777780 ELSE 0 END AS b
      FROM generate_series(1001, 1010) line_id) x;
INSERT INTO tco.benefit_use (benefit_id, line_id, statement_id, amount)
    VALUES (55, 1001, 900, 2.111110), (55, 1002, 900, 2.111110), (55, 1003, 900, 0.777780);
INSERT INTO tco.settled_cycle (cycle) VALUES ('2023-01');
SQL
    else
        # from 1.1 on, the per-line record is packed (tco.settled_pack): the
        # old version's own SQL settles the cycle (settle_cycle is C in both)
        "${PSQL[@]}" -d "$db" >/dev/null <<'SQL'
SET client_min_messages = warning;
INSERT INTO tco.benefit (benefit_id, kind, owner_account_id, initial_amount, balance, valid_from, valid_to)
    VALUES (55, 'coupon', 3, 5, 5, '-infinity', '2024-01-01');
SELECT * FROM tco.settle_cycle('2023-01');
SQL
    fi
    settled_q="SELECT (SELECT string_agg(tco.explain_line(line_id)::text, ' ' ORDER BY line_id) FROM tco.bill_line
                       WHERE period_start < '2023-02-01 00:00+08'),
                      (SELECT count(*) || ' ' || sum(due_amount) FROM tco.settled_line),
                      (SELECT count(*) || ' ' || sum(amount) FROM tco.benefit_use),
                      (SELECT string_agg(lines || ' ' || list_total || ' ' || due_total, ',') FROM tco.settlement_by_payer)"
    lines_q="SELECT count(*) || ' ' || sum(list_amount) || ' ' || md5(string_agg(line_id || ':' || period_start, ',' ORDER BY line_id)) FROM tco.bill_line"
    lines_before=$("${PSQL[@]}" -At -d "$db" -c "$lines_q")
    before=$("${PSQL[@]}" -At -d "$db" -c "$settled_q")
    "${PSQL[@]}" -d "$db" -c "ALTER EXTENSION tco UPDATE TO '$current'"
    after=$("${PSQL[@]}" -At -d "$db" -c "$settled_q")
    if [ "$before" != "$after" ] || [ -z "$before" ]; then
        echo "settlement written under $old changed by the update:"; echo "before: $before"; echo "after:  $after"; fail=1
    else
        echo "settlement written under $old unchanged by the update (explain_line of every line, totals)"
    fi
    # 1.3 partitions the bill lines by cycle: every line kept, in its cycle's
    # partition (created at run time, not a member of the extension)
    lines_after=$("${PSQL[@]}" -At -d "$db" -c "$lines_q")
    where=$("${PSQL[@]}" -At -d "$db" -c "SELECT string_agg(p || '=' || n, ' ' ORDER BY p) FROM (SELECT tableoid::regclass::text AS p, count(*) AS n FROM tco.bill_line GROUP BY 1) x" \
             -c "SELECT count(*) FROM pg_depend d JOIN tco.bill_line_cycle r ON d.objid = format('tco.%I', r.relname)::regclass WHERE d.deptype = 'e'" 2>&1 || true)
    if [ "$lines_before" != "$lines_after" ] || [ "$(echo $where)" != "tco.bill_line_p2023_01=10 tco.bill_line_p2023_02=100 0" ]; then
        echo "bill lines not kept in their partitions by the update: $lines_before / $lines_after / $where"; fail=1
    else
        echo "bill lines kept by the update, one partition per cycle: $(echo $where)"
    fi
    "${PSQL[@]}" -d "$db" -f scripts/catalog_digest.sql > "$dig/old.txt"
    if ! diff -u "$dig/new.txt" "$dig/old.txt" > "$dig/diff"; then
        echo "$old -> $current differs from a fresh $current install:"; head -n 80 "$dig/diff"; fail=1
    else
        echo "$old -> $current: $(wc -l < "$dig/new.txt") catalog facts equal to a fresh install"
    fi
    out=$("${PSQL[@]}" -At -d "$db" -c "SELECT lines, list_total FROM tco.settle_cycle('2023-02')" \
                         -c "SELECT tco.trusteeship_effective_payer(2, 'cvm', '2023-02-02 00:00+08')" 2>&1 || true)
    echo "settled after update: $out"
    [ "$(echo "$out" | tr '\n' ' ')" = "100|125.00 1 " ] || { echo "settlement or payer after update wrong"; fail=1; }
    "${PSQL[@]}" -c "DROP DATABASE $db"
done
"${PSQL[@]}" -c 'DROP DATABASE tco_upgrade_new'
[ $fail -eq 0 ] && echo "upgrade: ok"
exit $fail

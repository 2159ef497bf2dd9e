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
"${PSQL[@]}" -c 'DROP DATABASE IF EXISTS tco_upgrade_new' -c 'CREATE DATABASE tco_upgrade_new'
"${PSQL[@]}" -d tco_upgrade_new -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION tco CASCADE'
"${PSQL[@]}" -d tco_upgrade_new -f scripts/catalog_digest.sql > /tmp/tco-digest-new.txt
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
SQL
    "${PSQL[@]}" -d "$db" -c "ALTER EXTENSION tco UPDATE TO '$current'"
    "${PSQL[@]}" -d "$db" -f scripts/catalog_digest.sql > /tmp/tco-digest-old.txt
    if ! diff -u /tmp/tco-digest-new.txt /tmp/tco-digest-old.txt > /tmp/tco-digest.diff; then
        echo "$old -> $current differs from a fresh $current install:"; head -n 80 /tmp/tco-digest.diff; fail=1
    else
        echo "$old -> $current: $(wc -l < /tmp/tco-digest-new.txt) catalog facts equal to a fresh install"
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

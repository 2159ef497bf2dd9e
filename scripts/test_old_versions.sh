#!/usr/bin/env bash
# Old versions keep working: every released version installed with the
# current library (CREATE EXTENSION tco VERSION 'X', no update) settles with
# its own schema.  For each old version, the same small world (an entity,
# accounts, an organization, a trusteeship, products, two cycles of bill
# lines, contract discounts, coupons, a voucher and a stored-value card) is
# loaded and settled with that version's own tco.settle_cycle (cycle 2023-02
# for everything; 2023-03 for the organization first, then for everything),
# and everything settled must be the same as in a fresh install of the
# current version: the settle_cycle rows, statements, statement lines, the
# per-line record (tco.settled_line: a table in 1.0, a view over packs from
# 1.1 on), the benefit uses (tco.benefit_use) and the benefit balances.  A
# second settlement of each scope must change nothing.  Uses the server in
# PGHOST/PGPORT (the test suite's); exits non-zero and prints the difference
# on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/.."
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
current=$(sed -n "s/^default_version = '\(.*\)'/\1/p" tco.control)
out=$(mktemp -d /tmp/tco-oldver.XXXXXX)
trap 'rm -rf "$out"' EXIT
fail=0

# The world, through functions every released version has.
world() {
    "${PSQL[@]}" -d "$1" >/dev/null <<'SQL'
SET client_min_messages = warning;
SELECT tco.set_billing_timezone('Asia/Shanghai');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Old Ltd', true);
INSERT INTO tco.account (account_id, name, entity_id, balance)
    VALUES (1, 'admin', 1, 1000), (2, 'managed', 1, 50), (3, 'self', 1, 10), (4, 'outside', NULL, 5);
SELECT tco.create_organization(1, 'Old Org');
SELECT tco.add_member(1, 2), tco.add_member(1, 3);
SELECT tco.establish_trusteeship(2, 1, '2023-01-01 00:00+08');
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour'), ('cos', 'day');
-- own (3, all products), admin (1 on cos: 3 inherits it), entity (2, new trusteeship), none (4)
SELECT tco.set_contract_discount(3, NULL, 0.1, NULL, '-infinity');
SELECT tco.set_contract_discount(1, NULL, 0.2, 'cos', '-infinity');
SELECT tco.set_contract_discount(NULL, 1, 0.05, NULL, '-infinity');
-- coupons (the one expiring first is used first), the manager's voucher and card
SELECT tco.grant_coupon(3, 5.00, '2024-01-01 00:00+08');
SELECT tco.grant_coupon(3, 2.00, '2023-02-05 00:00+08');
SELECT tco.grant_coupon(4, 1.50, '2024-01-01 00:00+08', 'cos');
SELECT tco.grant_voucher(1, 20.00, '2024-01-01 00:00+08');
SELECT tco.grant_stored_value_card(1, 30.00, '2024-01-01 00:00+08');
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
SELECT a, 'cvm', c + g * interval '1 hour', c + (g + 1) * interval '1 hour', l
FROM (VALUES (2, 1.25), (3, 2.345678), (4, 0.5)) x(a, l),
     (VALUES (timestamptz '2023-02-01 00:00+08'), ('2023-03-01 00:00+08')) y(c),
     generate_series(0, 29) g
ORDER BY c, a, g;
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount)
SELECT a, 'cos', c + g * interval '1 day', c + (g + 1) * interval '1 day', l
FROM (VALUES (2, 0.333333), (3, 3.5), (4, 0.777777)) x(a, l),
     (VALUES (timestamptz '2023-02-01 00:00+08'), ('2023-03-01 00:00+08')) y(c),
     generate_series(0, 6) g
ORDER BY c, a, g;
SQL
}

settle() {
    "${PSQL[@]}" -At -d "$1" \
        -c "SELECT 'settle 2023-02', * FROM tco.settle_cycle('2023-02')" \
        -c "SELECT 'settle 2023-03 org 1', * FROM tco.settle_cycle('2023-03', 1)" \
        -c "SELECT 'settle 2023-03', * FROM tco.settle_cycle('2023-03')"
}

# Everything settlement wrote, in a stable order.
digest() {
    "${PSQL[@]}" -At -d "$1" <<'SQL'
SELECT 'settled_cycle', cycle, org_id FROM tco.settled_cycle ORDER BY cycle, org_id NULLS LAST;
SELECT 'statement', statement_id, payer_account_id, cycle, org_id, list_total, discount_total, benefit_total,
       due_total, paid_at
FROM tco.statement ORDER BY statement_id;
SELECT 'statement_line', statement_id, account_id, product_code, list_amount, discount_amount, benefit_amount,
       due_amount, lines
FROM tco.statement_line ORDER BY statement_id, account_id, product_code;
SELECT 'line', b.line_id, b.account_id, b.product_code, sl.statement_id, sl.payer_account_id, sl.list_amount,
       sl.discount_rate, sl.discount_source, sl.discount_id, sl.discount_amount, sl.benefit_amount, sl.due_amount
FROM tco.bill_line b LEFT JOIN tco.settled_line sl USING (line_id) ORDER BY b.line_id;
SELECT 'benefit_use', line_id, benefit_id, statement_id, amount FROM tco.benefit_use ORDER BY line_id, use_id;
SELECT 'benefit', benefit_id, kind, balance FROM tco.benefit ORDER BY benefit_id;
SQL
}

for v in "$current" $(ls upgrade/tco--*.sql | grep -v -- "--.*--" | sed 's/.*tco--\(.*\)\.sql/\1/'); do
    [ "$v" = "$current" ] && [ -f "$out/settle-$v" ] && continue
    db=tco_oldver_${v//./_}
    "${PSQL[@]}" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    "${PSQL[@]}" -d "$db" -c 'SET client_min_messages = warning' -c "CREATE EXTENSION tco VERSION '$v' CASCADE"
    world "$db"
    if ! settle "$db" > "$out/settle-$v" 2> "$out/err-$v"; then
        echo "version $v: settle_cycle failed:"; cat "$out/err-$v"; fail=1; continue
    fi
    digest "$db" > "$out/digest-$v"
    # a second settlement of each scope changes nothing and returns the same rows
    if ! settle "$db" > "$out/settle2-$v" 2> "$out/err-$v"; then
        echo "version $v: the second settle_cycle failed:"; cat "$out/err-$v"; fail=1; continue
    fi
    digest "$db" > "$out/digest2-$v"
    if ! diff "$out/settle-$v" "$out/settle2-$v"; then
        echo "version $v: the second settle_cycle returned other rows"; fail=1
    fi
    if ! diff "$out/digest-$v" "$out/digest2-$v"; then
        echo "version $v: the second settle_cycle changed what was settled"; fail=1
    fi
    [ "$v" = "$current" ] && continue
    same=1
    if ! diff "$out/settle-$current" "$out/settle-$v"; then
        echo "version $v: settle_cycle returned other rows than $current (< $current, > $v)"; fail=1; same=0
    fi
    if ! diff "$out/digest-$current" "$out/digest-$v"; then
        echo "version $v: settled otherwise than $current (< $current, > $v)"; fail=1; same=0
    fi
    [ "$same" -eq 1 ] && echo "version $v: $(wc -l < "$out/settle-$v") settlements, $(grep -c '^line|' "$out/digest-$v") bill lines," \
        "$(grep -c '^benefit_use|' "$out/digest-$v") benefit uses, idempotent: same as $current"
done
if [ -s "$out/digest-$current" ] && ! grep -q '^line|.*|own|' "$out/digest-$current"; then
    echo "the world settled no line with a discount: the test proves nothing"; fail=1
fi
[ "$fail" -eq 0 ] && echo "old versions: ok"
exit "$fail"

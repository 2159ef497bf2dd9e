"""tco from Python application code, with psycopg 3 (Debian's python3-psycopg).

Run by scripts/test_client_psycopg.sh against the suite's server: PGHOST,
PGPORT and PGDATABASE name a fresh database with tco installed; TCO_APP_ROLE
is a login role granted tco_admin (not a superuser), TCO_READER_ROLE a login
role granted tco_reader.  Nothing sets search_path: the server's default.
Prints one line per check and exits non-zero at the first failure.
"""
import datetime
import json
import os
import signal
import sys
import time
from decimal import Decimal
from functools import partial

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads

BIG = 2**53 + 1  # 9007199254740993: not representable as a double
ADMIN, MEMBER, SELF = BIG, BIG + 1, BIG + 2
LINE = BIG + 100
checks = 0


def check(cond, what, got=None):
    global checks
    checks += 1
    if not cond:
        print(f"not ok {checks} - {what}" + ("" if got is None else f" (got {got!r})"))
        sys.exit(1)
    print(f"ok {checks} - {what}")


def main():
    signal.alarm(120)  # never hang the suite
    app = os.environ["TCO_APP_ROLE"]
    reader = os.environ["TCO_READER_ROLE"]
    # autocommit: each "with conn.transaction()" block is then a real transaction
    # (without it, psycopg opens one at the first statement and the blocks are savepoints)
    conn = psycopg.connect(user=app, autocommit=True)  # PGHOST, PGPORT, PGDATABASE from the environment
    check(conn.execute("SHOW search_path").fetchone()[0] == '"$user", public',
          "the connection has the server's default search_path")

    # entity, accounts, organization, members, trusteeship
    with conn.transaction():
        conn.execute("INSERT INTO tco.entity (entity_id, name, verified) VALUES (%s, %s, true)", (7, "Py Ltd"))
        conn.cursor().executemany(
            "INSERT INTO tco.account (account_id, name, entity_id, balance, credit_limit) VALUES (%s, %s, %s, %s, %s)",
            [(ADMIN, "py-admin", 7, Decimal("1000.10"), Decimal("500")),
             (MEMBER, "py-member", 7, Decimal("100.01"), Decimal("0")),
             (SELF, "py-self", 7, Decimal("10"), Decimal("0"))])
        org = conn.execute("SELECT tco.create_organization(%s, %s)", (ADMIN, "Py Org")).fetchone()[0]
        unit = conn.execute("SELECT tco.create_unit(%s, %s)", (org, "Engineering")).fetchone()[0]
        conn.execute("SELECT tco.add_member(%s, %s, %s)", (org, MEMBER, unit))
        conn.execute("SELECT tco.add_member(%s, %s)", (org, SELF))
        conn.execute("SELECT tco.establish_trusteeship(%s, %s, %s)",
                     (MEMBER, ADMIN, datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)))
        conn.execute("INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour')")
    row = conn.execute("SELECT account_id, balance FROM tco.account WHERE account_id = %s", (ADMIN,)).fetchone()
    check(row[0] == BIG and type(row[0]) is int, "a bigint id above 2^53 round-trips exactly", row[0])
    check(row[1] == Decimal("1000.10") and type(row[1]) is Decimal, "a numeric arrives as an exact Decimal", row[1])

    # bill lines: one by INSERT with an explicit id, the rest in one call of
    # tco.insert_bill_lines (Python lists become arrays)
    amounts = [Decimal("0.1"), Decimal("0.2"), Decimal("12345678901.234567")]
    t0 = datetime.datetime(2023, 2, 1, 10, tzinfo=datetime.timezone.utc)
    with conn.transaction():
        conn.execute("INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount) "
                     "VALUES (%s, %s, 'cvm', %s, %s, %s)", (LINE, MEMBER, t0, t0 + datetime.timedelta(hours=1), amounts[0]))
        starts = [t0 + datetime.timedelta(hours=1), t0 + datetime.timedelta(hours=2), t0]
        n = conn.execute("SELECT tco.insert_bill_lines(%s, %s, NULL, %s, %s, %s, NULL, NULL)",
                         ([MEMBER, MEMBER, SELF], ["cvm"] * 3, starts, [t + datetime.timedelta(hours=1) for t in starts],
                          amounts[1:] + [Decimal("5.555555")])).fetchone()[0]
    check(n == 3, "tco.insert_bill_lines takes Python lists as column arrays and inserts 3 lines", n)

    # settle the cycle; the cycle as a text parameter
    with conn.transaction():
        st = conn.execute("SELECT statements, lines, list_total, due_total FROM tco.settle_cycle(%s)", ("2023-02",)).fetchone()
    check(st[:2] == (2, 4), "settle_cycle('2023-02') settles 2 statements of 4 lines", st)
    check(st[2] == Decimal("12345678907.09") and type(st[2]) is Decimal, "its list total is exact", st[2])

    # the BI views, default search_path, text parameter for the cycle
    rows = conn.execute("SELECT payer_account_id, list_total, due_total, lines, cycle, cycle_start, cycle_end "
                        "FROM tco.settlement_by_payer WHERE cycle = %s ORDER BY payer_account_id", ("2023-02",)).fetchall()
    check([r[0] for r in rows] == [ADMIN, SELF], "settlement_by_payer: the admin (paying its member) and the self-pay member",
          rows)
    check(rows[0][1] == Decimal("12345678901.53") and type(rows[0][1]) is Decimal,
          "settlement_by_payer: the admin's list total, exact (a float would be 12345678901.534567 off)", rows[0][1])
    check(rows[0][4] == "2023-02" and rows[0][5] == datetime.date(2023, 2, 1) and rows[0][6] == datetime.date(2023, 2, 28),
          "cycle is text, cycle_start and cycle_end are dates", rows[0][4:])
    member = conn.execute("SELECT list_amount FROM tco.settlement_by_member WHERE cycle = %s AND account_id = %s",
                          ("2023-02", MEMBER), prepare=True).fetchone()[0]
    check(member == sum(amounts) == Decimal("12345678901.534567"),
          "settlement_by_member: 0.1 + 0.2 + 12345678901.234567 is exactly 12345678901.534567", member)
    check(float(amounts[0]) + float(amounts[1]) != 0.3, "(as floats, 0.1 + 0.2 would not be 0.3)")
    units = conn.execute("SELECT unit_id, list_total FROM tco.settlement_by_unit WHERE cycle BETWEEN %s AND %s AND unit_id = %s",
                         ("2023-01", "2023-03", unit)).fetchall()
    check(units == [(unit, Decimal("12345678901.534567"))], "settlement_by_unit with a text range of cycles", units)

    # jsonb parsed into Python objects; exact numbers with a Decimal loader
    payer = conn.execute("SELECT tco.explain_payer(%s, 'cvm', %s)", (MEMBER, t0)).fetchone()[0]
    check(isinstance(payer, dict) and payer["payer"] == ADMIN and payer["account_id"] == MEMBER
          and payer["change"]["kind"] == "establish", "explain_payer: a dict, bigint ids exact", payer)
    set_json_loads(partial(json.loads, parse_float=Decimal), conn)  # amounts in jsonb as Decimal, not float
    line = conn.execute("SELECT tco.explain_line(%s)", (LINE,)).fetchone()[0]
    check(line["line_id"] == LINE and line["payer_account_id"] == ADMIN and line["settled"] is True
          and line["list_amount"] == Decimal("0.1") and type(line["list_amount"]) is Decimal,
          "explain_line: a dict, ids exact, amounts Decimal", line)

    # refused operations: SQLSTATE and hint reach the client
    try:
        with conn.transaction():
            conn.execute("SELECT tco.establish_trusteeship(%s, %s)", (SELF, MEMBER))
        check(False, "a chain of trusteeships is refused")
    except psycopg.Error as e:
        check(e.sqlstate == "TC004" and e.diag.message_hint, "R4 (no chains): SQLSTATE TC004 with a hint",
              (e.sqlstate, e.diag.message_primary, e.diag.message_hint))
    try:
        with conn.transaction():
            conn.execute("UPDATE tco.bill_line SET list_amount = list_amount + 1 WHERE line_id = %s", (LINE,))
        check(False, "a settled bill line cannot change")
    except psycopg.Error as e:
        check(e.sqlstate == "TC008" and e.diag.message_hint, "R14 (settled cycle): SQLSTATE TC008 with a hint",
              (e.sqlstate, e.diag.message_primary, e.diag.message_hint))
    try:
        with conn.transaction():
            conn.execute("SELECT tco.add_member(%s, %s)", (org, 424242))
        check(False, "an unknown account is refused")
    except psycopg.Error as e:
        check(e.sqlstate == "23503" and e.diag.message_hint, "an unknown id: SQLSTATE 23503 with a hint",
              (e.sqlstate, e.diag.message_primary, e.diag.message_hint))
    check(conn.execute("SELECT 1").fetchone()[0] == 1, "the connection is usable after the errors")

    # a reader mapped to the admin account: the BI view under row-level security
    with conn.transaction():
        conn.execute("INSERT INTO tco.account_login (role_name, account_id) VALUES (%s, %s)", (reader, ADMIN))
    rconn = psycopg.connect(user=reader, autocommit=True)
    rows = rconn.execute("SELECT payer_account_id, due_total FROM tco.settlement_by_payer WHERE cycle = %s "
                         "ORDER BY payer_account_id", ("2023-02",)).fetchall()
    check(rows == [(ADMIN, Decimal("12345678901.53")), (SELF, Decimal("5.56"))],
          "a reader mapped to the organization's admin sees the statements settled in its organization", rows)
    rows = rconn.execute("SELECT count(*) FROM tco.account").fetchone()[0]
    check(rows == 3, "and its organization's accounts", rows)
    try:
        rconn.execute("SELECT tco.settle_cycle(%s)", ("2023-03",))
        check(False, "a reader cannot settle")
    except psycopg.Error as e:
        check(e.sqlstate == "42501", "a reader's settle_cycle: 42501", e.sqlstate)

    # an alert through LISTEN on the channels of tco.alert_channels(): the
    # admin channel for tco_admin, the payer's channel for the reader
    listener = psycopg.connect(user=app, autocommit=True)
    channels = listener.execute("SELECT account_id, channel FROM tco.alert_channels()").fetchall()
    check(len(channels) == 1 and channels[0][0] is None and channels[0][1].startswith("tco_alerts_admin_"),
          "alert_channels() as tco_admin: the admin channel, account_id NULL", channels)
    rch = rconn.execute("SELECT account_id, channel FROM tco.alert_channels()").fetchall()
    check([a for a, _ in rch] == [ADMIN, MEMBER, SELF] and all(c.startswith("tco_alerts_") and "admin" not in c for _, c in rch),
          "alert_channels() as the reader: one channel per account it sees, no admin channel", rch)
    rch = [r for r in rch if r[0] == ADMIN]
    got = []
    for c, ch in ((listener, channels[0][1]), (rconn, rch[0][1])):
        c.add_notify_handler(lambda n, c=c: got.append((c is rconn, n.channel, n.payload)))
        c.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ch)))  # a quoted identifier
    with conn.transaction():
        conn.execute("SELECT tco.set_alert_threshold(%s, 'cycle_spending', %s)", (ADMIN, Decimal("50")))
    t1 = datetime.datetime(2023, 3, 2, 8, tzinfo=datetime.timezone.utc)
    with conn.transaction():
        conn.execute("INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount) "
                     "VALUES (%s, 'cvm', %s, %s, %s)", (MEMBER, t1, t1 + datetime.timedelta(hours=1), Decimal("60.000001")))
        time.sleep(0.2)
        for c in (listener, rconn):
            c.execute("SELECT 1")
        check(got == [], "no notification before the commit")
    deadline = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < deadline:
        for c in (listener, rconn):
            c.execute("SELECT 1")  # psycopg reads pending notifications and calls the handlers
        time.sleep(0.1)
    check(sorted(got) == [(False, channels[0][1], got[0][2]), (True, rch[0][1], got[0][2])],
          "after the commit: one notification on the admin channel, one on the reader's, same payload", got)
    alert_id = int(got[0][2])
    for who, c in (("tco_admin", listener), ("the reader", rconn)):
        alert = c.execute("SELECT kind, account_id, threshold, value, cycle::text FROM tco.alert WHERE alert_id = %s",
                          (alert_id,)).fetchone()
        check(alert == ("cycle_spending", ADMIN, Decimal("50"), Decimal("60.000001"), "2023-03"),
              f"the payload is the alert id; {who} reads the alert row by it", alert)
    listener.close()
    rconn.close()
    conn.close()
    print(f"psycopg {psycopg.__version__}: {checks} checks passed")


if __name__ == "__main__":
    main()

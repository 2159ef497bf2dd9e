'use strict';
// tco from Node.js application code, with node-pg (npm package pg, installed
// from package-lock.json by scripts/test_client_node.sh into node_modules/).
// Run against the suite's server: PGHOST, PGPORT and PGDATABASE name a fresh
// database with tco installed; TCO_APP_ROLE is a login role granted tco_admin
// (not a superuser), TCO_READER_ROLE one granted tco_reader.  Nothing sets
// search_path: the server's default.  Prints one line per check and exits
// non-zero at the first failure.
const { Client, types } = require('pg');
const { parse: losslessParse, isInteger } = require('lossless-json');

const BIG = '9007199254740993'; // 2^53 + 1: not representable as a JavaScript number
const ADMIN = BIG, MEMBER = '9007199254740994', SELF = '9007199254740995';
const LINE = '9007199254741093';
let checks = 0;

function check(cond, what, got) {
  checks += 1;
  if (!cond) {
    console.log(`not ok ${checks} - ${what}` + (got === undefined ? '' : ` (got ${JSON.stringify(got, (k, v) => typeof v === 'bigint' ? `${v}n` : v)})`));
    process.exit(1);
  }
  console.log(`ok ${checks} - ${what}`);
}

async function refused(client, text, values) {
  try {
    await client.query(text, values);
  } catch (err) {
    return err;
  }
  return null;
}

async function tx(client, fn) {
  await client.query('BEGIN');
  try {
    const r = await fn();
    await client.query('COMMIT');
    return r;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const app = new Client({ user: process.env.TCO_APP_ROLE }); // PGHOST, PGPORT, PGDATABASE from the environment
  await app.connect();
  let r = await app.query('SHOW search_path');
  check(r.rows[0].search_path === '"$user", public', "the connection has the server's default search_path", r.rows[0]);

  // entity, accounts, organization, members, trusteeship
  let org, unit;
  await tx(app, async () => {
    await app.query('INSERT INTO tco.entity (entity_id, name, verified) VALUES ($1, $2, true)', [7, 'Node Ltd']);
    for (const [id, name, balance, credit] of [[ADMIN, 'node-admin', '1000.10', '500'], [MEMBER, 'node-member', '100.01', '0'],
                                               [SELF, 'node-self', '10', '0']]) {
      await app.query('INSERT INTO tco.account (account_id, name, entity_id, balance, credit_limit) VALUES ($1, $2, 7, $3, $4)',
                      [id, name, balance, credit]);
    }
    org = (await app.query('SELECT tco.create_organization($1, $2) AS id', [ADMIN, 'Node Org'])).rows[0].id;
    unit = (await app.query('SELECT tco.create_unit($1, $2) AS id', [org, 'Engineering'])).rows[0].id;
    await app.query('SELECT tco.add_member($1, $2, $3)', [org, MEMBER, unit]);
    await app.query('SELECT tco.add_member($1, $2)', [org, SELF]);
    await app.query('SELECT tco.establish_trusteeship($1, $2, $3)', [MEMBER, ADMIN, '2023-01-01 00:00+00']);
    await app.query("INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour')");
  });
  check(typeof org === 'string', 'bigint ids arrive as strings (node-pg never makes them numbers)', org);
  r = await app.query('SELECT account_id, balance FROM tco.account WHERE account_id = $1', [BIG]);
  check(r.rows[0].account_id === BIG, 'a bigint id above 2^53 round-trips exactly (as a string)', r.rows[0]);
  check(Number(BIG) === 9007199254740992, '(as a number it would be 9007199254740992)');
  r = await app.query('SELECT account_id FROM tco.account WHERE account_id = $1', [BigInt(BIG)]);
  check(r.rows.length === 1 && r.rows[0].account_id === BIG, 'a BigInt parameter works too', r.rows);
  check(r.rows.length === 1 && typeof (await app.query('SELECT balance FROM tco.account WHERE account_id = $1', [BIG])).rows[0].balance === 'string',
        'a numeric arrives as a string, never a float');

  // bill lines: one by INSERT with an explicit id, the rest in one call of
  // tco.insert_bill_lines (JavaScript arrays become arrays; amounts as strings)
  const t0 = '2023-02-01 10:00+00';
  let n;
  await tx(app, async () => {
    await app.query('INSERT INTO tco.bill_line (line_id, account_id, product_code, period_start, period_end, list_amount) '
                    + "VALUES ($1, $2, 'cvm', $3, $3::timestamptz + interval '1 hour', $4)", [LINE, MEMBER, t0, '0.1']);
    n = (await app.query('SELECT tco.insert_bill_lines($1, $2, NULL, $3, $4, $5, NULL, NULL) AS n',
                         [[MEMBER, MEMBER, SELF], ['cvm', 'cvm', 'cvm'],
                          ['2023-02-01 11:00+00', '2023-02-01 12:00+00', t0],
                          ['2023-02-01 12:00+00', '2023-02-01 13:00+00', '2023-02-01 11:00+00'],
                          ['0.2', '12345678901.234567', '5.555555']])).rows[0].n;
  });
  check(n === '3', 'tco.insert_bill_lines takes JavaScript arrays as column arrays and inserts 3 lines', n);

  // settle the cycle; the cycle as a text parameter
  r = await app.query('SELECT statements, lines, list_total, due_total FROM tco.settle_cycle($1)', ['2023-02']);
  check(r.rows[0].statements === '2' && r.rows[0].lines === '4', "settle_cycle('2023-02') settles 2 statements of 4 lines", r.rows[0]);
  check(r.rows[0].list_total === '12345678907.09', 'its list total is exact', r.rows[0]);

  // the BI views, default search_path, text parameter for the cycle
  r = await app.query('SELECT payer_account_id, list_total, due_total, lines, cycle, cycle_start, cycle_end '
                      + 'FROM tco.settlement_by_payer WHERE cycle = $1 ORDER BY payer_account_id', ['2023-02']);
  check(r.rows.map((x) => x.payer_account_id).join() === [ADMIN, SELF].join(),
        'settlement_by_payer: the admin (paying its member) and the self-pay member', r.rows);
  check(r.rows[0].list_total === '12345678901.53', "settlement_by_payer: the admin's list total, exact", r.rows[0]);
  check(r.rows[0].cycle === '2023-02' && r.rows[0].cycle_start instanceof Date && r.fields.find((f) => f.name === 'cycle_end').dataTypeID === 1082,
        'cycle is text, cycle_start and cycle_end are dates', r.rows[0]);
  r = await app.query({ name: 'by_member', text: 'SELECT list_amount FROM tco.settlement_by_member WHERE cycle = $1 AND account_id = $2',
                        values: ['2023-02', MEMBER] });
  check(r.rows[0].list_amount === '12345678901.534567', 'settlement_by_member (prepared): 0.1 + 0.2 + 12345678901.234567 exactly', r.rows[0]);
  check(0.1 + 0.2 !== 0.3, '(as floats, 0.1 + 0.2 would not be 0.3)');
  r = await app.query('SELECT unit_id, list_total FROM tco.settlement_by_unit WHERE cycle BETWEEN $1 AND $2 AND unit_id = $3',
                      ['2023-01', '2023-03', unit]);
  check(r.rows.length === 1 && r.rows[0].list_total === '12345678901.534567', 'settlement_by_unit with a text range of cycles', r.rows);

  // jsonb: node-pg parses it with JSON.parse, which rounds big integers
  r = await app.query("SELECT tco.explain_payer($1, 'cvm', $2) AS e", [MEMBER, t0]);
  const e = r.rows[0].e;
  check(typeof e === 'object' && e.change.kind === 'establish' && e.product_code === 'cvm', 'explain_payer: parsed into an object', e);
  check(e.payer !== undefined && String(e.payer) !== BIG, '(with the default JSON.parse, a jsonb id above 2^53 is rounded)', e.payer);
  // a lossless parser for json and jsonb: integers as BigInt, decimals as strings
  const lossless = (text) => losslessParse(text, null, (s) => (isInteger(s) ? BigInt(s) : s));
  types.setTypeParser(types.builtins.JSONB, lossless);
  types.setTypeParser(types.builtins.JSON, lossless);
  r = await app.query('SELECT tco.explain_line($1) AS e', [LINE]);
  const l = r.rows[0].e;
  check(l.line_id === BigInt(LINE) && l.payer_account_id === BigInt(ADMIN) && l.payer.payer === BigInt(ADMIN) && l.settled === true
        && l.list_amount === '0.100000', 'explain_line with a lossless parser: ids exact (BigInt), amounts as strings', l);

  // refused operations: SQLSTATE and hint reach the client
  let err = await refused(app, 'SELECT tco.establish_trusteeship($1, $2)', [SELF, MEMBER]);
  check(err && err.code === 'TC004' && err.hint, 'R4 (no chains): SQLSTATE TC004 with a hint', err && [err.code, err.message, err.hint]);
  err = await refused(app, 'UPDATE tco.bill_line SET list_amount = list_amount + 1 WHERE line_id = $1', [LINE]);
  check(err && err.code === 'TC008' && err.hint, 'R14 (settled cycle): SQLSTATE TC008 with a hint', err && [err.code, err.message, err.hint]);
  err = await refused(app, 'SELECT tco.add_member($1, $2)', [org, 424242]);
  check(err && err.code === '23503' && err.hint, 'an unknown id: SQLSTATE 23503 with a hint', err && [err.code, err.message, err.hint]);
  check((await app.query('SELECT 1 AS one')).rows[0].one === 1, 'the connection is usable after the errors');

  // a reader mapped to the admin account: the BI view under row-level security
  await app.query('INSERT INTO tco.account_login (role_name, account_id) VALUES ($1, $2)', [process.env.TCO_READER_ROLE, ADMIN]);
  const reader = new Client({ user: process.env.TCO_READER_ROLE });
  await reader.connect();
  r = await reader.query('SELECT payer_account_id, due_total FROM tco.settlement_by_payer WHERE cycle = $1 ORDER BY 1', ['2023-02']);
  check(JSON.stringify(r.rows) === JSON.stringify([{ payer_account_id: ADMIN, due_total: '12345678901.53' },
                                                   { payer_account_id: SELF, due_total: '5.56' }]),
        "a reader mapped to the organization's admin sees the statements settled in its organization", r.rows);
  err = await refused(reader, 'SELECT tco.settle_cycle($1)', ['2023-03']);
  check(err && err.code === '42501', "a reader's settle_cycle: 42501", err && err.code);

  // an alert through LISTEN on the channels of tco.alert_channels(): the
  // admin channel for tco_admin, the payer's channel for the reader
  const listener = new Client({ user: process.env.TCO_APP_ROLE });
  await listener.connect();
  const adminCh = (await listener.query('SELECT account_id, channel FROM tco.alert_channels()')).rows;
  check(adminCh.length === 1 && adminCh[0].account_id === null && adminCh[0].channel.startsWith('tco_alerts_admin_'),
        'alert_channels() as tco_admin: the admin channel, account_id NULL', adminCh);
  const readerCh = (await reader.query('SELECT account_id, channel FROM tco.alert_channels()')).rows;
  check(readerCh.map((x) => x.account_id).join() === [ADMIN, MEMBER, SELF].join() && readerCh.every((x) => !x.channel.includes('admin')),
        'alert_channels() as the reader: one channel per account it sees, no admin channel', readerCh);
  const payerCh = readerCh.find((x) => x.account_id === ADMIN).channel;
  const got = [];
  listener.on('notification', (n) => got.push(['admin', n.channel, n.payload]));
  reader.on('notification', (n) => got.push(['reader', n.channel, n.payload]));
  await listener.query(`LISTEN ${listener.escapeIdentifier(adminCh[0].channel)}`); // a quoted identifier
  await reader.query(`LISTEN ${reader.escapeIdentifier(payerCh)}`);
  await app.query("SELECT tco.set_alert_threshold($1, 'cycle_spending', $2)", [ADMIN, '50']);
  await tx(app, async () => {
    await app.query('INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount) '
                    + "VALUES ($1, 'cvm', '2023-03-02 08:00+00', '2023-03-02 09:00+00', '60.000001')", [MEMBER]);
    await sleep(200);
    check(got.length === 0, 'no notification before the commit', got);
  });
  for (let i = 0; i < 100 && got.length < 2; i++) await sleep(100);
  got.sort();
  check(got.length === 2 && got[0][0] === 'admin' && got[0][1] === adminCh[0].channel && got[1][0] === 'reader'
        && got[1][1] === payerCh && got[0][2] === got[1][2],
        'after the commit: one notification on the admin channel, one on the reader\'s, same payload', got);
  for (const [who, c] of [['tco_admin', listener], ['the reader', reader]]) {
    r = await c.query('SELECT kind, account_id, threshold, value, cycle::text AS cycle FROM tco.alert WHERE alert_id = $1', [got[0][2]]);
    check(JSON.stringify(r.rows) === JSON.stringify([{ kind: 'cycle_spending', account_id: ADMIN, threshold: '50.00',
                                                       value: '60.000001', cycle: '2023-03' }]),
          `the payload is the alert id; ${who} reads the alert row by it`, r.rows);
  }
  await Promise.all([app.end(), reader.end(), listener.end()]);
  console.log(`node-pg ${require('pg/package.json').version}: ${checks} checks passed`);
}

const timer = setTimeout(() => { console.log('not ok - timed out'); process.exit(1); }, 120000);
timer.unref();
main().catch((err) => {
  console.log(`not ok - ${err.stack || err}`);
  process.exit(1);
});

-- Alerts (R11): thresholds per payer on available credit and on cycle
-- spending (managed members included); each fires at most once per cycle,
-- into tco.alert and NOTIFY tco_alerts (LISTEN at the end; the isolation
-- spec alert_notify shows that a rolled-back transaction sends nothing).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

SELECT tco.set_billing_timezone('Asia/Shanghai');
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true);
-- 101 admin and manager of 103; 102 self-pay.
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES
    (101, 'admin', 1, 100), (102, 'self-pay', 1, 100), (103, 'managed', 1, 100);
SELECT tco.create_organization(101, 'Acme Org') AS org \gset
SELECT tco.add_member(:org, 102);
SELECT tco.add_member(:org, 103);
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
    VALUES (103, 101, '2022-12-15 10:00+08');
INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour');

-- Bad thresholds.
SELECT tco.set_alert_threshold(101, 'budget', 10);
SELECT tco.set_alert_threshold(101, 'cycle_spending', -5);
SELECT tco.set_alert_threshold(101, 'cycle_spending', 1.001);
SELECT tco.set_alert_threshold(NULL, 'cycle_spending', 10);
SELECT tco.set_alert_threshold(999, 'cycle_spending', 10);
-- R11: alerts go to the payer, not to a managed member.
SELECT tco.set_alert_threshold(103, 'cycle_spending', 10);
INSERT INTO tco.alert_threshold (account_id, kind, threshold) VALUES (103, 'available_credit', 10);

-- Spending of 101 includes its managed member 103.
SELECT tco.set_alert_threshold(101, 'cycle_spending', 20) AS th_spend \gset
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at) VALUES
    (101, 'cvm', '2023-01-05 10:00+08', '2023-01-05 11:00+08', 12.5, '2023-01-05 12:00+08');
SELECT count(*) AS alerts_below_threshold FROM tco.alert;
-- 103's line takes 101's January spending to 22.50: fires once.
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at) VALUES
    (103, 'cvm', '2023-01-06 10:00+08', '2023-01-06 11:00+08', 10, '2023-01-06 12:00+08');
SELECT threshold_id = :th_spend AS th_ok, account_id, kind, threshold, value, cycle FROM tco.alert ORDER BY alert_id;
SELECT tco.cycle_spending(101, '2023-01') AS spending_101, tco.cycle_spending(103, '2023-01') AS spending_103;
-- Once per cycle: more January spending fires nothing more ...
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at) VALUES
    (103, 'cvm', '2023-01-07 10:00+08', '2023-01-07 11:00+08', 30, '2023-01-07 12:00+08');
SELECT count(*) AS alerts_after_more_january FROM tco.alert;
-- ... February is a new cycle: fires again (bulk insert of 3 lines, one alert).
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
SELECT 103, 'cvm', '2023-02-01 10:00+08'::timestamptz + g * interval '1 hour',
       '2023-02-01 11:00+08'::timestamptz + g * interval '1 hour', 8, '2023-02-02 00:00+08'
FROM generate_series(0, 2) g;
SELECT kind, account_id, value, cycle FROM tco.alert ORDER BY alert_id;
-- The payload sent with NOTIFY.
SELECT tco.alert_payload(a)::jsonb - 'alert_id' - 'threshold_id' AS payload FROM tco.alert a ORDER BY alert_id;

-- Available credit: 101 has 100.00; a threshold of 50 fires when a
-- withdrawal takes it to 40.00, once in the current cycle.
SELECT tco.set_alert_threshold(101, 'available_credit', 50) AS th_credit \gset
SELECT count(*) AS credit_alerts FROM tco.alert WHERE kind = 'available_credit';
SELECT tco.withdraw(101, 60);
SELECT kind, account_id, threshold, value, cycle::text = tco.cycle_of(now())::text AS current_cycle
FROM tco.alert WHERE kind = 'available_credit';
SELECT tco.withdraw(101, 10);
SELECT count(*) AS credit_alerts_after_second_withdrawal FROM tco.alert WHERE kind = 'available_credit';
-- A new threshold already crossed fires at once.
SELECT tco.set_alert_threshold(101, 'available_credit', 35) AS th_credit2 \gset
SELECT threshold, value FROM tco.alert WHERE threshold_id = :th_credit2;
-- A managed member's balance does not concern alerts: 103 withdraws, nothing fires.
SELECT tco.withdraw(103, 90);
SELECT count(*) AS alerts_of_103 FROM tco.alert WHERE account_id = 103;

-- After settlement: 102's threshold, set after its lines arrived, fires when
-- the cycle is settled (spending read from its statement).
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at) VALUES
    (102, 'cvm', '2023-01-08 10:00+08', '2023-01-08 11:00+08', 7.25, '2023-01-08 12:00+08');
SELECT tco.set_alert_threshold(102, 'cycle_spending', 5) AS th_102 \gset
SELECT count(*) AS alerts_of_102_before_settlement FROM tco.alert WHERE account_id = 102;
SELECT statements, lines, list_total FROM tco.settle_cycle('2023-01');
SELECT kind, account_id, threshold, value, cycle FROM tco.alert WHERE account_id = 102;
SELECT tco.cycle_spending(101, '2023-01') AS settled_spending_101;
-- check_alerts on demand: nothing new.
SELECT tco.check_alerts(), tco.check_alerts(101, '2023-01');

-- A disabled threshold does not fire; alerts are append-only; a threshold
-- with alerts cannot be deleted.
UPDATE tco.alert_threshold SET enabled = false WHERE threshold_id = :th_spend;
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at) VALUES
    (101, 'cvm', '2023-03-05 10:00+08', '2023-03-05 11:00+08', 99, '2023-03-05 12:00+08');
SELECT count(*) AS march_alerts FROM tco.alert WHERE cycle::text = '2023-03';
UPDATE tco.alert SET value = 0;
DELETE FROM tco.alert;
DELETE FROM tco.alert_threshold WHERE threshold_id = :th_spend;
SELECT count(*) AS alerts FROM tco.alert;

-- LISTEN: each alert is announced on its payer's channel and on the admin
-- channel, with unguessable names (32 random hex digits): a reader gets its
-- accounts' channels from tco.alert_channels() (this superuser session is
-- mapped to no account, so it reads 101's from tco.alert_channel); the
-- payload is the alert id alone, to be read from tco.alert.  The names are
-- random, so this part of the output goes through sed, with the PID of the
-- backend that sent each notification.
SELECT channel AS payer_channel FROM tco.alert_channel WHERE account_id = 101 \gset
SELECT channel AS admin_channel FROM tco.alert_channels() WHERE account_id IS NULL \gset
SELECT :'payer_channel' ~ '^tco_alerts_[0-9a-f]{32}$' AS payer_channel_ok,
       :'admin_channel' ~ '^tco_alerts_admin_[0-9a-f]{32}$' AS admin_channel_ok;
LISTEN :"payer_channel";
LISTEN :"admin_channel";
LISTEN tco_alerts;
\o | sed -e 's/PID [0-9][0-9]*/PID (pid)/' -e 's/tco_alerts_admin_[0-9a-f]\{32\}/(admin channel)/' -e 's/tco_alerts_[0-9a-f]\{32\}/(channel of 101)/'
SELECT tco.set_alert_threshold(101, 'cycle_spending', 30) AS th_30;
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at) VALUES
    (103, 'cvm', '2023-04-06 10:00+08', '2023-04-06 11:00+08', 31, '2023-04-06 12:00+08');
SELECT alert_id, kind, account_id, threshold, value, cycle FROM tco.alert WHERE alert_id = 6;
\o
UNLISTEN *;
-- nothing is sent on the old, guessable channel tco_alerts (above: no
-- notification for it), and a forged notification names no readable alert:
-- a client reads the alert by id under row-level security.
SELECT count(*) AS april_alerts FROM tco.alert WHERE cycle::text = '2023-04';

-- Forecast (cycle_forecast, AWS Budgets' FORECASTED): the spending so far at
-- the run rate of the elapsed part of the cycle.  April 2023 (30 days, UTC+8)
-- holds 31.00 of 101's spending: seen on April 7 00:00 (6 days elapsed) it
-- projects 31.00 * 30 / 6 = 155.00; in its first day there is no forecast;
-- once April is over the forecast is the actual spending.
SELECT tco.cycle_spending(101, '2023-04') AS april_spending,
       tco.cycle_forecast(101, '2023-04', '2023-04-01 12:00+08') AS first_day,
       tco.cycle_forecast(101, '2023-04', '2023-04-07 00:00+08') AS seen_april_7,
       tco.cycle_forecast(101, '2023-04', '2023-04-16 00:00+08') AS seen_april_16,
       tco.cycle_forecast(101, '2023-04', '2023-05-02 00:00+08') AS after_april;
-- A forecast threshold fires at most once per cycle.
SELECT tco.set_alert_threshold(101, 'cycle_forecast', 30) AS th_forecast \gset
SELECT tco.check_alerts(101, '2023-04') AS fired_first, tco.check_alerts(101, '2023-04') AS fired_again;
SELECT kind, account_id, threshold, value, cycle FROM tco.alert WHERE threshold_id = :th_forecast;
SELECT tco.set_alert_threshold(101, 'cycle_forecast', 0);
-- In the current cycle (whatever today is): a line of 50.00 makes a forecast
-- of at least 50.00, so a threshold of 50.00 fires unless the cycle is in its
-- first day (no forecast yet).
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
SELECT 101, 'cvm', lower(r), lower(r) + interval '1 hour', 50, lower(r) + interval '1 hour'
  FROM (SELECT tco.cycle_range(tco.cycle_of(now())) AS r) x;
SELECT tco.set_alert_threshold(101, 'cycle_forecast', 50) AS th_now \gset
SELECT (count(*) = 1) = (now() >= lower(tco.cycle_range(tco.cycle_of(now()))) + interval '1 day') AS fired_as_expected,
       count(*) <= 1 AS at_most_once
  FROM tco.alert WHERE threshold_id = :th_now;

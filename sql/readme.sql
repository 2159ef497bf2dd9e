-- The "Getting started" example of README.md, run as written.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET search_path = tco, public;          -- for the billing_cycle operators, see "Limits"
SELECT tco.set_billing_timezone('Asia/Shanghai');

INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme Ltd', true);
INSERT INTO tco.account (account_id, name, entity_id, balance, credit_limit)
VALUES (1, 'acme-admin', 1, 1000, 500), (2, 'acme-web', 1, 100, 0);

SELECT tco.create_organization(1, 'Acme Cloud');             -- org 1, root unit, admin is a member
SELECT tco.create_unit(1, 'Engineering');                     -- a unit under the root
SELECT tco.add_member(1, 2, tco.create_unit(1, 'Backend', 2)); -- unit 3 under Engineering

INSERT INTO tco.product (product_code, granularity) VALUES ('cvm', 'hour'), ('cos', 'day');
-- an unpaid cos bill issued before the change freezes cos for January (seed 004, scenario 1)
INSERT INTO tco.bill_line (account_id, product_code, period_start, period_end, list_amount, issued_at)
VALUES (2, 'cos', '2023-01-01 00:00+08', '2023-01-02 00:00+08', 12.50, '2023-01-02 01:00+08');

SELECT tco.establish_trusteeship(2, 1, '2023-01-03 09:23+08');  -- the admin pays for member 2
SELECT tco.trusteeship_effective_payer(2, 'cvm', '2023-01-03 10:00+08');  -- 1: next hour
SELECT tco.trusteeship_effective_payer(2, 'cos', '2023-01-20 00:00+08');  -- 2: frozen until February
SELECT tco.trusteeship_effective_payer(2, 'cos', '2023-02-01 00:00+08');  -- 1
SELECT tco.explain_payer(2, 'cos', '2023-01-20 00:00+08');      -- which change, which rule, when
SELECT tco.available_credit(2), tco.service_available(2);       -- the manager's credit (R10)
SET client_min_messages = warning;
DROP EXTENSION tco CASCADE;

-- R12 Prepaid resources: on association the remaining term of the member's
-- prepaid resources passes to the manager; on disassociation it passes back.
-- While passed, refunds for downgrade or termination are refused.  Price
-- adjustments of a managed member's prepaid orders are refused.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS tco CASCADE;
SELECT plan(37);
\ir fixtures/trust.inc

INSERT INTO tco.product (product_code, granularity) VALUES ('vm', 'month');
-- 11: account 2, a term that runs for decades; 12: account 2, expired long ago;
-- 13: account 3, a term that has not started yet (its unused share is all of it).
INSERT INTO tco.prepaid_resource (resource_id, owner_account_id, product_code, term_start, term_end, price) VALUES
    (11, 2, 'vm', '2024-01-01', '2090-01-01', 1200),
    (12, 2, 'vm', '2020-01-01', '2021-01-01', 100),
    (13, 3, 'vm', '2090-01-01', '2091-01-01', 600);
SELECT is((SELECT holder_account_id FROM tco.prepaid_resource WHERE resource_id = 11), 2::bigint,
    'a self-pay account holds its own resources');

SELECT tco.establish_trusteeship(2, 1, '2024-06-01');
SELECT is((SELECT holder_account_id FROM tco.prepaid_resource WHERE resource_id = 11), 1::bigint,
    'association: the remaining term passes to the manager');
SELECT is((SELECT holder_account_id FROM tco.prepaid_resource WHERE resource_id = 12), 2::bigint,
    'an expired term does not pass');
SELECT results_eq($$SELECT resource_id, from_account_id, to_account_id, reason, at FROM tco.prepaid_transfer ORDER BY transfer_id$$,
    $$VALUES (11::bigint, 2::bigint, 1::bigint, 'association'::text, '2024-06-01'::timestamptz)$$,
    'the transfer is recorded');

-- While passed: refused, with TC007, through the functions ...
SELECT throws_ok($$SELECT tco.refund_prepaid(11)$$, 'TC007', NULL, 'refund refused while passed');
SELECT throws_like($$SELECT tco.refund_prepaid(11)$$,
    'R12: refund of prepaid resource 11 refused: its remaining term is passed to management account 1%',
    'the error names the rule, the resource and the manager');
SELECT throws_ok($$SELECT tco.terminate_prepaid(11)$$, 'TC007', NULL, 'termination refused while passed');
SELECT throws_ok($$SELECT tco.downgrade_prepaid(11, 600)$$, 'TC007', NULL, 'downgrade refused while passed');
SELECT throws_ok($$SELECT tco.adjust_prepaid_price(11, 1300)$$, 'TC007', NULL, 'price adjustment refused while passed');
SELECT throws_ok($$SELECT tco.adjust_prepaid_price(12, 90)$$, 'TC007', NULL,
    'price adjustment of a managed member''s order refused even when not passed');
-- ... and by direct DML.
SELECT throws_ok($$UPDATE tco.prepaid_resource SET status = 'refunded' WHERE resource_id = 11$$, 'TC007', NULL,
    'direct UPDATE of status refused while passed');
SELECT throws_ok($$UPDATE tco.prepaid_resource SET price = 1 WHERE resource_id = 11$$, 'TC007', NULL,
    'direct UPDATE of price refused while passed');
SELECT throws_ok($$UPDATE tco.prepaid_resource SET price = 1 WHERE resource_id = 12$$, 'TC007', NULL,
    'direct UPDATE of a managed member''s price refused');
SELECT throws_ok($$UPDATE tco.prepaid_resource SET holder_account_id = 2 WHERE resource_id = 11$$, '55000', NULL,
    'the holder cannot be set by hand');
SELECT throws_ok($$INSERT INTO tco.prepaid_resource (owner_account_id, product_code, term_start, term_end, price, holder_account_id)
                   VALUES (2, 'vm', '2024-07-01', '2090-01-01', 10, 2)$$, '55000', NULL,
    'nor on INSERT');
SELECT is((SELECT status || ' ' || price FROM tco.prepaid_resource WHERE resource_id = 11), 'active 1200.00',
    'the passed resource is unchanged');

-- Bought while managed: held by the manager at once.
INSERT INTO tco.prepaid_resource (resource_id, owner_account_id, product_code, term_start, term_end, price)
    VALUES (14, 2, 'vm', '2024-07-01', '2090-01-01', 50);
SELECT is((SELECT holder_account_id FROM tco.prepaid_resource WHERE resource_id = 14), 1::bigint,
    'a resource bought while managed is held by the manager');

-- Move: passes on to the new manager.
SELECT tco.move_trusteeship(2, 9, '2024-08-01');
SELECT is((SELECT array_agg(holder_account_id ORDER BY resource_id) FROM tco.prepaid_resource WHERE owner_account_id = 2),
    ARRAY[9, 2, 9]::bigint[], 'move: the remaining terms pass to the new manager');
SELECT is((SELECT reason FROM tco.prepaid_transfer WHERE resource_id = 11 ORDER BY transfer_id DESC LIMIT 1), 'move',
    'recorded as a move');

-- End: back to the member.
SELECT tco.end_trusteeship(2, '2024-09-01');
SELECT is((SELECT array_agg(holder_account_id ORDER BY resource_id) FROM tco.prepaid_resource WHERE owner_account_id = 2),
    ARRAY[2, 2, 2]::bigint[], 'disassociation: the remaining terms pass back');
SELECT results_eq($$SELECT resource_id, reason, from_account_id, to_account_id FROM tco.prepaid_transfer
                    WHERE resource_id = 11 ORDER BY transfer_id$$,
    $$VALUES (11::bigint, 'association'::text, 2::bigint, 1::bigint), (11, 'move', 1, 9), (11, 'disassociation', 9, 2)$$,
    'the whole history of resource 11');

-- Back on its own: the obvious things work.
SELECT ok((SELECT refund BETWEEN 0.01 AND 1200.00 FROM tco.refund_prepaid(11) refund), 'refund of the unused part of the term');
SELECT is((SELECT status FROM tco.prepaid_resource WHERE resource_id = 11), 'refunded', 'status refunded');
SELECT is((SELECT balance - 100 FROM tco.account WHERE account_id = 2),
          (SELECT amount FROM tco.ledger WHERE account_id = 2 AND kind = 'refund'),
          'the refund was credited to the owner through the ledger');
SELECT throws_ok($$SELECT tco.refund_prepaid(11)$$, '55000', NULL, 'a refunded resource is final');
SELECT is(tco.terminate_prepaid(12), 0.00, 'terminating an expired resource refunds nothing');

SELECT is(tco.downgrade_prepaid(13, 300), 300.00, 'downgrade before the term: the whole difference back');
SELECT lives_ok($$SELECT tco.adjust_prepaid_price(13, 350)$$, 'price adjustment of a self-pay order');
SELECT is((SELECT price FROM tco.prepaid_resource WHERE resource_id = 13), 350.00, 'the new price');
SELECT is(tco.terminate_prepaid(13), 350.00, 'termination before the term: the whole price back');
SELECT is((SELECT balance FROM tco.account WHERE account_id = 3), 750.00, 'account 3 got 300.00 + 350.00');

-- Bad input and history.
SELECT throws_ok($$SELECT tco.refund_prepaid(NULL)$$, '22004', NULL, 'NULL resource');
SELECT throws_ok($$SELECT tco.terminate_prepaid(999999)$$, '23503', NULL, 'unknown resource');
SELECT throws_ok($$SELECT tco.downgrade_prepaid(14, 60)$$, '22023', NULL, 'a downgrade must lower the price');
SELECT throws_ok($$SELECT tco.adjust_prepaid_price(14, -1)$$, '22023', NULL, 'a negative price');
SELECT throws_ok($$UPDATE tco.prepaid_transfer SET to_account_id = 3$$, 'TC008', NULL, 'transfers are append-only');
SELECT throws_ok($$DELETE FROM tco.prepaid_transfer$$, 'TC008', NULL, 'transfers cannot be deleted');

SELECT * FROM finish();
ROLLBACK;

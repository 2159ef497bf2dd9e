-- The organization model: organizations, the unit tree, members, invitations
-- and their append-only history; every rule through the functions and by
-- direct DML.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme Ltd', true), (2, 'Globex', false);
INSERT INTO tco.account (account_id, name, entity_id, balance)
    SELECT g, 'acct ' || g, 1 + g % 2, 100 FROM generate_series(1, 12) g;

-- An organization gets a root unit named after it and its admin as member.
SELECT tco.create_organization(1, 'Acme') AS org1;
SELECT unit_id, org_id, parent_unit_id, name FROM tco.org_unit ORDER BY unit_id;
SELECT account_id, org_id, unit_id, policy FROM tco.member ORDER BY account_id;

-- Nested units; parent defaults to the root.
SELECT tco.create_unit(1, 'Engineering') AS eng, tco.create_unit(1, 'Finance') AS fin;
SELECT tco.create_unit(1, 'Backend', 2) AS backend;
SELECT tco.add_member(1, 3, 4), tco.add_member(1, 4), tco.add_member(1, 5, 2);
SELECT account_id, unit_id, policy FROM tco.member ORDER BY account_id;

-- Direct DML obeys the same rules: an INSERT naming only the contract columns
-- (unit_id NULL means the root unit).
INSERT INTO tco.member (account_id, org_id, unit_id, policy) VALUES (6, 1, NULL, 'self_pay');
SELECT account_id, unit_id FROM tco.member WHERE account_id = 6;
INSERT INTO tco.organization (org_id, name, admin_account_id) VALUES (10, 'Globex Org', 7);
SELECT unit_id, name FROM tco.org_unit WHERE org_id = 10;

-- One organization per account.
SELECT tco.add_member(10, 3);
INSERT INTO tco.member (account_id, org_id) VALUES (3, 10);
SELECT tco.create_organization(3, 'Second org of a member');
-- Units: cycles, parents in another organization, the root, non-empty units.
SELECT tco.move_unit(2, 4);
UPDATE tco.org_unit SET parent_unit_id = 4 WHERE unit_id = 2;
SELECT tco.create_unit(1, 'Spy', (SELECT unit_id FROM tco.org_unit WHERE org_id = 10));
INSERT INTO tco.org_unit (org_id, parent_unit_id, name) VALUES (1, NULL, 'second root');
UPDATE tco.org_unit SET parent_unit_id = 2 WHERE unit_id = 1;
SELECT tco.delete_unit(1);
SELECT tco.delete_unit(2);
DELETE FROM tco.org_unit WHERE unit_id = 4;
SELECT tco.add_member(1, 8, (SELECT unit_id FROM tco.org_unit WHERE org_id = 10));
-- The admin stays in its organization; an organization with members stays.
SELECT tco.remove_member(1);
DELETE FROM tco.organization WHERE org_id = 1;
-- A move of the subtree that is legal, then an empty unit deleted.
SELECT tco.move_unit(4, 3);
SELECT tco.move_member(3, 3);
SELECT tco.delete_unit(4);
SELECT unit_id, parent_unit_id, name FROM tco.org_unit WHERE org_id = 1 ORDER BY unit_id;

-- Bad input: NULLs, unknown ids, empty names.
SELECT tco.create_organization(NULL, 'x');
SELECT tco.create_organization(999, 'x');
SELECT tco.create_organization(8, '  ');
SELECT tco.create_unit(999, 'x');
SELECT tco.add_member(1, NULL);
SELECT tco.add_member(1, 999);
SELECT tco.add_member(999, 8);
SELECT tco.add_member(1, 8, 999);
SELECT tco.remove_member(999);
SELECT tco.move_member(8, 3);

-- Invitations: accept, decline, a second pending one, expiry.
SELECT tco.invite_account(1, 8, 3) AS inv_accept, tco.invite_account(1, 9) AS inv_decline;
SELECT tco.invite_account(1, 8);
SELECT tco.accept_invitation(1);
SELECT tco.decline_invitation(2);
SELECT tco.accept_invitation(2);
SELECT tco.invite_account(1, 4);
SELECT tco.invite_account(1, 11, NULL, 'self_pay', interval '-1 day');
INSERT INTO tco.invitation (org_id, account_id, invited_at, expires_at)
    VALUES (1, 11, '2020-01-01 00:00+00', '2020-01-08 00:00+00');
SELECT tco.accept_invitation((SELECT invitation_id FROM tco.invitation WHERE account_id = 11));
SELECT invitation_id, org_id, account_id, status FROM tco.invitation ORDER BY invitation_id;
SELECT account_id, unit_id FROM tco.member WHERE account_id IN (8, 9) ORDER BY 1;

-- Membership history is kept, append-only.
SELECT tco.remove_member(5);
SELECT account_id, org_id, unit_id, policy, event FROM tco.member_history ORDER BY event_id;
UPDATE tco.member_history SET event = 'joined';
DELETE FROM tco.member_history;
TRUNCATE tco.member_history;

-- The organization can go once only its admin is left.
DELETE FROM tco.organization WHERE org_id = 10;
SELECT count(*) AS units_left_of_org_10 FROM tco.org_unit WHERE org_id = 10;

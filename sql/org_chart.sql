SET client_min_messages = warning;
DROP EXTENSION IF EXISTS tco CASCADE;
CREATE EXTENSION tco CASCADE;
RESET client_min_messages;
SET timezone = 'UTC';
\set SHOW_CONTEXT never

-- A small organization: root unit, two units, an admin, a manager with one
-- managed member, a self-pay member; names with quotes and backslashes.
INSERT INTO tco.entity (entity_id, name, verified) VALUES (1, 'Acme', true);
INSERT INTO tco.account (account_id, name, entity_id, balance) VALUES
    (1, 'Ada "the admin"', 1, 100), (2, 'Max \ manager', 1, 100),
    (3, 'Mia', 1, 100), (4, 'Sam <self> #1', 1, 100), (9, 'outsider', NULL, 0);
INSERT INTO tco.organization (org_id, name, admin_account_id) VALUES (1, 'Acme "Group"', 1);
SELECT tco.create_unit(1, 'R&D') AS rnd \gset
SELECT tco.create_unit(1, 'Ops "blue"', :rnd) AS ops \gset
SELECT tco.add_member(1, 2, :rnd);
SELECT tco.add_member(1, 3, :ops);
SELECT tco.add_member(1, 4);
INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
    VALUES (3, 2, '2024-01-01');

SELECT tco.org_chart(1);
SELECT tco.org_chart(1, format => 'mermaid');

-- errors
SELECT tco.org_chart(42);
SELECT tco.org_chart(1, 'svg');
SELECT tco.org_chart(NULL);

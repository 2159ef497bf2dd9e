-- Trusteeship rules R1-R5 and R14 (DESIGN section 2), the member policy kept
-- in step with the trusteeship, and the functions that establish, move and
-- end trusteeships.
--
-- Every rule is a trigger on the tables, so direct INSERT/UPDATE/DELETE obey
-- it as well as the functions.  Concurrency: every change of a trusteeship
-- first locks the account rows involved (FOR NO KEY UPDATE, lowest id first
-- so two sessions never wait on each other in opposite orders).  In READ
-- COMMITTED each statement of a plpgsql function takes a fresh snapshot, so
-- the checks that follow the lock see every trusteeship committed by the
-- session that held it before: two sessions racing for the 300th place (R1)
-- or building a chain from both ends (R4) are serialized on a common account
-- row, and the second one sees the first one's row.
--
-- Error codes introduced here (class TC, see README "Error codes"):
--   TC001  R1: the management account already has 300 members in trusteeship
--   TC002  R2: member and manager are not the same verified entity / organization
--   TC003  R3: the entity of an account in trusteeship cannot change
--   TC004  R4: self-trusteeship or a chain (a member cannot manage, a manager cannot be managed)
--   TC005  R5: the member has no positive balance at association
--   TC006  a change dated before the member's latest trusteeship change
-- and the standard ones: 22004 NULL argument, 23503 unknown id, 55000 wrong
-- state (already / not in trusteeship).  TC008 (append-only history) is
-- raised by tco.append_only().

-- Trusteeship history is read by member and by manager over time.
CREATE INDEX trusteeship_manager ON tco.trusteeship (management_account_id, established_at);

-- R1: the cap lives in one place.
CREATE FUNCTION tco.max_managed_members() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 300
$$;
COMMENT ON FUNCTION tco.max_managed_members() IS 'R1: the largest number of members one management account may have in trusteeship at any instant (300).';

-- Lock account rows in ascending id order (the one lock order of tco, which
-- keeps concurrent trusteeship changes free of deadlocks).
CREATE FUNCTION tco.lock_accounts(account_ids bigint[]) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) FROM (SELECT 1 FROM tco.account
                          WHERE account_id = ANY (account_ids)
                          ORDER BY account_id FOR NO KEY UPDATE) locked;
$$;
COMMENT ON FUNCTION tco.lock_accounts(bigint[]) IS 'Locks the given account rows (FOR NO KEY UPDATE) in ascending id order; serializes trusteeship and money changes of those accounts.';

-- The instant of the member's latest trusteeship change (establish or end),
-- or NULL if it never had one.
CREATE FUNCTION tco.latest_trusteeship_change(p_account_id bigint) RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT max(greatest(established_at, ended_at))
    FROM tco.trusteeship WHERE member_account_id = p_account_id;
$$;
COMMENT ON FUNCTION tco.latest_trusteeship_change(bigint) IS 'Instant of the latest trusteeship change (established_at or ended_at) of a member account; NULL if none. Earlier changes are refused (TC006).';

-- True while the account is, or is scheduled to remain, in a trusteeship as
-- member or manager: a row not ended, or ended only in the future.
CREATE FUNCTION tco.in_trusteeship(p_account_id bigint) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM tco.trusteeship
                   WHERE (member_account_id = p_account_id OR management_account_id = p_account_id)
                     AND (ended_at IS NULL OR ended_at > now()));
$$;
COMMENT ON FUNCTION tco.in_trusteeship(bigint) IS 'True while the account is in a trusteeship (as member or manager) that has not ended yet.';

-- The management account paying for the account at instant `at` (NULL: it pays itself).
CREATE FUNCTION tco.manager_at(p_account_id bigint, p_at timestamptz) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT management_account_id FROM tco.trusteeship
    WHERE member_account_id = p_account_id
      AND established_at <= p_at AND (ended_at IS NULL OR ended_at > p_at);
$$;
COMMENT ON FUNCTION tco.manager_at(bigint, timestamptz) IS 'The management account of an account''s trusteeship in force at an instant (NULL: none). This is the relationship, not the payer of a bill line: see tco.trusteeship_effective_payer() for the switch timing of R6.';

-- ---------------------------------------------------------------------------
-- One check per rule.  Each is called with the account rows already locked.

CREATE FUNCTION tco.r1_cap_check(p_manager bigint, p_member bigint, p_start timestamptz, p_end timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    peak bigint;
BEGIN
    -- "At no instant": the number of the manager's trusteeships in force is
    -- largest at the new range's start or at a start of another of its
    -- trusteeships inside the new range, so only those instants are counted.
    SELECT coalesce(max(n), 0) INTO peak FROM (
        SELECT (SELECT count(*) FROM tco.trusteeship t
                WHERE t.management_account_id = p_manager
                  AND t.established_at <= pts.p AND (t.ended_at IS NULL OR t.ended_at > pts.p)) AS n
        FROM (SELECT p_start AS p
              UNION
              SELECT t.established_at FROM tco.trusteeship t
              WHERE t.management_account_id = p_manager AND t.established_at > p_start
                AND (p_end IS NULL OR t.established_at < p_end)) pts) counts;
    IF peak >= tco.max_managed_members() THEN
        -- TC001: R1 cap reached
        RAISE EXCEPTION 'R1: management account % already has % members in trusteeship; account % cannot join',
                p_manager, peak, p_member
            USING ERRCODE = 'TC001',
                  HINT = format('A management account may manage at most %s members at any instant: end another trusteeship first, or choose another management account.',
                                tco.max_managed_members());
    END IF;
END $$;
COMMENT ON FUNCTION tco.r1_cap_check(bigint, bigint, timestamptz, timestamptz) IS 'R1: refuses a trusteeship [start, end) that would give the manager more than tco.max_managed_members() members at some instant (TC001).';

CREATE FUNCTION tco.r2_same_entity_check(p_member bigint, p_manager bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    member_entity  bigint;
    manager_entity bigint;
    entity_ok      boolean;
    member_org     bigint;
    manager_org    bigint;
BEGIN
    SELECT entity_id INTO member_entity FROM tco.account WHERE account_id = p_member;
    SELECT entity_id INTO manager_entity FROM tco.account WHERE account_id = p_manager;
    -- FOR SHARE: an un-verification of the entity (R3) waits for us, or we for it.
    SELECT verified INTO entity_ok FROM tco.entity WHERE entity_id = member_entity FOR SHARE;
    IF member_entity IS NULL OR manager_entity IS NULL OR member_entity <> manager_entity
       OR NOT coalesce(entity_ok, false) THEN
        -- TC002: R2 same verified entity / same organization
        RAISE EXCEPTION 'R2: account % (entity %) and management account % (entity %) are not verified as the same entity',
                p_member, coalesce(member_entity::text, 'none'), p_manager, coalesce(manager_entity::text, 'none')
            USING ERRCODE = 'TC002',
                  HINT = 'Financial trusteeship requires both accounts to be verified as one common entity (tco.account.entity_id, tco.entity.verified).';
    END IF;
    SELECT org_id INTO member_org FROM tco.member WHERE account_id = p_member;
    SELECT org_id INTO manager_org FROM tco.member WHERE account_id = p_manager;
    IF member_org IS NULL OR manager_org IS NULL OR member_org <> manager_org THEN
        RAISE EXCEPTION 'R2: account % (organization %) and management account % (organization %) are not in the same organization',
                p_member, coalesce(member_org::text, 'none'), p_manager, coalesce(manager_org::text, 'none')
            USING ERRCODE = 'TC002',
                  HINT = 'Add both accounts to one organization with tco.add_member() first.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.r2_same_entity_check(bigint, bigint) IS 'R2: member and manager must be verified as the same entity and be members of the same organization (TC002).';

CREATE FUNCTION tco.r4_no_chain_check(p_member bigint, p_manager bigint, p_start timestamptz, p_end timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    other bigint;
BEGIN
    IF p_member = p_manager THEN
        -- TC004: R4 no self-trusteeship, no chains
        RAISE EXCEPTION 'R4: account % cannot be in trusteeship to itself', p_member
            USING ERRCODE = 'TC004', HINT = 'Choose another account of the same entity as management account.';
    END IF;
    SELECT member_account_id INTO other FROM tco.trusteeship
    WHERE management_account_id = p_member
      AND tstzrange(established_at, ended_at) && tstzrange(p_start, p_end)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'R4: account % manages account % and cannot become a managed member of account %',
                p_member, other, p_manager
            USING ERRCODE = 'TC004', HINT = 'A management account cannot be managed itself: end the trusteeships it manages first.';
    END IF;
    SELECT management_account_id INTO other FROM tco.trusteeship
    WHERE member_account_id = p_manager
      AND tstzrange(established_at, ended_at) && tstzrange(p_start, p_end)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'R4: account % is a managed member of account % and cannot become the management account of account %',
                p_manager, other, p_member
            USING ERRCODE = 'TC004', HINT = 'A managed member cannot manage others: end its own trusteeship first, or choose its management account instead.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.r4_no_chain_check(bigint, bigint, timestamptz, timestamptz) IS 'R4: no self-trusteeship, and during [start, end) the member manages nobody and the manager is nobody''s member (TC004).';

CREATE FUNCTION tco.r5_balance_check(p_member bigint) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cash numeric;
BEGIN
    -- "Positive available balance" is read as a positive cash balance: the
    -- member still pays its own charges of the current cycle (R6), and a
    -- credit line is not a balance.
    SELECT balance INTO cash FROM tco.account WHERE account_id = p_member;
    IF NOT cash > 0 THEN
        -- TC005: R5 no positive available balance
        RAISE EXCEPTION 'R5: account % has no positive available balance (balance %)', p_member, cash
            USING ERRCODE = 'TC005', HINT = 'Top up the account (tco.deposit) before associating it with a management account.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.r5_balance_check(bigint) IS 'R5: a member needs a positive cash balance when it is associated (TC005). Not checked for a move between managers.';

-- ---------------------------------------------------------------------------
-- Triggers on tco.trusteeship

CREATE FUNCTION tco.trusteeship_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    latest  timestamptz;
    existing tco.trusteeship;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        -- R14: only ending an active trusteeship is a change; history is never rewritten.
        IF NEW.trusteeship_id IS DISTINCT FROM OLD.trusteeship_id
           OR NEW.member_account_id IS DISTINCT FROM OLD.member_account_id
           OR NEW.management_account_id IS DISTINCT FROM OLD.management_account_id
           OR NEW.established_at IS DISTINCT FROM OLD.established_at
           OR (OLD.ended_at IS NOT NULL AND NEW.ended_at IS DISTINCT FROM OLD.ended_at) THEN
            RAISE EXCEPTION 'trusteeship % is history: only ended_at of an active trusteeship may be set', OLD.trusteeship_id
                USING ERRCODE = 'TC008',
                      HINT = 'History is never rewritten (R14): end the trusteeship with tco.end_trusteeship() and establish a new one.';
        END IF;
        IF NEW.ended_at IS NULL THEN
            RETURN NEW;
        END IF;
        PERFORM tco.lock_accounts(ARRAY[NEW.member_account_id]);
        latest := tco.latest_trusteeship_change(NEW.member_account_id);
        IF NEW.ended_at < latest THEN
            -- TC006: change dated before the member's latest change
            RAISE EXCEPTION 'trusteeship of account % cannot end at %: its latest trusteeship change was at %',
                    NEW.member_account_id, NEW.ended_at, latest
                USING ERRCODE = 'TC006', HINT = 'Trusteeship changes are recorded in time order: use an instant at or after the latest change.';
        END IF;
        RETURN NEW;
    END IF;

    -- INSERT.  Missing values are left to the NOT NULL constraints.
    IF NEW.member_account_id IS NULL OR NEW.management_account_id IS NULL OR NEW.established_at IS NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.member_account_id = NEW.management_account_id THEN
        PERFORM tco.r4_no_chain_check(NEW.member_account_id, NEW.management_account_id, NEW.established_at, NEW.ended_at);
    END IF;
    PERFORM tco.lock_accounts(ARRAY[NEW.member_account_id, NEW.management_account_id]);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account WHERE account_id = NEW.member_account_id),
                               'account', NEW.member_account_id);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account WHERE account_id = NEW.management_account_id),
                               'account', NEW.management_account_id);

    latest := tco.latest_trusteeship_change(NEW.member_account_id);
    IF NEW.established_at < latest THEN
        RAISE EXCEPTION 'trusteeship of account % cannot start at %: its latest trusteeship change was at %',
                NEW.member_account_id, NEW.established_at, latest
            USING ERRCODE = 'TC006', HINT = 'Trusteeship changes are recorded in time order: use an instant at or after the latest change.';
    END IF;
    SELECT * INTO existing FROM tco.trusteeship
    WHERE member_account_id = NEW.member_account_id
      AND tstzrange(established_at, ended_at) && tstzrange(NEW.established_at, NEW.ended_at)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account % is already in trusteeship to account % (trusteeship %)',
                NEW.member_account_id, existing.management_account_id, existing.trusteeship_id
            USING ERRCODE = '55000',
                  HINT = 'End it first, or move the member with tco.move_trusteeship().';
    END IF;

    PERFORM tco.r4_no_chain_check(NEW.member_account_id, NEW.management_account_id, NEW.established_at, NEW.ended_at);
    PERFORM tco.r2_same_entity_check(NEW.member_account_id, NEW.management_account_id);
    -- R5 applies to an association; a move (the previous trusteeship ends at
    -- this very instant) keeps the member in trusteeship throughout.
    IF NOT EXISTS (SELECT 1 FROM tco.trusteeship
                   WHERE member_account_id = NEW.member_account_id AND ended_at = NEW.established_at) THEN
        PERFORM tco.r5_balance_check(NEW.member_account_id);
    END IF;
    PERFORM tco.r1_cap_check(NEW.management_account_id, NEW.member_account_id, NEW.established_at, NEW.ended_at);
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.trusteeship_check() IS 'BEFORE INSERT/UPDATE on tco.trusteeship: locks the accounts, then enforces time order (TC006), one trusteeship at a time (55000), R4, R2, R5, R1, and R14 (only ended_at of an active row may be set, TC008).';
CREATE TRIGGER trusteeship_check BEFORE INSERT OR UPDATE ON tco.trusteeship
    FOR EACH ROW EXECUTE FUNCTION tco.trusteeship_check();
CREATE TRIGGER trusteeship_append_only BEFORE DELETE ON tco.trusteeship
    FOR EACH ROW EXECUTE FUNCTION tco.append_only();
CREATE TRIGGER trusteeship_no_truncate BEFORE TRUNCATE ON tco.trusteeship
    FOR EACH STATEMENT EXECUTE FUNCTION tco.append_only();

-- A move made by tco.establish_trusteeship()/tco.move_trusteeship() ends one
-- row and inserts the next in the same transaction; this transaction-local
-- flag tells the AFTER triggers that the end is the first half of a move, so
-- the member does not flip to self_pay (and its prepaid resources do not flip
-- back) for an instant.  Set only by those functions, reset right after.
CREATE FUNCTION tco.trusteeship_move_in_progress() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(current_setting('tco_internal.trusteeship_move', true), '') = 'on'
$$;
COMMENT ON FUNCTION tco.trusteeship_move_in_progress() IS 'Internal: true between the two halves of a move made by tco.move_trusteeship().';

-- member.policy follows the trusteeship: trusteeship while one is active
-- (ended_at IS NULL), self_pay otherwise.
CREATE FUNCTION tco.trusteeship_sync_policy() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.ended_at IS NULL THEN
        UPDATE tco.member SET policy = 'trusteeship'
        WHERE account_id = NEW.member_account_id AND policy <> 'trusteeship';
    ELSIF TG_OP = 'UPDATE' AND OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
          AND NOT tco.trusteeship_move_in_progress()
          AND NOT EXISTS (SELECT 1 FROM tco.trusteeship
                          WHERE member_account_id = NEW.member_account_id AND ended_at IS NULL) THEN
        UPDATE tco.member SET policy = 'self_pay'
        WHERE account_id = NEW.member_account_id AND policy <> 'self_pay';
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.trusteeship_sync_policy() IS 'AFTER trigger on tco.trusteeship: keeps tco.member.policy = trusteeship while the member has an active trusteeship, self_pay otherwise.';
CREATE TRIGGER trusteeship_sync_policy AFTER INSERT OR UPDATE ON tco.trusteeship
    FOR EACH ROW EXECUTE FUNCTION tco.trusteeship_sync_policy();

-- ---------------------------------------------------------------------------
-- Triggers on the organization model

-- Setting member.policy directly establishes or ends the trusteeship to the
-- organization's admin; nothing happens when the state already matches, which
-- also stops the recursion with tco.trusteeship_sync_policy().
CREATE FUNCTION tco.member_sync_trusteeship() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    active boolean;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.policy = OLD.policy THEN
        RETURN NULL;
    END IF;
    active := EXISTS (SELECT 1 FROM tco.trusteeship
                      WHERE member_account_id = NEW.account_id AND ended_at IS NULL);
    IF NEW.policy = 'trusteeship' AND NOT active THEN
        PERFORM tco.add_member_trusteeship(NEW.org_id, NEW.account_id);
    ELSIF NEW.policy = 'self_pay' AND active THEN
        PERFORM tco.end_trusteeship(NEW.account_id, now());
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION tco.member_sync_trusteeship() IS 'AFTER INSERT/UPDATE OF policy on tco.member: policy trusteeship establishes a trusteeship to the organization''s admin at now(); self_pay ends the active one at now().';
CREATE TRIGGER member_sync_trusteeship AFTER INSERT OR UPDATE OF policy ON tco.member
    FOR EACH ROW EXECUTE FUNCTION tco.member_sync_trusteeship();

-- Leaving the organization (or moving to another one, which is leave + join)
-- is refused while the account is in a trusteeship.
CREATE FUNCTION tco.member_leave_trusteeship_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF tco.in_trusteeship(OLD.account_id) THEN
        RAISE EXCEPTION 'account % is in a trusteeship and cannot leave organization %', OLD.account_id, OLD.org_id
            USING ERRCODE = '55000',
                  HINT = 'End the trusteeship first (tco.end_trusteeship), for the account and for any member it manages.';
    END IF;
    RETURN OLD;
END $$;
COMMENT ON FUNCTION tco.member_leave_trusteeship_check() IS 'BEFORE DELETE on tco.member: an account in a trusteeship (member or manager) cannot leave its organization (55000).';
CREATE TRIGGER member_leave_trusteeship_check BEFORE DELETE ON tco.member
    FOR EACH ROW EXECUTE FUNCTION tco.member_leave_trusteeship_check();

-- R3: the real-name verification of an account in trusteeship is locked.
CREATE FUNCTION tco.r3_realname_lock_account() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF NEW.entity_id IS DISTINCT FROM OLD.entity_id AND tco.in_trusteeship(OLD.account_id) THEN
        -- TC003: R3 real-name lock
        RAISE EXCEPTION 'R3: account % is in a trusteeship: its entity cannot change from % to %',
                OLD.account_id, coalesce(OLD.entity_id::text, 'none'), coalesce(NEW.entity_id::text, 'none')
            USING ERRCODE = 'TC003', HINT = 'End the trusteeship first, then change the real-name verification.';
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.r3_realname_lock_account() IS 'R3: BEFORE UPDATE OF entity_id on tco.account: refused while the account is in a trusteeship (TC003).';
CREATE TRIGGER r3_realname_lock_account BEFORE UPDATE OF entity_id ON tco.account
    FOR EACH ROW EXECUTE FUNCTION tco.r3_realname_lock_account();

CREATE FUNCTION tco.r3_realname_lock_entity() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    locked_account bigint;
BEGIN
    IF tco.restoring() THEN  -- stored history being restored (README "Backup and restore")
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF OLD.verified AND NOT NEW.verified THEN
        SELECT a.account_id INTO locked_account FROM tco.account a
        WHERE a.entity_id = OLD.entity_id AND tco.in_trusteeship(a.account_id)
        ORDER BY a.account_id LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'R3: entity % cannot lose its verification: its account % is in a trusteeship',
                    OLD.entity_id, locked_account
                USING ERRCODE = 'TC003', HINT = 'End the trusteeship first, then change the real-name verification.';
        END IF;
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION tco.r3_realname_lock_entity() IS 'R3: BEFORE UPDATE OF verified on tco.entity: an entity with an account in a trusteeship cannot be un-verified (TC003).';
CREATE TRIGGER r3_realname_lock_entity BEFORE UPDATE OF verified ON tco.entity
    FOR EACH ROW EXECUTE FUNCTION tco.r3_realname_lock_entity();

-- ---------------------------------------------------------------------------
-- Functions

CREATE FUNCTION tco.establish_trusteeship(member_account_id bigint, management_account_id bigint,
                                          at timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    existing tco.trusteeship;
    new_id  bigint;
BEGIN
    PERFORM tco.require_arg(member_account_id, 'member_account_id');
    PERFORM tco.require_arg(management_account_id, 'management_account_id');
    PERFORM tco.require_arg(at, 'at');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = establish_trusteeship.member_account_id),
                               'account', member_account_id);
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = establish_trusteeship.management_account_id),
                               'account', management_account_id);
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'trusteeship change instant must be finite, got %', at
            USING ERRCODE = '22023', HINT = 'Pass a real instant such as now().';
    END IF;
    -- Same lock order as the triggers; the member's current trusteeship is
    -- read after the lock, so it is the latest committed one.
    PERFORM tco.lock_accounts(ARRAY[member_account_id, management_account_id]);
    SELECT * INTO existing FROM tco.trusteeship t
    WHERE t.member_account_id = establish_trusteeship.member_account_id AND t.ended_at IS NULL;
    IF FOUND THEN
        IF existing.management_account_id = management_account_id THEN
            RAISE EXCEPTION 'account % is already in trusteeship to account % (trusteeship %)',
                    member_account_id, management_account_id, existing.trusteeship_id
                USING ERRCODE = '55000', HINT = 'Nothing to do; to change manager, pass another management account.';
        END IF;
        -- A move: end the current trusteeship and start the next at the same instant.
        PERFORM pg_catalog.set_config('tco_internal.trusteeship_move', 'on', true);
        UPDATE tco.trusteeship t SET ended_at = establish_trusteeship.at
            WHERE t.trusteeship_id = existing.trusteeship_id;
        PERFORM pg_catalog.set_config('tco_internal.trusteeship_move', '', true);
    END IF;
    INSERT INTO tco.trusteeship (member_account_id, management_account_id, established_at)
        VALUES (establish_trusteeship.member_account_id, establish_trusteeship.management_account_id, establish_trusteeship.at)
        RETURNING trusteeship_id INTO new_id;
    RETURN new_id;
END $$;
COMMENT ON FUNCTION tco.establish_trusteeship(bigint, bigint, timestamptz) IS 'Puts a member in trusteeship to a management account from instant at (default now()); if it is in trusteeship to another manager, this is a move (the old one ends at the same instant). Returns trusteeship_id. Rules R1-R5 and time order apply.';

CREATE FUNCTION tco.move_trusteeship(member_account_id bigint, new_management_account_id bigint,
                                     at timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(member_account_id, 'member_account_id');
    PERFORM tco.require_arg(new_management_account_id, 'new_management_account_id');
    PERFORM tco.require_arg(at, 'at');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = move_trusteeship.member_account_id),
                               'account', member_account_id);
    PERFORM tco.lock_accounts(ARRAY[member_account_id]);
    IF NOT EXISTS (SELECT 1 FROM tco.trusteeship t
                   WHERE t.member_account_id = move_trusteeship.member_account_id AND t.ended_at IS NULL) THEN
        RAISE EXCEPTION 'account % is not in trusteeship: there is nothing to move', member_account_id
            USING ERRCODE = '55000', HINT = 'Use tco.establish_trusteeship() to associate it.';
    END IF;
    RETURN tco.establish_trusteeship(member_account_id, new_management_account_id, at);
END $$;
COMMENT ON FUNCTION tco.move_trusteeship(bigint, bigint, timestamptz) IS 'Moves a managed member to another management account at instant at: ends the current trusteeship and starts the new one at the same instant. Returns the new trusteeship_id.';

CREATE FUNCTION tco.end_trusteeship(member_account_id bigint, at timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tco.require_arg(member_account_id, 'member_account_id');
    PERFORM tco.require_arg(at, 'at');
    PERFORM tco.require_exists(EXISTS (SELECT 1 FROM tco.account a WHERE a.account_id = end_trusteeship.member_account_id),
                               'account', member_account_id);
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'trusteeship change instant must be finite, got %', at
            USING ERRCODE = '22023', HINT = 'Pass a real instant such as now().';
    END IF;
    PERFORM tco.lock_accounts(ARRAY[member_account_id]);
    UPDATE tco.trusteeship t SET ended_at = end_trusteeship.at
        WHERE t.member_account_id = end_trusteeship.member_account_id AND t.ended_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % is not in trusteeship', member_account_id
            USING ERRCODE = '55000', HINT = 'Nothing to end; see tco.trusteeship for its history.';
    END IF;
END $$;
COMMENT ON FUNCTION tco.end_trusteeship(bigint, timestamptz) IS 'Ends the active trusteeship of a member at instant at (default now()); the member pays for itself again (switch timing: DESIGN section 3).';

CREATE FUNCTION tco.add_member_trusteeship(org_id bigint, account_id bigint) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    admin bigint;
BEGIN
    PERFORM tco.require_arg(org_id, 'org_id');
    PERFORM tco.require_arg(account_id, 'account_id');
    SELECT o.admin_account_id INTO admin FROM tco.organization o WHERE o.org_id = add_member_trusteeship.org_id;
    PERFORM tco.require_exists(FOUND, 'organization', org_id);
    RETURN tco.establish_trusteeship(account_id, admin, now());
END $$;
COMMENT ON FUNCTION tco.add_member_trusteeship(bigint, bigint) IS 'Puts a member in trusteeship to its organization''s admin account at now() (policy trusteeship of tco.add_member). Returns trusteeship_id.';

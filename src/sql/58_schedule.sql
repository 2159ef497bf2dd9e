-- Scheduled settlement with pg_cron (issue 15).  tco does not depend on
-- pg_cron: tco.schedule_settlement calls cron.schedule dynamically, and only
-- when the extension pg_cron is installed in this database (its scheduler
-- runs a job in the database of cron.database_name, as the role that
-- scheduled it).  None of these functions is SECURITY DEFINER: a job runs as
-- its scheduler, so scheduling through a definer would run it as the
-- extension owner.

-- Prepares the partitions of tco.bill_line for the current cycle and the two
-- after it (36_partition.sql: tco.prepare_cycles, which also moves lines
-- waiting in the default partition into theirs), then settles the cycle
-- before the current one (in the billing time zone) for everything, as the
-- caller; the command of the scheduled job.
CREATE FUNCTION tco.settle_previous_cycle(OUT cycle tco.billing_cycle, OUT statements bigint, OUT lines bigint,
                                          OUT list_total numeric, OUT due_total numeric)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    cycle := tco.cycle_of(pg_catalog.now()) OPERATOR(tco.-) 1;
    PERFORM tco.prepare_cycles();
    SELECT s.statements, s.lines, s.list_total, s.due_total
      INTO settle_previous_cycle.statements, settle_previous_cycle.lines,
           settle_previous_cycle.list_total, settle_previous_cycle.due_total
      FROM tco.settle_cycle(settle_previous_cycle.cycle) s;
END $$;
COMMENT ON FUNCTION tco.settle_previous_cycle() IS
'Creates the partitions of tco.bill_line of the current cycle and the two after it (tco.prepare_cycles), then settles the billing cycle before the one containing now() (billing time zone), for everything, with the caller''s rights; returns the cycle and tco.settle_cycle''s result. Idempotent. The command of the job tco.schedule_settlement creates.';

-- The schema of pg_cron's functions (cron) in this database, or NULL when
-- the extension pg_cron is not installed.
CREATE FUNCTION tco.pg_cron_schema() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    -- pg_cron creates its own schema (cron), a member of the extension
    SELECT n.nspname
      FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_depend d ON d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                                 AND d.refobjid OPERATOR(pg_catalog.=) e.oid AND d.deptype OPERATOR(pg_catalog.=) 'e'
                                 AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_namespace'::pg_catalog.regclass
      JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) d.objid
     WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron'
     ORDER BY n.nspname OPERATOR(pg_catalog.<>) 'cron', n.nspname
     LIMIT 1
$$;
COMMENT ON FUNCTION tco.pg_cron_schema() IS 'Internal: the schema of the extension pg_cron in this database (NULL: not installed).';

-- The pg_cron function named by its signature, checked to be a member of the
-- extension pg_cron (not a look-alike planted in a schema named cron);
-- 55000 with a hint when pg_cron is not installed in this database, 42501
-- with a hint when the caller may not use its schema.
CREATE FUNCTION tco.pg_cron_function(signature text) RETURNS regprocedure
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nsp name := tco.pg_cron_schema();
    f regprocedure;
BEGIN
    IF nsp IS NULL THEN
        RAISE EXCEPTION 'scheduled settlement needs the extension pg_cron, which is not installed in database %',
                        pg_catalog.current_database()
            USING ERRCODE = '55000',
                  HINT = pg_catalog.format('install pg_cron: CREATE EXTENSION pg_cron; (the server needs shared_preload_libraries = ''pg_cron'' and cron.database_name = %L, then a restart)',
                                           pg_catalog.current_database());
    END IF;
    IF NOT pg_catalog.has_schema_privilege(nsp, 'USAGE') THEN
        RAISE EXCEPTION 'role % may not use pg_cron: no USAGE on schema %', CURRENT_USER, nsp
            USING ERRCODE = '42501',
                  HINT = pg_catalog.format('A superuser grants it: GRANT USAGE ON SCHEMA %I TO %I;', nsp, CURRENT_USER);
    END IF;
    f := pg_catalog.to_regprocedure(pg_catalog.format('%I.%s', nsp, signature));
    IF f IS NULL OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                 WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass
                                   AND d.objid OPERATOR(pg_catalog.=) f
                                   AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                                   AND d.refobjid OPERATOR(pg_catalog.=) (SELECT e.oid FROM pg_catalog.pg_extension e
                                                                           WHERE e.extname OPERATOR(pg_catalog.=) 'pg_cron')
                                   AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN
        RAISE EXCEPTION 'the installed pg_cron has no function %.%', nsp, signature
            USING ERRCODE = '55000', HINT = 'Update pg_cron to version 1.4 or later: ALTER EXTENSION pg_cron UPDATE;';
    END IF;
    RETURN f;
END $$;
COMMENT ON FUNCTION tco.pg_cron_function(text) IS 'Internal: a function of the extension pg_cron by its signature (55000 with a hint when pg_cron is not installed in this database, 42501 when the caller has no USAGE on its schema).';

-- Schedules tco.settle_previous_cycle() with pg_cron; returns the job id.
-- The job runs as the calling role, in this database.  pg_cron 1.4 reads
-- schedules in GMT; a job of the same name and role is replaced.
CREATE FUNCTION tco.schedule_settlement(schedule text DEFAULT '0 2 1 * *',
                                        job_name text DEFAULT 'tco_settle_previous_cycle')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f regprocedure;
    job bigint;
BEGIN
    PERFORM tco.require_arg(schedule, 'schedule');
    PERFORM tco.require_arg(job_name, 'job_name');
    IF pg_catalog.btrim(job_name) OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'job_name must not be empty' USING ERRCODE = '22023', HINT = 'Name the job, for example ''tco_settle_previous_cycle''.';
    END IF;
    f := tco.pg_cron_function('schedule(text,text,text)');
    -- (pg_cron can only be installed in the database of cron.database_name)
    EXECUTE pg_catalog.format('SELECT %s($1, $2, $3)', f::pg_catalog.oid::pg_catalog.regproc)
       INTO job USING job_name, schedule, 'SELECT * FROM tco.settle_previous_cycle()'::text;
    RETURN job;
END $$;
COMMENT ON FUNCTION tco.schedule_settlement(text, text) IS
'Schedules the settlement of the previous cycle (SELECT * FROM tco.settle_previous_cycle()) with pg_cron as job job_name (default on the 1st of each month at 02:00 GMT, pg_cron''s time); the job runs as the calling role in this database. Returns the pg_cron job id; a job of the same name and role is replaced. 55000 with a hint when pg_cron is not installed in this database.';

-- Removes a job tco.schedule_settlement created (of the calling role);
-- false when there is none.
CREATE FUNCTION tco.unschedule_settlement(job_name text DEFAULT 'tco_settle_previous_cycle') RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f regprocedure;
    present boolean;
BEGIN
    PERFORM tco.require_arg(job_name, 'job_name');
    f := tco.pg_cron_function('unschedule(name)');
    EXECUTE pg_catalog.format('SELECT EXISTS (SELECT 1 FROM %I.job j WHERE j.jobname OPERATOR(pg_catalog.=) $1 '
                              'AND j.username OPERATOR(pg_catalog.=) CURRENT_USER)', tco.pg_cron_schema())
       INTO present USING job_name;
    IF NOT present THEN
        RETURN false;
    END IF;
    EXECUTE pg_catalog.format('SELECT %s($1)', f::pg_catalog.oid::pg_catalog.regproc) INTO present USING job_name::name;
    RETURN present;
END $$;
COMMENT ON FUNCTION tco.unschedule_settlement(text) IS 'Removes the pg_cron job job_name of the calling role (default tco_settle_previous_cycle); false when there is none. 55000 with a hint when pg_cron is not installed in this database.';

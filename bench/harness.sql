-- Benchmark harness: time a query against a baseline measured in the same run,
-- alternating them, and report medians and their ratio.  Installed into the
-- benchmark database (not part of the extension).
CREATE OR REPLACE FUNCTION public.bench_median(samples double precision[]) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s) FROM unnest(samples) s
$$;

-- Runs `baseline` and `subject` alternately `runs` times (after one warm-up
-- each); with rollback = true each run is inside a subtransaction that is
-- rolled back, so runs that write leave nothing behind.
CREATE OR REPLACE FUNCTION public.bench_compare(label text, subject text, baseline text,
                                                runs int DEFAULT 5, rollback boolean DEFAULT false)
RETURNS TABLE (benchmark text, subject_ms numeric, baseline_ms numeric, ratio numeric)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz; s double precision[] := '{}'; b double precision[] := '{}'; i int; q text;
BEGIN
    FOR i IN 0..runs LOOP
        FOREACH q IN ARRAY ARRAY[baseline, subject] LOOP
            t0 := clock_timestamp();
            IF rollback THEN
                BEGIN
                    EXECUTE q;
                    RAISE EXCEPTION USING ERRCODE = 'P0004', MESSAGE = 'bench rollback';
                EXCEPTION WHEN assert_failure THEN NULL;
                END;
            ELSE
                EXECUTE q;
            END IF;
            IF i > 0 THEN   -- run 0 warms caches
                IF q = subject THEN s := s || extract(epoch FROM clock_timestamp() - t0) * 1000;
                ELSE b := b || extract(epoch FROM clock_timestamp() - t0) * 1000; END IF;
            END IF;
        END LOOP;
    END LOOP;
    benchmark := label;
    subject_ms := round(public.bench_median(s)::numeric, 1);
    baseline_ms := round(public.bench_median(b)::numeric, 1);
    ratio := round((public.bench_median(s) / public.bench_median(b))::numeric, 2);
    RETURN NEXT;
END $$;

-- Peak resident memory of this backend (kB), from /proc.
CREATE OR REPLACE FUNCTION public.bench_vmhwm_kb() RETURNS bigint
LANGUAGE sql AS $$
    SELECT substring(pg_read_file('/proc/self/status') FROM 'VmHWM:\s+(\d+) kB')::bigint
$$;

-- Private memory of this backend: its memory contexts (what PostgreSQL and tco
-- allocated) and RssAnon (VmHWM also counts the shared buffers it touched).
CREATE OR REPLACE FUNCTION public.bench_backend_memory() RETURNS text
LANGUAGE sql AS $$
    SELECT format('memory contexts %s kB (tco payer cache %s kB), RssAnon %s kB, VmHWM %s kB',
                  (SELECT sum(total_bytes) / 1024 FROM pg_backend_memory_contexts),
                  coalesce((SELECT sum(total_bytes) / 1024 FROM pg_backend_memory_contexts WHERE name = 'tco payer cache'), 0),
                  substring(pg_read_file('/proc/self/status') FROM 'RssAnon:\s+(\d+) kB'),
                  public.bench_vmhwm_kb())
$$;

-- Peak private memory of this backend (kB): its peak resident size (VmHWM)
-- minus the shared memory it has touched (RssShmem: shared buffers, which
-- grow with the table for any query reading it, and only grow during a run).
CREATE OR REPLACE FUNCTION public.bench_private_kb() RETURNS bigint
LANGUAGE sql AS $$
    SELECT substring(s FROM 'VmHWM:\s+(\d+) kB')::bigint - substring(s FROM 'RssShmem:\s+(\d+) kB')::bigint
    FROM pg_read_file('/proc/self/status') s
$$;

-- Schema tco: types shared by every part and the installation's configuration.

COMMENT ON SCHEMA tco IS 'tco: cloud organizations, financial trusteeship, payers and billing-cycle settlement';

CREATE TYPE tco.granularity AS ENUM ('minute', 'hour', 'day', 'week', 'month');
COMMENT ON TYPE tco.granularity IS 'Billing granularity of a product; boundaries are taken in the billing time zone, weeks are ISO weeks starting Monday 00:00.';

CREATE TYPE tco.settlement_policy AS ENUM ('self_pay', 'trusteeship');
COMMENT ON TYPE tco.settlement_policy IS 'self_pay: the member pays its own bills; trusteeship: its management account pays (financial trusteeship / unified payment).';

CREATE TYPE tco.charge_type AS ENUM ('prepaid', 'postpaid');
COMMENT ON TYPE tco.charge_type IS 'prepaid: an order paid ahead; postpaid: pay-as-you-go usage.';

-- Cache invalidation: a statement-level trigger on every table a C cache reads
-- (see src/cache.c for the rule).
CREATE FUNCTION tco.invalidate_cache() RETURNS trigger
    AS 'MODULE_PATHNAME', 'tco_invalidate_cache' LANGUAGE C;
COMMENT ON FUNCTION tco.invalidate_cache() IS 'Statement-level trigger: invalidates the per-backend caches built from the table, in this and every other session.';

-- Whether this statement restores stored data (src/guard.c, README "Backup
-- and restore"): row_security is off, as pg_dump and pg_restore set it, and
-- the session's role is a superuser or has BYPASSRLS.  tco's triggers then
-- take rows as stored history.
CREATE FUNCTION tco.restoring() RETURNS boolean
    AS 'MODULE_PATHNAME', 'tco_restoring' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION tco.restoring() IS 'True while stored data is being restored: row_security = off (as pg_dump and pg_restore set it) and the session''s role is a superuser or has BYPASSRLS. tco''s triggers then neither derive rows nor re-judge past actions.';

-- The installation's configuration: at most one row; no row means every default.
CREATE TABLE tco.config (
    singleton        boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    billing_timezone text NOT NULL DEFAULT 'UTC',
    legacy_cutover   timestamptz NOT NULL DEFAULT '2022-08-01 12:00:00+08',
    billing_currency text NOT NULL DEFAULT 'USD' CONSTRAINT config_billing_currency CHECK (billing_currency ~ '^[A-Z]{3}$'),
    provider_name    text NOT NULL DEFAULT 'tco' CONSTRAINT config_provider_name CHECK (btrim(provider_name) <> '')
);
COMMENT ON TABLE tco.config IS 'Installation configuration (one row at most; absent means defaults).';
COMMENT ON COLUMN tco.config.billing_timezone IS 'Time zone in which every hour, day, week and month boundary is taken (default UTC).';
COMMENT ON COLUMN tco.config.billing_currency IS 'ISO 4217 code of the currency every amount is in (default USD): the BillingCurrency of the FOCUS export.';
COMMENT ON COLUMN tco.config.provider_name IS 'Name of the provider that bills (default tco): ProviderName, PublisherName and, for uninvoiced lines, InvoiceIssuerName of the FOCUS export.';
COMMENT ON COLUMN tco.config.legacy_cutover IS 'Trusteeships established before this instant are legacy: their members use the manager''s contract discount (R8).';
SELECT pg_catalog.pg_extension_config_dump('tco.config', '');

CREATE FUNCTION tco.config_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- Region names only: a name with a digit is a POSIX offset or rule, whose
    -- sign is the opposite of ISO 8601 ('+08', 'UTC+8', 'Etc/GMT+8' are UTC-8).
    IF NEW.billing_timezone ~ '[0-9]' OR NEW.billing_timezone ~ '^[+-]' THEN
        RAISE EXCEPTION 'billing time zone "%" is an offset or a POSIX rule, not a region name', NEW.billing_timezone
            USING ERRCODE = '22023',
                  DETAIL = 'Numeric and POSIX-style zone names count offsets west of Greenwich: ''+08'' means UTC-8.',
                  HINT = 'Use a region name of pg_timezone_names, such as ''Asia/Shanghai'' or ''UTC''.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_timezone_names WHERE name = NEW.billing_timezone) THEN
        RAISE EXCEPTION 'billing time zone "%" does not exist', NEW.billing_timezone
            USING ERRCODE = '22023',
                  HINT = 'Use a name from pg_timezone_names, such as ''UTC'' or ''Asia/Shanghai''.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER config_check BEFORE INSERT OR UPDATE ON tco.config
    FOR EACH ROW EXECUTE FUNCTION tco.config_check();
CREATE TRIGGER config_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON tco.config
    FOR EACH STATEMENT EXECUTE FUNCTION tco.invalidate_cache();

CREATE FUNCTION tco.set_billing_timezone(zone text) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF zone IS NULL THEN
        RAISE EXCEPTION 'billing time zone must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass a zone name such as ''UTC'' or ''Asia/Shanghai''.';
    END IF;
    INSERT INTO tco.config (billing_timezone) VALUES (zone)
        ON CONFLICT (singleton) DO UPDATE SET billing_timezone = EXCLUDED.billing_timezone;
    RETURN zone;
END $$;
COMMENT ON FUNCTION tco.set_billing_timezone(text) IS 'Sets the installation''s billing time zone (validated against pg_timezone_names).';

-- SECURITY DEFINER: whoever may call it (tco_reader may) reads the zone
-- without a privilege on tco.config, as the C functions do (src/config.c).
CREATE FUNCTION tco.billing_timezone() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT billing_timezone FROM tco.config), 'UTC')
$$;
COMMENT ON FUNCTION tco.billing_timezone() IS 'The installation''s billing time zone (default UTC).';

-- The billing currency and the provider's name (the FOCUS export reads them;
-- SECURITY DEFINER like tco.billing_timezone, so a reader granted the export
-- needs no privilege on tco.config).
CREATE FUNCTION tco.billing_currency() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT billing_currency FROM tco.config), 'USD')
$$;
COMMENT ON FUNCTION tco.billing_currency() IS 'The installation''s billing currency, ISO 4217 (tco.config.billing_currency; default USD).';
CREATE FUNCTION tco.provider_name() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT provider_name FROM tco.config), 'tco')
$$;
COMMENT ON FUNCTION tco.provider_name() IS 'The name of the provider that bills (tco.config.provider_name; default tco).';

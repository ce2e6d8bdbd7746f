-- genstudio migration 0001: what Supabase already provides, created only where it is absent.
--
-- On Supabase every block below finds its object in place and does nothing. On plain
-- PostgreSQL it creates a minimal `auth` schema, `auth.users`, `auth.uid()`, `auth.role()`,
-- `auth.jwt()` and the roles `anon`, `authenticated`, `service_role`, so the same job-table
-- migrations and row-level-security policies run unchanged on both.
-- Objects made here carry the comment 'genstudio: supabase compatibility' so that the down
-- step removes only what this step created, never Supabase's own.

DO $compat$
BEGIN
    IF to_regnamespace('auth') IS NULL THEN
        CREATE SCHEMA auth;
        COMMENT ON SCHEMA auth IS 'genstudio: supabase compatibility';
        -- On Supabase these grants exist already, and the schema is not ours to grant on.
        GRANT USAGE ON SCHEMA auth TO PUBLIC;
    END IF;

    IF to_regclass('auth.users') IS NULL THEN
        CREATE TABLE auth.users (
            id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            aud                text NOT NULL DEFAULT 'authenticated',
            role               text NOT NULL DEFAULT 'authenticated',
            email              text UNIQUE,
            encrypted_password text,
            raw_app_meta_data  jsonb NOT NULL DEFAULT '{}',
            raw_user_meta_data jsonb NOT NULL DEFAULT '{}',
            last_sign_in_at    timestamptz,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now()
        );
        COMMENT ON TABLE auth.users IS 'genstudio: supabase compatibility';
    END IF;

    -- Supabase's definitions: claims come from the transaction-local `request.jwt.claims`
    -- (PostgREST >= 9); the older per-claim settings are the fallback.
    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid
            LANGUAGE sql STABLE
            AS $fn$
                SELECT coalesce(
                    nullif(current_setting('request.jwt.claim.sub', true), ''),
                    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
                )::uuid
            $fn$;
        COMMENT ON FUNCTION auth.uid() IS 'genstudio: supabase compatibility';
    END IF;

    IF to_regprocedure('auth.role()') IS NULL THEN
        CREATE FUNCTION auth.role() RETURNS text
            LANGUAGE sql STABLE
            AS $fn$
                SELECT coalesce(
                    nullif(current_setting('request.jwt.claim.role', true), ''),
                    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
                )::text
            $fn$;
        COMMENT ON FUNCTION auth.role() IS 'genstudio: supabase compatibility';
    END IF;

    IF to_regprocedure('auth.jwt()') IS NULL THEN
        CREATE FUNCTION auth.jwt() RETURNS jsonb
            LANGUAGE sql STABLE
            AS $fn$
                SELECT coalesce(
                    nullif(current_setting('request.jwt.claim', true), ''),
                    nullif(current_setting('request.jwt.claims', true), '')
                )::jsonb
            $fn$;
        COMMENT ON FUNCTION auth.jwt() IS 'genstudio: supabase compatibility';
    END IF;

    -- Roles are cluster-wide: another database in the same cluster may already have made them.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;

    -- The API connects as the database owner and switches role per transaction
    -- (`SET LOCAL ROLE authenticated`), as Supabase's `authenticator` does. Supabase's
    -- `postgres` is a member already; elsewhere a non-superuser owner may lack the right to
    -- grant itself membership, which is worth a warning, not a failed migration.
    BEGIN
        IF NOT pg_has_role(current_user, 'anon', 'MEMBER') THEN
            EXECUTE format('GRANT anon TO %I', current_user);
        END IF;
        IF NOT pg_has_role(current_user, 'authenticated', 'MEMBER') THEN
            EXECUTE format('GRANT authenticated TO %I', current_user);
        END IF;
        IF NOT pg_has_role(current_user, 'service_role', 'MEMBER') THEN
            EXECUTE format('GRANT service_role TO %I', current_user);
        END IF;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING '% cannot become anon, authenticated and service_role: %', current_user, SQLERRM
            USING HINT = 'a superuser should run: GRANT anon, authenticated, service_role TO ' || current_user;
    END;
END
$compat$;

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

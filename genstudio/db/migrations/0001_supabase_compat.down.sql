-- Undo 0001: drop only the objects that 0001 itself created (those carrying its comment).
-- The roles stay: they are cluster-wide and other databases in the cluster may use them.

DO $compat$
DECLARE
    marker constant text := 'genstudio: supabase compatibility';
BEGIN
    IF obj_description(to_regprocedure('auth.jwt()'), 'pg_proc') IS NOT DISTINCT FROM marker THEN
        DROP FUNCTION auth.jwt();
    END IF;
    IF obj_description(to_regprocedure('auth.role()'), 'pg_proc') IS NOT DISTINCT FROM marker THEN
        DROP FUNCTION auth.role();
    END IF;
    IF obj_description(to_regprocedure('auth.uid()'), 'pg_proc') IS NOT DISTINCT FROM marker THEN
        DROP FUNCTION auth.uid();
    END IF;
    IF obj_description(to_regclass('auth.users'), 'pg_class') IS NOT DISTINCT FROM marker THEN
        DROP TABLE auth.users;
    END IF;
    IF obj_description(to_regnamespace('auth'), 'pg_namespace') IS NOT DISTINCT FROM marker THEN
        DROP SCHEMA auth;
    END IF;
END
$compat$;

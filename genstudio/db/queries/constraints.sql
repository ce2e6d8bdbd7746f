-- What a constraint a statement violated stands for, so that the API can say it in the caller's
-- terms instead of forwarding the database's wording. Run as the database owner.

-- name: references_accounts
-- Whether a violated foreign key points at auth.users: every user-owned row references its
-- owner there, so a violation means the caller's account was deleted after its token was issued.
SELECT EXISTS (
    SELECT 1
    FROM pg_constraint c
    JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE c.contype = 'f'
      AND c.conname = %(constraint)s
      AND n.nspname = %(schema)s
      AND c.confrelid = to_regclass('auth.users')
) AS references_accounts

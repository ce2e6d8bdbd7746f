-- Local accounts in `auth.users` (the table Supabase keeps its users in; on plain
-- PostgreSQL migration 0001 creates a minimal one). Run as the database owner.

-- name: insert_user
INSERT INTO auth.users (email, encrypted_password) VALUES (%(email)s, %(password_hash)s) RETURNING id

-- name: find_by_email
SELECT id, email, encrypted_password FROM auth.users WHERE email = %(email)s

-- name: record_sign_in
-- A hash made with older argon2 parameters is replaced on the next successful sign-in.
UPDATE auth.users
SET last_sign_in_at = now(),
    encrypted_password = coalesce(%(new_hash)s, encrypted_password),
    updated_at = now()
WHERE id = %(id)s

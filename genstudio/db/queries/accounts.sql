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

-- name: list_users
SELECT u.id, u.email, u.created_at, u.last_sign_in_at,
       (SELECT count(*) FROM public.video_jobs j WHERE j.user_id = u.id)
     + (SELECT count(*) FROM public.image_jobs j WHERE j.user_id = u.id)
     + (SELECT count(*) FROM public.text_jobs j WHERE j.user_id = u.id) AS jobs
FROM auth.users u
ORDER BY u.email NULLS LAST, u.created_at

-- name: delete_user
-- The job tables reference auth.users ON DELETE CASCADE (as the guide defines them): the
-- account's jobs go with it, which is why the CLI asks for that explicitly.
DELETE FROM auth.users WHERE email = %(email)s RETURNING id

-- name: set_password
UPDATE auth.users SET encrypted_password = %(password_hash)s, updated_at = now()
WHERE email = %(email)s
RETURNING id

-- The names Clerk last sent, kept apart from the names shown. A user can rename themself in
-- the app (`updateMe`), which Clerk never hears of; a later Clerk delivery for another reason
-- (a new email, a new avatar) still carries Clerk's old names and used to undo the rename. A
-- delivery now replaces a shown name only when Clerk's own name changed.
ALTER TABLE accounts.users
    ADD COLUMN clerk_first_name text,
    ADD COLUMN clerk_last_name text;

-- What Clerk sent last is not known for the users already here: their names as they stand.
UPDATE accounts.users
SET clerk_first_name = first_name, clerk_last_name = last_name
WHERE deleted_at IS NULL;

-- A deleted user keeps no personal data, Clerk's copy of their names included.
ALTER TABLE accounts.users
    DROP CONSTRAINT users_deleted_keep_no_personal_data,
    ADD CONSTRAINT users_deleted_keep_no_personal_data CHECK (
        deleted_at IS NULL
        OR (email IS NULL AND first_name IS NULL AND last_name IS NULL AND image_url IS NULL
            AND last_signed_in_at IS NULL AND clerk_first_name IS NULL
            AND clerk_last_name IS NULL)
    );

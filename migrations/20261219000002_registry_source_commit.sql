-- The commit of the code each version was published from (null: published without one, or
-- before this column). A publish whose checkout does not contain the latest version's commit
-- is refused unless forced: a CI run re-run on an old commit would otherwise publish over a
-- newer version, and the check would pass what only the newer one added as "unused".
ALTER TABLE registry.versions ADD COLUMN source_commit text;

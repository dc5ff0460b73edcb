-- A removed device's row (kept without its token, so a late event cannot bring the device
-- back) is now forgotten 30 days after its removal (the notifications `retention` module):
-- register and unregister in a loop added a row a cycle for good. Found by its removal time.
CREATE INDEX devices_removed_at ON notifications.devices (removed_at)
    WHERE removed_at IS NOT NULL;

//! Cache entries written only while the content they were read from is still current.
//!
//! A cache keyed by a content version (`gl:content:version`) reads the version, reads the
//! store, then writes what it read under that version. An ingest may begin in between: it
//! moves the version on first, then rewrites the store, so an answer read meanwhile can hold
//! half-written data while it is tagged with the version before. Versions are hashes of the
//! corpus and may come back (re-ingesting the previous corpus rolls back), and with them such
//! entries would be served. [`set_while_current`] writes the entries in one Lua script that
//! first checks the version key still holds the version they were read at: an ingest that
//! began since (or a version key that is missing) writes nothing.

/// The script: `KEYS[1]` the version key, `KEYS[2..]` the entries' keys; `ARGV[1]` the
/// version, then each entry's value and seconds. Answers how many entries it wrote.
const SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[2 * i - 2], 'EX', ARGV[2 * i - 1])
end
return #KEYS - 1
";

/// The command writing `entries` (key, value, seconds) while `version_key` holds `version`;
/// `None` when there is nothing to write. Its answer is the number of entries written (0 when
/// the version moved on).
pub fn set_while_current<V: redis::ToRedisArgs>(
    version_key: &str,
    version: &str,
    entries: &[(String, V, u64)],
) -> Option<redis::Cmd> {
    if entries.is_empty() {
        return None;
    }
    let mut command = redis::cmd("EVAL");
    command.arg(SCRIPT).arg(entries.len() + 1).arg(version_key);
    for (key, _, _) in entries {
        command.arg(key);
    }
    command.arg(version);
    for (_, value, seconds) in entries {
        command.arg(value).arg(*seconds);
    }
    Some(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_written_only_while_their_version_is_current() {
        let redis = crate::test_stack::redis();
        let shared = redis.get_multiplexed_async_connection().await.unwrap();
        let mut connection = shared.clone();
        let prefix = format!("gl_test_versioned:{}", uuid::Uuid::new_v4().simple());
        let version_key = format!("{prefix}:version");
        let entry = |n: u32| (format!("{prefix}:entry:{n}"), format!("value {n}"), 60u64);
        let written = |command: redis::Cmd| {
            let mut connection = shared.clone();
            async move { command.query_async::<u64>(&mut connection).await.unwrap() }
        };
        let exists = |n: u32| {
            let mut connection = shared.clone();
            let key = entry(n).0;
            async move {
                redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<u64>(&mut connection)
                    .await
                    .unwrap()
            }
        };

        // No version yet: nothing is written.
        let command = set_while_current(&version_key, "v1", &[entry(1)]).unwrap();
        assert_eq!(written(command).await, 0);
        assert_eq!(exists(1).await, 0);

        let () = redis::cmd("SET")
            .arg(&version_key)
            .arg("v1")
            .query_async(&mut connection)
            .await
            .unwrap();
        let command = set_while_current(&version_key, "v1", &[entry(1), entry(2)]).unwrap();
        assert_eq!(written(command).await, 2);
        let ttl: i64 = redis::cmd("TTL")
            .arg(entry(2).0)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!((1..=60).contains(&ttl), "{ttl}");
        let value: String = redis::cmd("GET")
            .arg(entry(2).0)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(value, "value 2");

        // An ingest began: what was read at v1 is not written.
        let () = redis::cmd("SET")
            .arg(&version_key)
            .arg("v2-ingesting-x")
            .query_async(&mut connection)
            .await
            .unwrap();
        let command = set_while_current(&version_key, "v1", &[entry(3)]).unwrap();
        assert_eq!(written(command).await, 0);
        assert_eq!(exists(3).await, 0);
        assert!(set_while_current::<String>(&version_key, "v1", &[]).is_none());

        let _: () = redis::cmd("DEL")
            .arg(&version_key)
            .arg(entry(1).0)
            .arg(entry(2).0)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

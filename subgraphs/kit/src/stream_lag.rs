//! How far behind the consumer groups of a process are: every so often
//! [`run_lag_reporter`] asks Redis (`XINFO GROUPS <stream>`) for each (stream, group) the process
//! consumes, and exports the group's `lag` (entries added and not yet read by the group) and
//! `pending` (read, not acknowledged) as the gauges `gospelib_stream_lag` and
//! `gospelib_stream_pending` ([`Metrics::set_stream_backlog`]).
//!
//! A lag that grows says the consumers cannot keep up (or are down); pending entries that stay
//! say a handler keeps failing (they are retried, then dead-lettered; see
//! [`crate::streams`]). Redis leaves `lag` unknown while entries deleted from the middle of the
//! stream (`XDEL`: a deleted user's events) lie past what the group has read: the reporter then
//! counts the entries after the group's last delivered one, up to [`COUNTED_LAG_CAP`]. A stream or
//! group that does not exist yet reports nothing; Redis failing is logged at debug and tried
//! again at the next tick.

use std::time::Duration;

use redis::Value;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The most entries counted when Redis does not know a group's lag (a lag that large reads
/// as this: an alert on it fires all the same).
pub const COUNTED_LAG_CAP: usize = 1_000;

/// What one consumer group has left on its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Entries of the stream the group has not read.
    pub lag: i64,
    /// Entries the group read and has not acknowledged.
    pub pending: i64,
}

/// The backlog of `group` on `stream`, or `None` when the stream or the group does not exist.
pub async fn backlog(
    connection: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
) -> redis::RedisResult<Option<Backlog>> {
    let groups: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(connection)
        .await
    {
        Ok(groups) => groups,
        // `ERR no such key`: nothing was ever written to the stream.
        Err(error)
            if matches!(error.kind(), redis::ErrorKind::Server(_))
                && error.to_string().contains("no such key") =>
        {
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    let Some(fields) = group_fields(&groups, group) else {
        return Ok(None);
    };
    let number = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| as_i64(value))
    };
    let pending = number("pending").unwrap_or(0);
    let lag = match number("lag") {
        Some(lag) => lag,
        None => {
            // Counted: the entries after the last one delivered to the group, up to a cap.
            let last_delivered = fields
                .iter()
                .find(|(key, _)| key == "last-delivered-id")
                .and_then(|(_, value)| as_text(value))
                .unwrap_or_else(|| "0-0".to_owned());
            let after: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                .arg(stream)
                .arg(format!("({last_delivered}"))
                .arg("+")
                .arg("COUNT")
                .arg(COUNTED_LAG_CAP)
                .query_async(connection)
                .await?;
            i64::try_from(after.len()).unwrap_or(i64::MAX)
        }
    };
    Ok(Some(Backlog { lag, pending }))
}

/// The (name, value) pairs Redis gave for `group`, in either protocol's shape.
fn group_fields(groups: &Value, group: &str) -> Option<Vec<(String, Value)>> {
    let Value::Array(groups) = groups else {
        return None;
    };
    groups.iter().find_map(|entry| {
        let fields: Vec<(String, Value)> = match entry {
            Value::Array(flat) => flat
                .chunks(2)
                .filter_map(|pair| Some((as_text(&pair[0])?, pair.get(1)?.clone())))
                .collect(),
            Value::Map(pairs) => pairs
                .iter()
                .filter_map(|(key, value)| Some((as_text(key)?, value.clone())))
                .collect(),
            _ => return None,
        };
        let name = fields
            .iter()
            .find(|(key, _)| key == "name")
            .and_then(|(_, value)| as_text(value))?;
        (name == group).then_some(fields)
    })
}

fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

fn as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Int(number) => Some(*number),
        other => as_text(other)?.parse().ok(),
    }
}

/// Exports the backlog of each (stream, group) in `groups` every `every`, until `shutdown`
/// fires (`true` or its sender dropped).
pub async fn run_lag_reporter(
    redis: redis::Client,
    metrics: Metrics,
    groups: Vec<(String, String)>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connection = None;
    loop {
        if connection.is_none() {
            connection = redis.get_multiplexed_async_connection().await.ok();
        }
        if let Some(live) = connection.as_mut() {
            for (stream, group) in &groups {
                let asked = tokio::time::timeout(every, backlog(live, stream, group)).await;
                match asked {
                    Ok(Ok(Some(found))) => {
                        metrics.set_stream_backlog(stream, group, found.lag, found.pending)
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(error)) => {
                        tracing::debug!(%stream, %group, %error, "stream backlog not read");
                        connection = None;
                        break;
                    }
                    Err(_) => {
                        tracing::debug!(%stream, %group, "stream backlog not read in time");
                        connection = None;
                        break;
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = shutdown.wait_for(|stop| *stop) => {
                let _ = changed;
                return;
            }
        }
    }
}

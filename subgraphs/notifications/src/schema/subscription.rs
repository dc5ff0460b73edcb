//! The notifications subscription: `notificationReceived`, each notification put in the
//! caller's inbox from now on, wherever it was made (an event consumer, a reminder job, a test
//! notification in another process), heard on the caller's live channel ([`crate::live`]).
//!
//! Only a signed-in user may open it (`@authenticated`; the router refuses others before
//! subscribing, and the subgraph answers `UNAUTHORIZED` to a request without a user). The
//! caller is checked once, when the subscription opens; it hears its own channel only, and an
//! event of anyone else's (which cannot be on that channel) is dropped. Where live events were
//! lost (the subscriber fell behind, or the process's Redis connection was made again), the
//! stream answers a `LIVE_GAP` error in their place and goes on.

use async_graphql::{Context, Result, Subscription as SubscriptionRoot};
use futures_util::{Stream, StreamExt};
use gospelib_kit::caller::Caller;
use gospelib_kit::live::LiveEvents;
use gospelib_kit::subgraph::authenticated;

use super::types::Notification;
use crate::live::{inbox_channel, parse};

pub struct Subscription;

/// What a client reads again after a `LIVE_GAP`.
const REREAD: &str = "read `notifications` again for the ones missed";

/// How many notifications one inbox listener may be behind before it gets `LIVE_GAP`: a
/// person's inbox gets a few at a time, and a channel per user with the default buffer would
/// take ~8 KiB per subscribed user before any arrives.
const INBOX_BUFFER: usize = 16;

#[SubscriptionRoot]
impl Subscription {
    /// Each notification put in the caller's inbox from now on, as it arrives (the inbox keeps
    /// them all, for a year: after a lost connection, or a result whose error is `LIVE_GAP`, which stands
    /// for notifications missed, read `notifications` again, after a short random pause).
    #[graphql(directive = authenticated::apply())]
    async fn notification_received(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = Result<Notification>> + use<>> {
        let user = Caller::of(ctx).require_user()?;
        // Without live events (a process built without Redis pub/sub) there is nothing to hear.
        let live = ctx.data::<LiveEvents>().map_err(|_| {
            gospelib_kit::errors::ErrorCode::ServiceUnavailable
                .error("live notifications are unavailable here: read `notifications` instead")
        })?;
        Ok(live
            .subscribe_with_buffer(&inbox_channel(user), INBOX_BUFFER)
            .filter_map(move |heard| async move {
                let event = match heard.into_event(REREAD) {
                    Ok(event) => event,
                    Err(gap) => return Some(Err(gap)),
                };
                let row = parse(&event, user);
                if row.is_none() {
                    tracing::warn!("skipped a live notification event that was not the caller's");
                }
                row.map(|row| Ok(Notification(row)))
            }))
    }
}

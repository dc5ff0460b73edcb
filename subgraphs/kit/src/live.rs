//! Live events shared by every process through Redis pub/sub: what a subscription listens to,
//! so that a subscriber connected to any pod hears what any other pod raised.
//!
//! - [`LiveEvents::publish`] sends one JSON event on a channel (`PUBLISH`, over a connection
//!   manager made on first use). After two publishes in a row failed (Redis down or silent),
//!   the next ones fail at once for a while (a circuit breaker, [`crate::breaker`]: 1 s,
//!   doubling up to 30 s while probes fail), so a caller announcing many events (the reminders
//!   job) does not wait out the deadline on each. An event not published is a gap of one to
//!   this process's listeners of its channel, and lost to other processes' without one (one
//!   failure alone never stops the next): whatever must not be missed has a durable copy
//!   elsewhere, as below.
//! - [`LiveEvents::subscribe`] is a stream of what is heard on the channel ([`Heard`]): its
//!   events, and a [`Heard::Gap`] where events were lost. A process keeps **one**
//!   pub/sub connection, made on the first listener, for every channel: Redis is told
//!   `SUBSCRIBE` when a channel gets its first listener here and `UNSUBSCRIBE` once its last
//!   listener is dropped; each event is parsed once and handed to every listener of its channel.
//! - A lost connection (Redis restarted, the connection killed, no answer to the periodic
//!   `PING`) is logged at warn and made again with a growing pause (from
//!   [`LiveSettings::first_retry`], doubling up to [`LiveSettings::longest_retry`]); every
//!   channel with listeners is subscribed again, and each of its listeners hears a gap:
//!   events published while it was down are lost, since pub/sub keeps nothing.
//! - Each listener has a bounded buffer ([`LiveSettings::buffer`] events). A listener that
//!   falls further behind (a slow subscriber) loses its *oldest* events, hears a gap saying how
//!   many, and a warning is logged; the others are not slowed. Live events are therefore a
//!   prompt, not a record: whatever must not be missed has a durable copy elsewhere (a
//!   notification's is its inbox row), which a client reads again when told of a gap.
//!
//! Events are JSON values; a message that is not JSON is logged and skipped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde_json::Value;
use tokio::sync::{OnceCell, broadcast, mpsc};

use crate::errors::ErrorCode;

/// How many events a listener may be behind before it loses the oldest.
pub const DEFAULT_BUFFER: usize = 256;

/// How live events use Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSettings {
    /// Events one listener may be behind; past it, its oldest are dropped.
    pub buffer: usize,
    /// The pause before the first reconnection attempt; it doubles after each failure.
    pub first_retry: Duration,
    /// The longest pause between reconnection attempts.
    pub longest_retry: Duration,
    /// The deadline of connecting, of one (un)subscribe, of one publish.
    pub timeout: Duration,
    /// How often the pub/sub connection is checked with a `PING` (a silent, dead peer is
    /// otherwise noticed only by TCP, much later).
    pub health_check: Duration,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            buffer: DEFAULT_BUFFER,
            first_retry: Duration::from_millis(100),
            longest_retry: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            health_check: Duration::from_secs(30),
        }
    }
}

/// What a listener hears on its channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// An event, as published.
    Event(Value),
    /// Events published on the channel before the next one heard were lost: `Some(n)` when
    /// this listener fell `n` events behind, `None` when the process's pub/sub connection was
    /// lost and made again (how many were published meanwhile is unknown).
    Gap { lost: Option<u64> },
}

impl Heard {
    /// The event, or, for a gap, the error a subscription answers with in its place
    /// (`LIVE_GAP`; the subscription goes on): `reread` tells the client what to read again to
    /// catch up.
    pub fn into_event(self, reread: &str) -> Result<Value, async_graphql::Error> {
        match self {
            Self::Event(event) => Ok(event),
            Self::Gap { lost } => {
                let how_many = lost.map_or_else(|| "some".to_owned(), |n| n.to_string());
                Err(ErrorCode::LiveGap.error(format!(
                    "{how_many} live events were missed: {reread}; this subscription goes on"
                )))
            }
        }
    }
}

/// Why an event could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// A recent publish failed: this one was not tried (see the module's documentation).
    #[error("Redis failed a recent publish; not tried")]
    Skipped,
}

/// The process's live events; cheap to clone (clones share the one pub/sub connection).
#[derive(Clone)]
pub struct LiveEvents {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LiveEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveEvents")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

struct Shared {
    client: redis::Client,
    settings: LiveSettings,
    state: Mutex<State>,
    publisher: OnceCell<ConnectionManager>,
    /// Whether publishes are tried (see the module's documentation).
    publishing: Mutex<crate::breaker::Breaker>,
    /// Publishes failed in a row.
    failed_in_a_row: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct State {
    /// Every channel with at least one listener in this process.
    channels: HashMap<String, Channel>,
    /// The channels Redis has confirmed on the current pub/sub connection.
    subscribed: HashSet<String>,
    /// Tells the connection's task a channel's listeners changed (started with the first
    /// listener).
    pump: Option<mpsc::UnboundedSender<String>>,
}

struct Channel {
    sender: broadcast::Sender<Arc<Heard>>,
    listeners: usize,
}

impl LiveEvents {
    /// Live events over `client`'s Redis. Nothing connects until the first publish or
    /// listener.
    pub fn new(client: redis::Client) -> Self {
        Self::with_settings(client, LiveSettings::default())
    }

    pub fn with_settings(client: redis::Client, settings: LiveSettings) -> Self {
        Self {
            shared: Arc::new(Shared {
                client,
                settings: LiveSettings {
                    buffer: settings.buffer.max(1),
                    ..settings
                },
                state: Mutex::new(State::default()),
                publisher: OnceCell::new(),
                publishing: Mutex::new(crate::breaker::Breaker::new(
                    crate::breaker::BreakerSettings {
                        call_timeout: settings.timeout,
                        first_open: Duration::from_secs(1),
                        longest_open: Duration::from_secs(30),
                    },
                )),
                failed_in_a_row: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// Publishes `event` on `channel` to every process listening; returns how many pub/sub
    /// connections received it (Redis's count: one per listening process, not per listener).
    pub async fn publish(&self, channel: &str, event: &Value) -> Result<usize, PublishError> {
        use crate::breaker::Admission;
        let breaker = || {
            self.shared
                .publishing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        let admission = breaker().admit(std::time::Instant::now());
        if admission == Admission::Skip {
            self.missed_here(channel);
            return Err(PublishError::Skipped);
        }
        use std::sync::atomic::Ordering;
        let published = self.try_publish(channel, event).await;
        let in_a_row = &self.shared.failed_in_a_row;
        match &published {
            Ok(_) => {
                in_a_row.store(0, Ordering::Relaxed);
                breaker().succeeded(admission);
            }
            // One failure alone (a blip) does not stop the next publishes; a probe's does.
            Err(_) => {
                let failures = in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= 2 || admission == Admission::Probe {
                    breaker().failed(admission, std::time::Instant::now());
                }
                self.missed_here(channel);
            }
        }
        published
    }

    /// Tells this process's listeners of `channel` that an event was not published (a gap of
    /// one: they read its durable copy again). Listeners in other processes hear nothing of
    /// it; nothing reaches them while Redis cannot publish.
    fn missed_here(&self, channel: &str) {
        let state = self.shared.lock();
        if let Some(channel) = state.channels.get(channel) {
            let _ = channel.sender.send(Arc::new(Heard::Gap { lost: Some(1) }));
        }
    }

    /// One publish, within the deadline.
    async fn try_publish(&self, channel: &str, event: &Value) -> Result<usize, PublishError> {
        let timeout = self.shared.settings.timeout;
        let publish = async {
            let manager = self
                .shared
                .publisher
                .get_or_try_init(|| async {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout))
                        .set_number_of_retries(1);
                    self.shared
                        .client
                        .get_connection_manager_with_config(config)
                        .await
                })
                .await?;
            let mut connection = manager.clone();
            let payload = serde_json::to_string(event).expect("a JSON value always serialises");
            let receivers: usize = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async(&mut connection)
                .await?;
            Ok::<_, PublishError>(receivers)
        };
        tokio::time::timeout(timeout, publish)
            .await
            .map_err(|_| PublishError::Timeout(timeout))?
    }

    /// The events published on `channel` from now on, by any process, until the stream is
    /// dropped, with a [`Heard::Gap`] wherever some were lost. Must be called within a Tokio
    /// runtime (the first listener starts the connection's task). Events published before
    /// Redis confirmed the subscription are not heard ([`Self::is_subscribed`] tells when it
    /// has).
    pub fn subscribe(&self, channel: &str) -> impl Stream<Item = Heard> + Send + use<> {
        self.subscribe_with_buffer(channel, self.shared.settings.buffer)
    }

    /// [`Self::subscribe`], the channel (when this makes it) keeping at most `buffer` events
    /// for a listener behind. A channel's buffer is made whole when it opens, about 32 bytes
    /// an event: a channel per user (an inbox) wants a small one, a channel shared by
    /// everyone the default.
    pub fn subscribe_with_buffer(
        &self,
        channel: &str,
        buffer: usize,
    ) -> impl Stream<Item = Heard> + Send + use<> {
        let buffer = buffer.max(1);
        let receiver = {
            let mut state = self.shared.lock();
            let entry = state
                .channels
                .entry(channel.to_owned())
                .or_insert_with(|| Channel {
                    sender: broadcast::channel(buffer).0,
                    listeners: 0,
                });
            entry.listeners += 1;
            let first = entry.listeners == 1;
            let receiver = entry.sender.subscribe();
            let pump = match &state.pump {
                Some(pump) if !pump.is_closed() => pump.clone(),
                _ => {
                    let (sender, commands) = mpsc::unbounded_channel();
                    tokio::spawn(run_connection(
                        Arc::downgrade(&self.shared),
                        self.shared.client.clone(),
                        self.shared.settings,
                        commands,
                    ));
                    state.pump = Some(sender.clone());
                    sender
                }
            };
            if first {
                // The task subscribes every channel anyway when it (re)connects.
                let _ = pump.send(channel.to_owned());
            }
            receiver
        };
        let listener = Listener {
            shared: self.shared.clone(),
            channel: channel.to_owned(),
            receiver,
            held: None,
        };
        futures_util::stream::unfold(listener, |mut listener| async move {
            let heard = match listener.held.take() {
                Some(heard) => heard,
                None => listener.receive().await?,
            };
            match heard {
                Heard::Gap { lost } => Some((listener.gaps_after(lost), listener)),
                event => Some((event, listener)),
            }
        })
    }

    /// How many listeners `channel` has in this process.
    pub fn listener_count(&self, channel: &str) -> usize {
        self.shared
            .lock()
            .channels
            .get(channel)
            .map_or(0, |c| c.listeners)
    }

    /// Whether Redis has confirmed this process's subscription to `channel` on the current
    /// connection (events published from now on reach its listeners).
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.shared.lock().subscribed.contains(channel)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One listener's side of a channel; dropping it may end the channel's subscription.
struct Listener {
    shared: Arc<Shared>,
    channel: String,
    receiver: broadcast::Receiver<Arc<Heard>>,
    /// An event read while merging gaps, heard next.
    held: Option<Heard>,
}

impl Listener {
    /// The next thing heard; `None` once the channel is gone.
    async fn receive(&mut self) -> Option<Heard> {
        match self.receiver.recv().await {
            Ok(heard) => Some(Heard::clone(&heard)),
            Err(broadcast::error::RecvError::Lagged(lost)) => {
                self.fell_behind(lost);
                Some(Heard::Gap { lost: Some(lost) })
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// A gap of `lost`, merged with the gaps already waiting behind it (a lag and a
    /// reconnection, or several reconnections, while the listener was not reading), so that
    /// the client reads its durable copy again once, not once per gap.
    fn gaps_after(&mut self, mut lost: Option<u64>) -> Heard {
        let add = |a: Option<u64>, b: Option<u64>| a.zip(b).map(|(a, b)| a + b);
        loop {
            match self.receiver.try_recv() {
                Ok(heard) => match &*heard {
                    Heard::Gap { lost: more } => lost = add(lost, *more),
                    Heard::Event(_) => {
                        self.held = Some(Heard::clone(&heard));
                        break;
                    }
                },
                Err(broadcast::error::TryRecvError::Lagged(more)) => {
                    self.fell_behind(more);
                    lost = add(lost, Some(more));
                }
                Err(_) => break,
            }
        }
        Heard::Gap { lost }
    }

    fn fell_behind(&self, lost: u64) {
        tracing::warn!(
            channel = %self.channel,
            lost,
            "a live-event listener fell behind: its oldest events were dropped"
        );
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let Some(channel) = state.channels.get_mut(&self.channel) else {
            return;
        };
        channel.listeners -= 1;
        if channel.listeners == 0 {
            state.channels.remove(&self.channel);
            if let Some(pump) = &state.pump {
                let _ = pump.send(self.channel.clone());
            }
        }
    }
}

/// The task that owns the pub/sub connection: (re)connects, keeps Redis's subscriptions equal
/// to the channels with listeners (each command names a channel whose listeners changed), and
/// hands each message to its channel's listeners. Ends when every [`LiveEvents`] clone and
/// listener is gone.
async fn run_connection(
    shared: Weak<Shared>,
    client: redis::Client,
    settings: LiveSettings,
    mut commands: mpsc::UnboundedReceiver<String>,
) {
    let mut pause = settings.first_retry;
    let mut lost_before = false;
    loop {
        let lost =
            match serve_connection(&shared, &client, &settings, &mut commands, lost_before).await {
                Served::Finished => return,
                Served::Lost { error, subscribed } => {
                    if subscribed {
                        pause = settings.first_retry;
                    }
                    error
                }
            };
        if let Some(shared) = shared.upgrade() {
            shared.lock().subscribed.clear();
        }
        tracing::warn!(
            error = %lost,
            retry_in_ms = pause.as_millis() as u64,
            "live events: lost the Redis pub/sub connection; reconnecting"
        );
        lost_before = true;
        // Commands that arrive meanwhile need no answer: the next connection subscribes to
        // whatever has listeners then.
        let wait = tokio::time::sleep(pause);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                command = commands.recv() => if command.is_none() { return },
            }
        }
        pause = (pause * 2).min(settings.longest_retry);
    }
}

enum Served {
    /// Every handle is gone.
    Finished,
    /// The connection failed (or could not be made); `subscribed` when it had been set up.
    Lost { error: String, subscribed: bool },
}

async fn serve_connection(
    shared: &Weak<Shared>,
    client: &redis::Client,
    settings: &LiveSettings,
    commands: &mut mpsc::UnboundedReceiver<String>,
    reconnecting: bool,
) -> Served {
    let lost = |error: String| Served::Lost {
        error,
        subscribed: false,
    };
    let timeout = settings.timeout;
    let pubsub = match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(error)) => return lost(error.to_string()),
        Err(_) => return lost(format!("no connection within {timeout:?}")),
    };
    let (mut sink, mut messages) = pubsub.split();
    let Some(wanted) = shared
        .upgrade()
        .map(|s| s.lock().channels.keys().cloned().collect::<Vec<_>>())
    else {
        return Served::Finished;
    };
    if !wanted.is_empty() {
        match tokio::time::timeout(timeout, sink.subscribe(&wanted)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return lost(error.to_string()),
            Err(_) => return lost(format!("SUBSCRIBE unanswered within {timeout:?}")),
        }
    }
    let mut subscribed: HashSet<String> = wanted.into_iter().collect();
    let Some(state) = shared.upgrade() else {
        return Served::Finished;
    };
    {
        let mut state = state.lock();
        if reconnecting {
            // What was published while the connection was down is gone: every listener is
            // told, before anything published from now on, and before the process says it is
            // subscribed again.
            let gap = Arc::new(Heard::Gap { lost: None });
            for channel in state.channels.values() {
                let _ = channel.sender.send(gap.clone());
            }
        }
        state.subscribed = subscribed.clone();
    }
    drop(state);
    if reconnecting {
        tracing::info!(
            channels = subscribed.len(),
            "live events: reconnected to Redis and subscribed again"
        );
    }
    let lost = |error: String| Served::Lost {
        error,
        subscribed: true,
    };
    let mut health = tokio::time::interval(settings.health_check);
    health.reset();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return lost("the connection closed".to_owned());
                };
                let Some(shared) = shared.upgrade() else {
                    return Served::Finished;
                };
                dispatch(&shared, &message);
            }
            command = commands.recv() => {
                let Some(channel) = command else {
                    return Served::Finished;
                };
                let Some(wanted) = shared
                    .upgrade()
                    .map(|s| s.lock().channels.contains_key(&channel))
                else {
                    return Served::Finished;
                };
                let result = if wanted && !subscribed.contains(&channel) {
                    tokio::time::timeout(timeout, sink.subscribe(&channel)).await
                } else if !wanted && subscribed.contains(&channel) {
                    tokio::time::timeout(timeout, sink.unsubscribe(&channel)).await
                } else {
                    continue;
                };
                match result {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => return lost(error.to_string()),
                    Err(_) => return lost(format!("(UN)SUBSCRIBE unanswered within {timeout:?}")),
                }
                if wanted {
                    subscribed.insert(channel.clone());
                } else {
                    subscribed.remove(&channel);
                }
                if let Some(shared) = shared.upgrade() {
                    let mut state = shared.lock();
                    if wanted {
                        state.subscribed.insert(channel);
                    } else {
                        state.subscribed.remove(&channel);
                    }
                }
            }
            _ = health.tick() => {
                match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return lost(error.to_string()),
                    Err(_) => return lost(format!("PING unanswered within {timeout:?}")),
                }
            }
        }
    }
}

/// Hands one pub/sub message to its channel's listeners (a channel that lost its last
/// listener meanwhile has none to hand it to).
fn dispatch(shared: &Shared, message: &redis::Msg) {
    let channel = message.get_channel_name();
    let event: Value = match serde_json::from_slice(message.get_payload_bytes()) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(channel, %error, "live events: skipped a message that is not JSON");
            return;
        }
    };
    if let Some(entry) = shared.lock().channels.get(channel) {
        // Fails only when no receiver is left, which the listeners' count already says.
        let _ = entry.sender.send(Arc::new(Heard::Event(event)));
    }
}

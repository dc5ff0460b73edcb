//! Hot reload of the supergraph, from a file or the registry: the file is read, or the registry
//! polled, every interval; when the content changes, the new supergraph is parsed and planned,
//! then swapped in atomically (requests in flight finish on the old one). With Redis, a router
//! also follows the registry's announcements of each publish and polls at once, so routers move
//! to a new version together instead of up to an interval apart. An invalid new supergraph is refused: the old one stays, the
//! error is logged, and the router stays ready.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::announcements::REGISTRY_PUBLISHED_CHANNEL;

use crate::pipeline::Router;
use crate::supergraph::Supergraph;

/// Watches `path` until the task is dropped.
pub async fn watch_file(router: Arc<Router>, path: PathBuf, every: Duration) {
    let mut current = router.supergraph().sdl().to_owned();
    loop {
        tokio::time::sleep(every).await;
        let sdl = match tokio::fs::read_to_string(&path).await {
            Ok(sdl) => sdl,
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot read the supergraph; keeping the current one");
                continue;
            }
        };
        if sdl == current {
            continue;
        }
        swap_in(&router, sdl.clone(), None, &path.display().to_string()).await;
        current = sdl;
    }
}

/// A supergraph as the registry serves it.
#[derive(Debug)]
pub struct Published {
    pub sdl: String,
    /// The registry's version number (`x-registry-version`), when it gives one.
    pub number: Option<u64>,
    pub etag: Option<String>,
}

/// Why the registry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("registry unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("registry answered {0}")]
    Status(reqwest::StatusCode),
    #[error("registry answered more than {MAX_PUBLISHED_BYTES} bytes")]
    TooLarge,
    #[error("registry answered text that is not UTF-8")]
    NotText,
}

/// The most of one published document read (a supergraph, a trusted-documents manifest: each
/// far less); anything answering more at the registry's address is refused, not buffered.
pub const MAX_PUBLISHED_BYTES: usize = 32 << 20;

/// Fetches the supergraph at `url`; `Ok(None)` when it still has the ETag `etag` (304).
pub async fn fetch_published(
    client: &reqwest::Client,
    url: &str,
    etag: Option<&str>,
) -> Result<Option<Published>, FetchError> {
    let mut request = client.get(url);
    if let Some(etag) = etag {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    let response = request.send().await?;
    if response.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status()));
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header("etag");
    let number = header("x-registry-version").and_then(|value| value.parse().ok());
    let body = gospelib_kit::capped_body::body_within(response, MAX_PUBLISHED_BYTES)
        .await?
        .ok_or(FetchError::TooLarge)?;
    let sdl = String::from_utf8(body).map_err(|_| FetchError::NotText)?;
    Ok(Some(Published { sdl, number, etag }))
}

/// Nudges for the registry's pollers: the value changes each time the registry announces a
/// publish, and after each (re)subscription to its announcements (some may have been missed).
pub type Nudges = tokio::sync::watch::Receiver<u64>;

/// Follows the registry's announcements ([`REGISTRY_PUBLISHED_CHANNEL`]) on `redis` until the
/// task is dropped, changing `nudge` for each: pollers holding its receivers fetch at once. A
/// lost connection is logged and made again; the pollers keep polling meanwhile.
pub async fn follow_publications(redis: redis::Client, nudge: tokio::sync::watch::Sender<u64>) {
    let bump = || nudge.send_modify(|count| *count = count.wrapping_add(1));
    loop {
        let interrupted = gospelib_kit::announcements::follow(
            &redis,
            REGISTRY_PUBLISHED_CHANNEL,
            Default::default(),
            bump,
            |_| bump(),
        )
        .await;
        tracing::warn!(error = %interrupted, "cannot follow the registry's announcements; polling only meanwhile");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits `every`, or until `nudges` change (a receiver whose sender is gone is dropped: the
/// interval alone counts from then on).
pub async fn next_poll(every: Duration, nudges: &mut Option<Nudges>) {
    let Some(receiver) = nudges else {
        return tokio::time::sleep(every).await;
    };
    tokio::select! {
        () = tokio::time::sleep(every) => {}
        changed = receiver.changed() => {
            if changed.is_err() {
                *nudges = None;
            }
        }
    }
}

/// Polls the registry at `url` every `every` until the task is dropped: a new ETag brings a
/// new supergraph, swapped in when valid and not older (by its registry number) than the one
/// served; errors are logged and the current one stays.
pub async fn poll_registry(
    router: Arc<Router>,
    client: reqwest::Client,
    url: String,
    etag: Option<String>,
    every: Duration,
) {
    poll_registry_nudged(router, client, url, etag, every, None).await
}

/// [`poll_registry`], also polling at once when `nudges` change ([`follow_publications`]).
pub async fn poll_registry_nudged(
    router: Arc<Router>,
    client: reqwest::Client,
    url: String,
    mut etag: Option<String>,
    every: Duration,
    mut nudges: Option<Nudges>,
) {
    loop {
        next_poll(every, &mut nudges).await;
        let published = match fetch_published(&client, &url, etag.as_deref()).await {
            Ok(Some(published)) => published,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%url, %error, "cannot poll the registry; keeping the current supergraph");
                continue;
            }
        };
        // Versions only move forward (a rollback is published as a new version): an older
        // number is a registry read from a lagging replica or a restored database.
        let current = router.supergraph().version.number;
        if let (Some(new), Some(current)) = (published.number, current)
            && new < current
        {
            tracing::error!(%url, new, current, "the registry served an older version than the one served here; keeping the current one");
        } else {
            swap_in(&router, published.sdl, published.number, &url).await;
        }
        // A refused version is not fetched again until the registry publishes another.
        etag = published.etag;
    }
}

/// Parses `sdl` (off the async threads: parsing builds the planner) and swaps it in when valid;
/// an invalid one is refused and logged with where it came from, the current one kept.
async fn swap_in(router: &Router, sdl: String, number: Option<u64>, origin: &str) {
    match tokio::task::spawn_blocking(move || Supergraph::parse(&sdl, number)).await {
        Ok(Ok(supergraph)) => {
            tracing::info!(from = %router.supergraph().version, to = %supergraph.version, %origin, "supergraph reloaded");
            router.replace_supergraph(supergraph);
        }
        Ok(Err(error)) => {
            tracing::error!(%origin, %error, "refused an invalid supergraph; keeping the current one");
        }
        Err(error) => {
            tracing::error!(%error, "supergraph parsing panicked; keeping the current one")
        }
    }
}

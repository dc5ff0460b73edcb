//! Hot reload of the supergraph from a file: the file is read every interval; when its content
//! changes, the new supergraph is parsed and planned, then swapped in atomically (requests in
//! flight finish on the old one). An invalid new supergraph is refused: the old one stays, the
//! error is logged, and the router stays ready.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
        // Parsing builds the planner: CPU work, off the async threads.
        let parsed = tokio::task::spawn_blocking({
            let sdl = sdl.clone();
            move || Supergraph::parse(&sdl, None)
        })
        .await;
        match parsed {
            Ok(Ok(supergraph)) => {
                tracing::info!(from = %router.supergraph().version, to = %supergraph.version, "supergraph reloaded");
                router.replace_supergraph(supergraph);
            }
            Ok(Err(error)) => {
                tracing::error!(path = %path.display(), %error, "refused an invalid supergraph; keeping the current one");
            }
            Err(error) => {
                tracing::error!(%error, "supergraph parsing panicked; keeping the current one")
            }
        }
        current = sdl;
    }
}

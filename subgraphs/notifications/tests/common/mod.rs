//! What the provider tests share: a local HTTP server on 127.0.0.1:0, scripted answers for the
//! fake providers, a record of what each received, and the committed test keys.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Serves `router` on a free local port; returns its base URL (`http://127.0.0.1:port`).
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{address}")
}

/// The path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The text of a committed fixture.
pub fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// Writes `contents` to a file of its own under the temporary directory.
pub fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gospelib-notifications-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One scripted answer of a fake provider.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// How long the server waits before answering (a hanging provider).
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub async fn send(self) -> Response {
        tokio::time::sleep(self.delay).await;
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        (self.status, headers, self.body).into_response()
    }
}

/// Scripted answers, taken in order; `default` once they run out.
#[derive(Clone)]
pub struct Script {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    default: Reply,
}

impl Script {
    pub fn new(default: Reply) -> Self {
        Self {
            replies: Arc::default(),
            default,
        }
    }

    pub fn then(&self, reply: Reply) -> &Self {
        self.replies.lock().unwrap().push_back(reply);
        self
    }

    pub fn next(&self) -> Reply {
        self.replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.clone())
    }
}

/// What a fake provider received, and what it found wrong with it.
#[derive(Clone)]
pub struct Log<T> {
    entries: Arc<Mutex<Vec<T>>>,
    problems: Arc<Mutex<Vec<String>>>,
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Self {
            entries: Arc::default(),
            problems: Arc::default(),
        }
    }
}

impl<T: Clone> Log<T> {
    pub fn push(&self, entry: T) {
        self.entries.lock().unwrap().push(entry);
    }

    pub fn entries(&self) -> Vec<T> {
        self.entries.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    /// Records what the server found wrong; the answer is then a 418 naming it.
    pub fn problem(&self, problem: String) -> Response {
        self.problems.lock().unwrap().push(problem.clone());
        (StatusCode::IM_A_TEAPOT, format!("test server: {problem}")).into_response()
    }

    /// Fails the test if the server found anything wrong with a request.
    pub fn assert_no_problems(&self) {
        let problems = self.problems.lock().unwrap();
        assert!(
            problems.is_empty(),
            "the fake provider objected: {problems:?}"
        );
    }
}

/// A header's value as text, or "" when absent.
pub fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A failure no retry would mend (`Failed { retryable: false }`).
/// A failure the configuration is to blame for: every send would get it, so the token is
/// not retired, and the job is tried again later (`Delivery::configuration_failure`).
pub fn blames_the_configuration(delivery: &gospelib_notifications::providers::Delivery) -> bool {
    matches!(
        delivery,
        gospelib_notifications::providers::Delivery::Failed {
            retryable: true,
            retry_after: Some(after),
            ..
        } if *after == gospelib_notifications::providers::CONFIGURATION_RETRY_AFTER
    )
}

pub fn failed_for_good(delivery: &gospelib_notifications::providers::Delivery) -> bool {
    matches!(
        delivery,
        gospelib_notifications::providers::Delivery::Failed {
            retryable: false,
            ..
        }
    )
}

/// A rejection that retires the device's token (`Rejected { retire_token: true }`).
pub fn retires_token(delivery: &gospelib_notifications::providers::Delivery) -> bool {
    matches!(
        delivery,
        gospelib_notifications::providers::Delivery::Rejected {
            retire_token: true,
            ..
        }
    )
}

//! A small Typesense client over its HTTP API: collections, the bulk JSONL import, aliases and
//! search. Collections are versioned (`passages_<version>`) behind an alias (`passages`) so a
//! re-ingest swaps atomically and never serves a half-written index.
//!
//! Searches may go to several nodes of a cluster ([`SearchNodes`], `GOSPELIB_TYPESENSE_URLS`),
//! each search to the next node in turn; a node that is down, drops the connection, does not
//! answer within [`NODE_TIMEOUT`] or answers 503 (Typesense's "not ready or lagging") is asked
//! no more by that search, which goes to the next node (each at most once), and is passed over
//! for [`NODE_EJECTION`]; then one search probes it (the kit's [`Breaker`] per node). When
//! every node is passed over, a search still tries one of them, and only one. A search takes
//! at most [`SEARCH_BUDGET`] over all the nodes it asks (the last one gets what is left, and is
//! not passed over for failing within less than its timeout), within the router's deadline
//! for the subgraph however many nodes are slow.
//! Writes (ingest) go to `GOSPELIB_TYPESENSE_URL`, or, given a cluster's nodes, to the one
//! leading it ([`leader`]): a follower forwards writes, but answers reads from its own copy.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gospelib_kit::breaker::{Admission, Breaker, BreakerSettings};

use serde_json::{Value, json};

use gospelib_kit::stores::{BoxFuture, StoreProbe, TypesenseClient, TypesenseProbe};
use url::Url;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SearchError {
    #[error("Typesense is unavailable: {0}")]
    Unavailable(String),
    #[error("Typesense refused the request ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("Typesense rejected {failed} of {total} documents; first: {first}")]
    Import {
        failed: usize,
        total: usize,
        first: String,
    },
}

const KEY_HEADER: &str = "X-TYPESENSE-API-KEY";

/// The most of one Typesense answer read: a page of 250 hits with highlights, or an import
/// batch's per-document lines, is far less; a node (or a proxy) answering more is refused, not
/// buffered.
const MAX_ANSWER_BYTES: usize = 32 << 20;

/// Sends a request with the API key; returns the body of a success as text.
async fn send_text(
    client: &TypesenseClient,
    request: reqwest::RequestBuilder,
) -> Result<String, SearchError> {
    let response = request
        .header(KEY_HEADER, &client.api_key)
        .send()
        .await
        .map_err(|e| SearchError::Unavailable(e.without_url().to_string()))?;
    let status = response.status();
    // (A read error names the URL, whose query holds the reader's search: never kept.)
    let body = gospelib_kit::capped_body::body_within(response, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| SearchError::Unavailable(e.without_url().to_string()))?
        .ok_or_else(|| {
            SearchError::Unavailable(format!(
                "answered {status} with more than {MAX_ANSWER_BYTES} bytes"
            ))
        })?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if status.is_success() {
        Ok(body)
    } else {
        Err(SearchError::Refused {
            status: status.as_u16(),
            body,
        })
    }
}

/// Sends a request and returns the JSON body of a success.
async fn send(
    client: &TypesenseClient,
    request: reqwest::RequestBuilder,
) -> Result<Value, SearchError> {
    let body = send_text(client, request).await?;
    serde_json::from_str(&body)
        .map_err(|e| SearchError::Unavailable(format!("bad JSON from Typesense: {e}")))
}

fn url(client: &TypesenseClient, path: &str) -> String {
    format!(
        "{}/{}",
        client.base_url.as_str().trim_end_matches('/'),
        path
    )
}

/// The node of `nodes` (the URLs of one cluster's nodes, reached with `client`'s key and HTTP
/// client) that leads the cluster now, as a client of its own: the one whose `/debug` says
/// Raft state 1. A follower forwards writes to the leader but answers reads from its own
/// copy, which may not hold them yet: a writer that reads its writes back (the ingest) goes
/// through the leader. Without one, what each node answered ([`NoLeader`]).
pub async fn leader(client: &TypesenseClient, nodes: &[Url]) -> Result<TypesenseClient, NoLeader> {
    let mut answers = Vec::new();
    let mut key_refused = false;
    for node in nodes {
        let candidate = client.at(node);
        let request = candidate
            .http
            .get(url(&candidate, "debug"))
            .timeout(NODE_TIMEOUT);
        match send(&candidate, request).await {
            Ok(debug) if debug["state"].as_u64() == Some(LEADER_STATE) => return Ok(candidate),
            Ok(debug) => answers.push(format!("{node}: not leading (state {})", debug["state"])),
            Err(SearchError::Refused { status, .. }) if matches!(status, 401 | 403) => {
                key_refused = true;
                answers.push(format!("{node}: refused the API key ({status})"));
            }
            Err(error) => answers.push(format!("{node}: {error}")),
        }
    }
    Err(NoLeader {
        answers,
        key_refused,
    })
}

/// No node of a Typesense cluster said it leads it.
#[derive(Debug, thiserror::Error)]
#[error("no node leads the Typesense cluster: {}", .answers.join("; "))]
pub struct NoLeader {
    /// What each node answered.
    pub answers: Vec<String>,
    /// Whether a node refused the API key: asking again will not help.
    pub key_refused: bool,
}

/// The Raft state `/debug` reports on the cluster's leader.
const LEADER_STATE: u64 = 1;

/// Creates a collection from its schema (replacing one of the same name).
pub async fn recreate_collection(
    client: &TypesenseClient,
    schema: &Value,
) -> Result<(), SearchError> {
    let name = schema["name"].as_str().expect("a schema has a name");
    delete_collection(client, name).await?;
    send(
        client,
        client.http.post(url(client, "collections")).json(schema),
    )
    .await?;
    Ok(())
}

/// Deletes a collection (one that does not exist is already gone).
pub async fn delete_collection(client: &TypesenseClient, name: &str) -> Result<(), SearchError> {
    match send(
        client,
        client
            .http
            .delete(url(client, &format!("collections/{name}"))),
    )
    .await
    {
        Ok(_) | Err(SearchError::Refused { status: 404, .. }) => Ok(()),
        Err(error) => Err(error),
    }
}

/// The collection `alias` points at (`None`: no such alias).
pub async fn alias_target(
    client: &TypesenseClient,
    alias: &str,
) -> Result<Option<String>, SearchError> {
    match send(
        client,
        client.http.get(url(client, &format!("aliases/{alias}"))),
    )
    .await
    {
        Ok(found) => Ok(found["collection_name"].as_str().map(str::to_owned)),
        Err(SearchError::Refused { status: 404, .. }) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Imports documents through the bulk JSONL API; every line must succeed.
pub async fn import_documents(
    client: &TypesenseClient,
    collection: &str,
    documents: &[Value],
) -> Result<(), SearchError> {
    let mut body = String::new();
    for document in documents {
        body.push_str(&document.to_string());
        body.push('\n');
    }
    let request = client
        .http
        .post(url(
            client,
            &format!("collections/{collection}/documents/import?action=create"),
        ))
        .header("Content-Type", "text/plain")
        .body(body);
    let text = send_text(client, request).await?;
    let failures: Vec<&str> = text
        .lines()
        .filter(|line| !line.contains("\"success\":true"))
        .collect();
    if let Some(first) = failures.first() {
        return Err(SearchError::Import {
            failed: failures.len(),
            total: documents.len(),
            first: (*first).to_owned(),
        });
    }
    Ok(())
}

/// Points `alias` at `collection`, then drops the other collections of that alias's family
/// (`<alias>_*`).
pub async fn swap_alias(
    client: &TypesenseClient,
    alias: &str,
    collection: &str,
) -> Result<(), SearchError> {
    send(
        client,
        client
            .http
            .put(url(client, &format!("aliases/{alias}")))
            .json(&json!({ "collection_name": collection })),
    )
    .await?;
    let collections = send(client, client.http.get(url(client, "collections"))).await?;
    let prefix = format!("{alias}_");
    for old in collections.as_array().into_iter().flatten() {
        let Some(name) = old["name"].as_str() else {
            continue;
        };
        if name.starts_with(&prefix) && name != collection {
            send(
                client,
                client
                    .http
                    .delete(url(client, &format!("collections/{name}"))),
            )
            .await?;
        }
    }
    Ok(())
}

/// Counts the documents behind an alias or collection.
pub async fn count(client: &TypesenseClient, collection: &str) -> Result<u64, SearchError> {
    let info = send(
        client,
        client
            .http
            .get(url(client, &format!("collections/{collection}"))),
    )
    .await?;
    Ok(info["num_documents"].as_u64().unwrap_or(0))
}

/// Runs a search on one node, bounded by [`NODE_TIMEOUT`]; `params` are Typesense's query
/// parameters.
pub async fn search(
    client: &TypesenseClient,
    collection: &str,
    params: &[(&str, String)],
) -> Result<Value, SearchError> {
    let request = search_request(client, collection, params).timeout(NODE_TIMEOUT);
    send(client, request).await
}

fn search_request(
    client: &TypesenseClient,
    collection: &str,
    params: &[(&str, String)],
) -> reqwest::RequestBuilder {
    client
        .http
        .get(url(
            client,
            &format!("collections/{collection}/documents/search"),
        ))
        .query(params)
}

/// How long one node of several may take to answer a search before the next is asked.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one search may take over all the nodes it asks: two nodes' timeouts and a second
/// for a third (a healthy node answers in milliseconds), within the router's 10 s for the
/// subgraph.
pub const SEARCH_BUDGET: Duration = Duration::from_secs(7);

/// How long a node that failed a search is passed over before one search probes it (each
/// failed probe doubles the period, up to [`LONGEST_EJECTION`]).
pub const NODE_EJECTION: Duration = Duration::from_secs(2);

/// The longest a node whose probes keep failing is passed over.
pub const LONGEST_EJECTION: Duration = Duration::from_secs(16);

/// The Typesense nodes searches go to; cheap to clone (clones share the turn and each node's
/// breaker).
#[derive(Clone)]
pub struct SearchNodes {
    inner: Arc<Nodes>,
}

struct Nodes {
    clients: Vec<TypesenseClient>,
    /// Which node the next search starts with.
    next: AtomicUsize,
    /// Each node's breaker: after a failure the node is passed over, then probed by one search.
    breakers: Vec<Mutex<Breaker>>,
}

impl SearchNodes {
    /// `client`'s node alone when `urls` is empty, else the nodes at `urls` (with `client`'s
    /// key and HTTP client).
    pub fn new(client: &TypesenseClient, urls: &[Url]) -> Self {
        let clients: Vec<TypesenseClient> = if urls.is_empty() {
            vec![client.clone()]
        } else {
            urls.iter().map(|url| client.at(url)).collect()
        };
        let settings = BreakerSettings {
            call_timeout: NODE_TIMEOUT,
            first_open: NODE_EJECTION,
            longest_open: LONGEST_EJECTION,
        };
        Self {
            inner: Arc::new(Nodes {
                breakers: clients
                    .iter()
                    .map(|_| Mutex::new(Breaker::new(settings)))
                    .collect(),
                clients,
                next: AtomicUsize::new(0),
            }),
        }
    }

    /// The nodes, in the order they were given.
    pub fn nodes(&self) -> &[TypesenseClient] {
        &self.inner.clients
    }

    /// Runs a search on the first node able to answer it (see the module's documentation).
    pub async fn search(
        &self,
        collection: &str,
        params: &[(&str, String)],
    ) -> Result<Value, SearchError> {
        // One node goes through the same loop: its search is bounded by `NODE_TIMEOUT` too (the
        // shared client has only a connect timeout), and a stalled node fails fast.
        let nodes = &self.inner;
        let count = nodes.clients.len();
        let start = nodes.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut upcoming: VecDeque<usize> = (0..count).map(|i| (start + i) % count).collect();
        let mut passed_over = VecDeque::new();
        let mut last_error = None;
        let mut tried_one_passed_over = false;
        let started = Instant::now();
        loop {
            let left = SEARCH_BUDGET.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            // The nodes the breakers let through first, in turn; then one of the others (never
            // none: a node may be well again before its breaker says so), but only one: when
            // every node is failing, a search costs one node's timeout, not each node's.
            let next = loop {
                let Some(index) = upcoming.pop_front() else {
                    if tried_one_passed_over {
                        break None;
                    }
                    tried_one_passed_over = true;
                    break passed_over
                        .pop_front()
                        .map(|index| (index, Admission::Skip));
                };
                match nodes.breaker(index).admit(Instant::now()) {
                    Admission::Skip => passed_over.push_back(index),
                    admitted => break Some((index, admitted)),
                }
            };
            let Some((index, admission)) = next else {
                break;
            };
            let client = &nodes.clients[index];
            let timeout = NODE_TIMEOUT.min(left);
            let request = search_request(client, collection, params).timeout(timeout);
            match send(client, request).await {
                // A node given less than its timeout (what was left of the budget) is not
                // judged by it: it may be well.
                Err(error) if node_failed(&error) && timeout < NODE_TIMEOUT => {
                    last_error = Some(error);
                }
                Err(error) if node_failed(&error) => {
                    if nodes.breaker(index).failed(admission, Instant::now()) {
                        tracing::warn!(node = %client.base_url, %error, "a Typesense node failed a search; passing over it for a while");
                    }
                    last_error = Some(error);
                }
                answer => {
                    if nodes.breaker(index).succeeded(admission) {
                        tracing::info!(node = %client.base_url, "a Typesense node answers searches again");
                    }
                    return answer;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| SearchError::Unavailable("no Typesense node".to_owned())))
    }

    /// The readiness probe of the nodes: ready while any node is healthy.
    pub fn probe(&self) -> SearchNodesProbe {
        SearchNodesProbe {
            nodes: self
                .inner
                .clients
                .iter()
                .map(|client| TypesenseProbe {
                    base_url: client.base_url.clone(),
                    http: client.http.clone(),
                })
                .collect(),
        }
    }
}

impl Nodes {
    fn breaker(&self, index: usize) -> std::sync::MutexGuard<'_, Breaker> {
        // Every update under the lock is one assignment: a poisoned lock is still sound.
        self.breakers[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether another node may answer what this one failed: it was not reached, did not answer,
/// or is not ready (503).
fn node_failed(error: &SearchError) -> bool {
    matches!(
        error,
        SearchError::Unavailable(_) | SearchError::Refused { status: 503, .. }
    )
}

/// `/health` of every node; `Ok` when any answers healthy.
pub struct SearchNodesProbe {
    nodes: Vec<TypesenseProbe>,
}

impl StoreProbe for SearchNodesProbe {
    fn store(&self) -> &str {
        "typesense"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let checks = self.nodes.iter().map(|node| node.check());
            let outcomes = futures_util::future::join_all(checks).await;
            if outcomes.iter().any(Result::is_ok) || outcomes.is_empty() {
                return Ok(());
            }
            Err(self
                .nodes
                .iter()
                .zip(outcomes)
                .map(|(node, outcome)| {
                    format!("{}: {}", node.base_url, outcome.err().unwrap_or_default())
                })
                .collect::<Vec<_>>()
                .join("; "))
        })
    }
}

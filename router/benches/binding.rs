//! What binding an entity fetch to its variables costs (the caller context signs a digest of
//! them: serialise + SHA-256), for a chapter of Psalm 119 (176 representations), beside what
//! serialising the request body costs anyway.
//!
//! `cargo bench -p gospelib-router --bench binding`

use std::time::Instant;

use gospelib_router::execution::{SignedVariables, variables_digest};
use gospelib_router::transport::SubgraphRequest;
use gospelib_router::value::Object;

const QUERY: &str = "query($representations: [_Any!]!) { _entities(representations: $representations) { ... on Passage { notes { text } } } }";

fn main() {
    let representations: Vec<serde_json::Value> = (1..=176)
        .map(|verse| serde_json::json!({"__typename": "Passage", "id": format!("ps.119.{verse}")}))
        .collect();
    let variables = Object::from(
        serde_json::json!({ "representations": representations })
            .as_object()
            .unwrap()
            .clone(),
    );
    let bytes = serde_json::to_vec(&SignedVariables(&variables))
        .unwrap()
        .len();
    let rounds = 20_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(variables_digest(std::hint::black_box(&variables)));
    }
    let per_fetch = started.elapsed() / rounds;
    // For scale: the body the HTTP transport serialises anyway.
    let request = SubgraphRequest::query(QUERY, variables);
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(serde_json::to_vec(std::hint::black_box(&request)).unwrap());
    }
    let body = started.elapsed() / rounds;
    println!(
        "176 representations ({bytes} bytes of JSON): serialise + sha256 {per_fetch:?} per fetch \
         (the request body alone: {body:?}; {} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

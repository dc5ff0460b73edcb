//! A question's deadline counts from when it was asked: a content read that hangs is given up
//! at it, and the answer is a clean `UPSTREAM_UNAVAILABLE` inside the router's subgraph
//! timeout, not that timeout's own error (the vendors' time once started only after the
//! context was read, however long that took).

use std::sync::Arc;
use std::time::Duration;

use gospelib_ai::AiService;
use gospelib_ai::assistant::Assistant;
use gospelib_ai::content::ContentSource;
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::Caller;
use gospelib_kit::stores::BoxFuture;
use serde_json::{Value, json};

/// A content source that never answers.
struct Hanging;

impl ContentSource for Hanging {
    fn run(&self, _query: &'static str, _variables: Value) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_context_read_that_hangs_is_given_up_at_the_questions_deadline() {
    let assistant = Assistant::new(Arc::new(Hanging), None, None)
        .with_vendor_deadline(Duration::from_millis(300));
    let service = AiService::new(assistant);
    let scholar = Caller {
        plan: Some("scholar".into()),
        scopes: vec!["ai_features".into()],
        ..Caller::user(gospelib_kit::caller::user_id_for_clerk(
            "user_deadline_test",
        ))
    };
    let request = async_graphql::Request::new(r#"{ explainPassage(id: "john.3.16") { text } }"#)
        .data(scholar);
    let answer = tokio::time::timeout(Duration::from_secs(5), service.execute(request))
        .await
        .expect("answered at the question's deadline, not held");
    let answer = serde_json::to_value(answer).unwrap();
    assert_eq!(
        answer["errors"][0]["extensions"]["code"],
        json!("UPSTREAM_UNAVAILABLE"),
        "{answer}"
    );
}

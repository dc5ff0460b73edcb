//! The subgraph checks the `ai_features` entitlement itself, in the caller context the router
//! signs: a request that reaches it without the router (anonymous, or a caller without the
//! scope) is refused before content or a vendor is asked.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gospelib_ai::AiService;
use gospelib_ai::assistant::Assistant;
use gospelib_ai::content::ContentSource;
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::Caller;
use gospelib_kit::stores::BoxFuture;
use serde_json::{Value, json};

/// A content source that counts the questions it is asked and knows nothing.
#[derive(Default)]
struct Counting(AtomicUsize);

impl ContentSource for Counting {
    fn run(&self, _query: &'static str, _variables: Value) -> BoxFuture<'_, Result<Value, String>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err("no content here".to_owned()) })
    }
}

async fn ask(service: &AiService, caller: Option<Caller>, query: &str) -> Value {
    let mut request = async_graphql::Request::new(query);
    if let Some(caller) = caller {
        request = request.data(caller);
    }
    serde_json::to_value(service.execute(request).await).unwrap()
}

#[tokio::test]
async fn callers_without_the_entitlement_are_refused_before_anything_is_asked() {
    let content = Arc::new(Counting::default());
    let service = AiService::new(Assistant::new(content.clone(), None, None));
    let user = gospelib_kit::caller::user_id_for_clerk("user_entitlement_test");
    let reader = Caller {
        plan: Some("reader".into()),
        ..Caller::user(user)
    };
    for query in [
        r#"{ explainPassage(id: "john.3.16") { text } }"#,
        r#"{ studyQuestions(id: "john.3.16") { text } }"#,
        r#"{ suggestConnections(id: "john.3.16") { reason } }"#,
    ] {
        for caller in [None, Some(reader.clone())] {
            let answer = ask(&service, caller, query).await;
            assert_eq!(
                answer["errors"][0]["extensions"]["code"], "FORBIDDEN",
                "{answer}"
            );
        }
    }
    assert_eq!(
        content.0.load(Ordering::SeqCst),
        0,
        "content was never asked"
    );

    // With the entitlement the question goes on (to content, which knows nothing here).
    let scholar = Caller {
        plan: Some("scholar".into()),
        scopes: vec!["ai_features".into()],
        ..Caller::user(user)
    };
    let answer = ask(
        &service,
        Some(scholar),
        r#"{ explainPassage(id: "john.3.16") { text } }"#,
    )
    .await;
    assert_ne!(
        answer["errors"][0]["extensions"]["code"],
        json!("FORBIDDEN"),
        "{answer}"
    );
    assert!(content.0.load(Ordering::SeqCst) > 0);
}

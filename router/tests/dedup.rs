//! Identical subgraph fetches in flight at the same time are sent once; different ones and
//! mutations are not shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gospelib_router::transport::{
    BoxFuture, Deduplicated, InProcess, LocalSubgraph, SubgraphRequest, Transport,
};
use gospelib_router::value::Object;
use serde_json::{Value, json};

/// Answers after a pause, counting the requests it really gets.
struct Slow {
    calls: Arc<AtomicUsize>,
}

impl LocalSubgraph for Slow {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            json!({"data": {"echo": request["query"]}})
        })
    }
}

fn request(query: &str) -> SubgraphRequest {
    SubgraphRequest {
        query: query.to_owned(),
        variables: Object::new(),
    }
}

#[tokio::test]
async fn identical_fetches_in_flight_are_sent_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut transport = Deduplicated::new(Arc::new(InProcess::default().with(
        "s",
        Arc::new(Slow {
            calls: calls.clone(),
        }),
    )));
    let metrics = gospelib_kit::metrics::Metrics::new("test");
    transport.count_shared_into(metrics.clone());
    let (a, b, c) = tokio::join!(
        transport.send("s", "", request("{ a }")),
        transport.send("s", "", request("{ a }")),
        transport.send("s", "", request("{ b }")),
    );
    assert_eq!(a.as_ref().unwrap(), b.as_ref().unwrap());
    assert_eq!(Value::from(c.unwrap())["data"]["echo"], "{ b }");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "two distinct requests, three callers"
    );
    assert_eq!(transport.shared(), 1);
    let rendered = metrics.render();
    assert!(
        rendered
            .contains(r#"gospelib_subgraph_fetches_shared_total{subgraph="s",service="test"} 1"#),
        "{rendered}"
    );

    // Once answered, the same request is sent again (nothing is cached).
    transport.send("s", "", request("{ a }")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn mutations_are_never_shared() {
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = Deduplicated::new(Arc::new(InProcess::default().with(
        "s",
        Arc::new(Slow {
            calls: calls.clone(),
        }),
    )));
    let (a, b) = tokio::join!(
        transport.send("s", "", request("mutation { add }")),
        transport.send("s", "", request("mutation { add }")),
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(transport.shared(), 0);
}

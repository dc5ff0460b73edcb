//! Live connections to the router per client: one address (an IPv6 /64) holds at most
//! `max_connections_per_client` WebSockets and event streams at once (the same places, taken
//! by `ws::live_place` for both), so one host cannot take every place of the endpoint; a place
//! comes back when its connection ends.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::edge::EdgeSettings;
use gospelib_kit::server::AppSpec;
use gospelib_kit::ws::SubscriptionSettings;
use gospelib_router::http::RouterService;
use support::{demo_router, start};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::StatusCode;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket upgrade to `url`: the socket, or the status the upgrade was refused with.
async fn open(url: &str) -> Result<Socket, StatusCode> {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status()),
        Err(other) => panic!("the upgrade failed otherwise: {other}"),
    }
}

#[tokio::test]
async fn one_client_holds_at_most_its_share_of_live_connections() {
    let router = demo_router();
    let edge = EdgeSettings {
        subscriptions: SubscriptionSettings {
            max_connections_per_client: 2,
            ..SubscriptionSettings::default()
        },
        ..EdgeSettings::default()
    };
    let (base, _stop) = start(AppSpec {
        service: "router".to_owned(),
        gateway: Some(Arc::new(RouterService::new(Arc::new(router)))),
        subgraphs: Vec::new(),
        dependencies: Vec::new(),
        max_body_bytes: 1 << 20,
        extra_routes: None,
        public_routes: None,
        edge,
    })
    .await;
    let url = format!("{}/graphql", base.replace("http://", "ws://"));

    let first = open(&url).await.expect("the first place");
    let _second = open(&url).await.expect("the second place");
    assert_eq!(open(&url).await.err(), Some(StatusCode::TOO_MANY_REQUESTS));

    // A connection ends: its place comes back.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match open(&url).await {
            Ok(_third) => break,
            Err(status) => {
                assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the place never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

//! `gospelib serve` applies the HTTP edge's settings (`GOSPELIB_CORS_*`, `GOSPELIB_ROUTER_CSRF`,
//! `GOSPELIB_ROUTER_MAX_BATCH`) on its public `/graphql`, compresses answers, and refuses a
//! CORS policy browsers would reject before it starts.

mod support;

use serde_json::{Value, json};
use support::{gospelib, serve_with, stack_vars};

#[test]
fn any_origin_with_credentials_stops_serve_before_it_starts() {
    let mut vars = stack_vars();
    vars.push(("GOSPELIB_CORS_ORIGINS", "*".to_owned()));
    vars.push(("GOSPELIB_CORS_ALLOW_CREDENTIALS", "true".to_owned()));
    let output = gospelib(&["serve"], &vars).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("invalid configuration (1 problem)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "GOSPELIB_CORS_ALLOW_CREDENTIALS has a bad value \"true\" (browsers refuse \
             credentials from a server that allows every origin)"
        ),
        "{stderr}"
    );
}

#[test]
fn the_public_graphql_follows_the_edge_settings() {
    let app = "https://app.example.com";
    let (_served, base, runtime) = serve_with(
        &["serve"],
        &[
            (
                "GOSPELIB_CORS_ORIGINS",
                format!("{app},http://localhost:5173"),
            ),
            ("GOSPELIB_ROUTER_CSRF", "off".to_owned()),
            ("GOSPELIB_ROUTER_MAX_BATCH", "2".to_owned()),
        ],
    );
    let graphql = format!("{base}/graphql");
    runtime.block_on(async {
        let http = reqwest::Client::new();

        // CORS: the listed origin's preflight is answered, another's is not.
        let preflight = |origin: &'static str| {
            http.request(reqwest::Method::OPTIONS, &graphql)
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .send()
        };
        let response = preflight(app).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["access-control-allow-origin"], app);
        assert_eq!(response.headers()["access-control-max-age"], "600");
        let response = preflight("https://elsewhere.example.com").await.unwrap();
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{:?}",
            response.headers()
        );

        // CSRF prevention off: a plain GET is served.
        let response = http
            .get(&graphql)
            .query(&[("query", "{ __typename }")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap()["data"],
            json!({"__typename": "Query"})
        );

        // Batches of up to 2, each answered by the router (with its version header).
        let response = http
            .post(&graphql)
            .header("origin", app)
            .json(&json!([{"query": "{ __typename }"}, {"query": "{ nosuch }"}]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("x-supergraph-version"));
        assert_eq!(response.headers()["access-control-allow-origin"], app);
        let answers: Value = response.json().await.unwrap();
        assert_eq!(answers[0]["data"], json!({"__typename": "Query"}));
        assert!(
            answers[1]["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("nosuch"),
            "{answers}"
        );
        let three = Value::Array(vec![json!({"query": "{ __typename }"}); 3]);
        let response = http.post(&graphql).json(&three).send().await.unwrap();
        assert_eq!(response.status(), 400);

        // A large answer is compressed when the client asks.
        let response = http
            .post(&graphql)
            .header("accept-encoding", "gzip")
            .json(&json!({"query": "{ __schema { types { name fields { name } } } }"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-encoding"], "gzip");
    });
}

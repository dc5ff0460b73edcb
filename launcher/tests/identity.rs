//! Identity end to end, on `gospelib serve` with the real stack: a Clerk `user.created` webhook
//! (Svix-signed) makes a user; a Clerk session token (RS256, from a local JWKS server) makes
//! that user the caller; `@authenticated` fields for anonymous and signed-in callers; a
//! client's own caller header is ignored and a forged one is refused by a subgraph reached
//! directly; partner keys made, used and revoked with `gospelib partner-key`.

mod support;

use std::time::{Duration, Instant};

use jsonwebtoken::get_current_timestamp;
use serde_json::{Value, json};
use support::clerk::{
    AUDIENCE, Client, ISSUER, base64_url, jwks_server, session_token, session_token_with, unique,
    user_created,
};
use support::{Served, gospelib, serve_with, stack_vars};

#[test]
fn signed_in_users_see_their_own_data_and_anonymous_callers_are_refused_what_needs_a_user() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let jwks = runtime.block_on(jwks_server());
    let (served, base, _serve_runtime) = serve_with(
        &["serve"],
        &[
            ("GOSPELIB_AUTH_JWKS_URL", jwks),
            ("GOSPELIB_AUTH_ISSUER", ISSUER.to_owned()),
            ("GOSPELIB_AUTH_AUDIENCE", AUDIENCE.to_owned()),
        ],
    );
    let client = Client {
        base,
        http: reqwest::Client::new(),
    };
    runtime.block_on(async {
        let (ada, bob) = (unique("ada"), unique("bob"));
        assert_eq!(
            client
                .deliver(
                    &format!("msg_{ada}"),
                    &user_created(&ada, "ada@example.com")
                )
                .await,
            200
        );
        assert_eq!(
            client
                .deliver(
                    &format!("msg_{bob}"),
                    &user_created(&bob, "bob@example.com")
                )
                .await,
            200
        );
        // The same delivery again changes nothing (and is still acknowledged).
        assert_eq!(
            client
                .deliver(
                    &format!("msg_{ada}"),
                    &user_created(&ada, "ada@example.com")
                )
                .await,
            200
        );

        let me = "{ me { id email firstName } }";
        let (ada_token, bob_token) = (session_token(&ada), session_token(&bob));
        let ada_auth = format!("Bearer {ada_token}");
        let (status, body) = client.ask(&[("authorization", &ada_auth)], me).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["data"]["me"],
            json!({"id": gospelib_kit::caller::user_id_for_clerk(&ada).to_string(),
                   "email": "ada@example.com", "firstName": "Ada"})
        );
        let bob_auth = format!("Bearer {bob_token}");
        let (_, body) = client.ask(&[("authorization", &bob_auth)], me).await;
        assert_eq!(body["data"]["me"]["email"], "bob@example.com");

        // Anonymous: `me` is null, and a mutation that needs a user is refused before fetching.
        let (status, body) = client.ask(&[], me).await;
        assert_eq!((status, &body["data"]["me"]), (200, &Value::Null), "{body}");
        let update = r#"mutation { updateMe(input: { firstName: "Eve" }) { firstName } }"#;
        let (_, body) = client.ask(&[], update).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
            "{body}"
        );
        assert_eq!(body["errors"][0]["path"], json!(["updateMe"]));
        // Signed in, the same mutation changes the caller's own user only.
        let (_, body) = client.ask(&[("authorization", &bob_auth)], update).await;
        assert_eq!(body["data"]["updateMe"]["firstName"], "Eve", "{body}");
        let (_, body) = client.ask(&[("authorization", &ada_auth)], me).await;
        assert_eq!(body["data"]["me"]["firstName"], "Ada");

        // A bad token is a 401, never anonymous.
        let tampered = {
            let mut parts: Vec<&str> = ada_token.split('.').collect();
            let forged = base64_url(
                &json!({"sub": bob, "iss": ISSUER, "exp": get_current_timestamp() + 60}),
            );
            parts[1] = &forged;
            format!("Bearer {}", parts.join("."))
        };
        // Expired well beyond the leeway, or issued to another frontend (`azp`): also a 401.
        let now = get_current_timestamp();
        let expired = format!(
            "Bearer {}",
            session_token_with(
                &ada,
                json!({"iat": now - 120, "nbf": now - 120, "exp": now - 60})
            )
        );
        let elsewhere = format!(
            "Bearer {}",
            session_token_with(&ada, json!({"azp": "https://evil.example"}))
        );
        let no_azp = format!("Bearer {}", session_token_with(&ada, json!({"azp": null})));
        for bad in [
            tampered.as_str(),
            "Bearer not-a-token",
            "Basic YWRhOnNlY3JldA==",
            expired.as_str(),
            elsewhere.as_str(),
            no_azp.as_str(),
        ] {
            let (status, body) = client.ask(&[("authorization", bad)], me).await;
            assert_eq!(status, 401, "{bad}: {body}");
            assert_eq!(
                body["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
                "{bad}: {body}"
            );
        }

        // A client's own caller header is ignored: it is not the router's to believe. Not
        // forwarded (a subgraph would refuse it: an error), not believed (`me` would be Ada).
        let caller_header = gospelib_kit::caller::CALLER_HEADER;
        let forge = |clerk_id: &str| {
            gospelib_kit::caller::InternalSecret::new(b"someone else's secret, long enough!!")
                .unwrap()
                .caller_key("accounts")
                .sign(
                    &gospelib_kit::caller::Caller::user(gospelib_kit::caller::user_id_for_clerk(
                        clerk_id,
                    )),
                    me,
                    &gospelib_kit::caller::variables_digest(&json!({})),
                    Duration::from_secs(30),
                )
        };
        let forged = forge(&ada);
        let (status, body) = client.ask(&[(caller_header, &forged)], me).await;
        assert_eq!((status, &body["data"]["me"]), (200, &Value::Null), "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        // Signed in as Ada, with a header naming Bob: the caller is Ada.
        let (status, body) = client
            .ask(
                &[("authorization", &ada_auth), (caller_header, &forge(&bob))],
                me,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        assert_eq!(
            body["data"]["me"]["id"],
            gospelib_kit::caller::user_id_for_clerk(&ada).to_string(),
            "{body}"
        );
        // Sent straight to the subgraph (the internal listener), it is refused.
        let direct = client
            .http
            .post(format!("{}/subgraphs/accounts/graphql", served.internal))
            .header(caller_header, &forged)
            .json(&json!({ "query": me }))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(
            direct["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
            "{direct}"
        );
    });
    drop(served);
}

/// `gospelib partner-key <args>` with the stack's variables; its stdout.
fn partner_key(args: &[&str]) -> String {
    let mut all = vec!["partner-key"];
    all.extend_from_slice(args);
    let output = gospelib(&all, &stack_vars()).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn a_partner_keys_scopes_are_listed() {
    let partner = format!("scoped-{}", uuid::Uuid::new_v4().simple());
    let made: Value = serde_json::from_str(&partner_key(&[
        "create",
        "--partner",
        &partner,
        "--scopes",
        "content:read,study.notes",
        "--format",
        "json",
    ]))
    .unwrap();
    let id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(
        made["scopes"],
        json!(["content:read", "study.notes"]),
        "{made}"
    );
    let listed = partner_key(&["list"]);
    let line = listed
        .lines()
        .find(|line| line.starts_with(&format!("{id}  ")))
        .unwrap_or_else(|| panic!("{id} is not listed:\n{listed}"));
    assert!(
        line.contains(&partner) && line.contains("scopes [content:read,study.notes]"),
        "{line}"
    );
    let listed: Value = serde_json::from_str(&partner_key(&["list", "--format", "json"])).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed: {listed}"));
    assert_eq!(entry["scopes"], json!(["content:read", "study.notes"]));
    partner_key(&["revoke", &id]);
}

#[test]
fn partner_keys_see_only_the_partner_contract_and_a_revoked_key_fails_at_once() {
    let partner = format!("acme-{}", uuid::Uuid::new_v4().simple());
    let made: Value = serde_json::from_str(&partner_key(&[
        "create",
        "--partner",
        &partner,
        "--format",
        "json",
    ]))
    .unwrap();
    let key = made["key"].as_str().unwrap().to_owned();
    let id = made["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("glpk_"), "{made}");
    // Only the digest is kept: the key is in no listing.
    let listed = partner_key(&["list", "--format", "json"]);
    assert!(listed.contains(&id) && !listed.contains(&key));

    let (served, base, runtime): (Served, String, _) = serve_with(&["serve"], &[]);
    let client = Client {
        base,
        http: reqwest::Client::new(),
    };
    runtime.block_on(async {
        let root_fields = |body: &Value| -> Vec<String> {
            body["data"]["__schema"]["queryType"]["fields"]
                .as_array()
                .unwrap_or_else(|| panic!("{body}"))
                .iter()
                .map(|field| field["name"].as_str().unwrap().to_owned())
                .collect()
        };
        let introspect = "{ __schema { queryType { fields { name } } } }";
        let (_, apps) = client.ask(&[], introspect).await;
        assert!(root_fields(&apps).contains(&"lexiconEntry".to_owned()));
        let (status, partners) = client.ask(&[("x-api-key", &key)], introspect).await;
        assert_eq!(status, 200, "{partners}");
        assert_eq!(
            root_fields(&partners),
            ["passage", "passages", "chapter", "book", "books", "search"]
        );
        let authorization = format!("ApiKey {key}");
        let (_, body) = client
            .ask(
                &[("authorization", &authorization)],
                "{ lexiconEntry(id: \"H0001\") { id } }",
            )
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "VALIDATION_ERROR",
            "{body}"
        );
        let (_, body) = client
            .ask(
                &[("x-api-key", &key)],
                "{ passage(id: \"john.3.16\") { id reference } }",
            )
            .await;
        assert!(
            body["errors"].as_array().is_none_or(|errors| errors
                .iter()
                .all(|e| e["extensions"]["code"] != "VALIDATION_ERROR")),
            "{body}"
        );
        // An unknown key, well-formed or not, is a 401.
        for unknown in [
            "glpk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "nonsense",
        ] {
            let (status, body) = client
                .ask(&[("x-api-key", unknown)], "{ books { id } }")
                .await;
            assert_eq!(status, 401, "{body}");
        }

        // Revoked: the running router refuses the key it had cached, within moments.
        partner_key(&["revoke", &id]);
        let revoked_at = Instant::now();
        loop {
            let (status, _) = client.ask(&[("x-api-key", &key)], "{ books { id } }").await;
            if status == 401 {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(10),
                "a revoked key still works after 10 s (a cached key lives 15 s)"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(partner_key(&["list"]).contains(&format!("{id}  {partner}")));
    // Revoking twice is an error that says so.
    let again = gospelib(&["partner-key", "revoke", &id], &stack_vars())
        .output()
        .unwrap();
    assert!(!again.status.success());
    drop(served);
}

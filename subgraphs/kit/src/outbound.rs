//! Where every HTTP client of the platform starts: the router's subgraph fetches, the
//! registry, the assistant's content and LLM vendors, Typesense, Stripe, the push and email
//! providers.
//!
//! None of them follows a redirect. reqwest follows up to ten by default and, going to another
//! host, drops only the standard credentials (`authorization`, cookies); ours travel in headers
//! of their own too — the signed caller context, `X-TYPESENSE-API-KEY`, `x-api-key` — and a
//! 307 or 308 sends the POST body again. A peer that answers with a redirect is answered as
//! any other non-success status: an error for the caller, never a second request.

/// A client builder that follows no redirect; the caller adds its own timeouts and pool
/// settings.
pub fn client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{StatusCode, header};
    use axum::routing::any;

    /// A local server answering every request with `status` and a `location` pointing at
    /// `target`.
    async fn redirecting(status: StatusCode, target: String) -> String {
        let app = axum::Router::new().route(
            "/",
            any(move || {
                let target = target.clone();
                async move { (status, [(header::LOCATION, target)]) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}/")
    }

    /// A local server counting the requests that reach it.
    async fn counting(hits: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new().route(
            "/",
            any(move || {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    "reached"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}/")
    }

    #[tokio::test]
    async fn no_redirect_is_followed_and_no_credential_leaves_for_its_target() {
        let hits = Arc::new(AtomicUsize::new(0));
        let target = counting(hits.clone()).await;
        let client = super::client().build().unwrap();
        for status in [
            StatusCode::MOVED_PERMANENTLY,
            StatusCode::FOUND,
            StatusCode::TEMPORARY_REDIRECT,
            StatusCode::PERMANENT_REDIRECT,
        ] {
            let origin = redirecting(status, target.clone()).await;
            let response = client
                .post(&origin)
                .header("x-api-key", "a secret of ours")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                status,
                "the redirect itself is the answer"
            );
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0, "the target was never asked");

        // The same redirect through a default client reaches the target: the test can fail.
        let origin = redirecting(StatusCode::TEMPORARY_REDIRECT, target).await;
        let followed = reqwest::Client::new().post(&origin).send().await.unwrap();
        assert_eq!(followed.status(), StatusCode::OK);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}

//! Reading another server's HTTP answer with a size cap: an LLM vendor, a push or email
//! provider, or another of our processes cannot make us buffer an unbounded body. A body past
//! the cap is not read further (its connection is dropped with the response).

/// Reads `response`'s body if it is at most `limit` bytes; `None` past it (a declared length
/// over the limit is refused before anything is read).
pub async fn body_within(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let declared = response.content_length();
    if declared.is_some_and(|length| length > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// [`body_within`] as text (invalid UTF-8 replaced), or what a body past the cap is said to
/// be: `"<a body over N bytes, not read>"`. For error messages and logs.
pub async fn text_within(response: reqwest::Response, limit: usize) -> String {
    match body_within(response, limit).await {
        Ok(Some(body)) => String::from_utf8_lossy(&body).into_owned(),
        Ok(None) => format!("<a body over {limit} bytes, not read>"),
        Err(error) => format!("<the body could not be read: {error}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local server answering `GET /` with `size` bytes, chunked (no declared length) or
    /// with its length declared.
    async fn server(size: usize, chunked: bool) -> String {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || async move {
                let body = vec![b'x'; size];
                if chunked {
                    let stream = futures_util::stream::iter(
                        body.chunks(1024)
                            .map(|chunk| Ok::<_, std::io::Error>(chunk.to_vec()))
                            .collect::<Vec<_>>(),
                    );
                    axum::body::Body::from_stream(stream)
                } else {
                    axum::body::Body::from(body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}/")
    }

    #[tokio::test]
    async fn bodies_within_the_cap_are_read_and_others_refused_declared_or_not() {
        let client = reqwest::Client::new();
        for chunked in [false, true] {
            let small = server(4096, chunked).await;
            let body = body_within(client.get(&small).send().await.unwrap(), 4096)
                .await
                .unwrap();
            assert_eq!(
                body.map(|body| body.len()),
                Some(4096),
                "chunked: {chunked}"
            );

            let large = server(4097, chunked).await;
            let body = body_within(client.get(&large).send().await.unwrap(), 4096)
                .await
                .unwrap();
            assert_eq!(body, None, "chunked: {chunked}");
            assert_eq!(
                text_within(client.get(&large).send().await.unwrap(), 4096).await,
                "<a body over 4096 bytes, not read>"
            );
        }
    }
}

//! A small Typesense client over its HTTP API: collections, the bulk JSONL import, aliases and
//! search. Collections are versioned (`passages_<version>`) behind an alias (`passages`) so a
//! re-ingest swaps atomically and never serves a half-written index.

use serde_json::{Value, json};

use gospelib_kit::stores::TypesenseClient;

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
    let body = response
        .text()
        .await
        .map_err(|e| SearchError::Unavailable(e.to_string()))?;
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

/// Creates a collection from its schema (replacing one of the same name).
pub async fn recreate_collection(
    client: &TypesenseClient,
    schema: &Value,
) -> Result<(), SearchError> {
    let name = schema["name"].as_str().expect("a schema has a name");
    match send(
        client,
        client
            .http
            .delete(url(client, &format!("collections/{name}"))),
    )
    .await
    {
        Ok(_) | Err(SearchError::Refused { status: 404, .. }) => {}
        Err(error) => return Err(error),
    }
    send(
        client,
        client.http.post(url(client, "collections")).json(schema),
    )
    .await?;
    Ok(())
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

/// Runs a search; `params` are Typesense's query parameters.
pub async fn search(
    client: &TypesenseClient,
    collection: &str,
    params: &[(&str, String)],
) -> Result<Value, SearchError> {
    send(
        client,
        client
            .http
            .get(url(
                client,
                &format!("collections/{collection}/documents/search"),
            ))
            .query(params),
    )
    .await
}

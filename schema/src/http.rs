//! The registry over HTTP, for routers and tools:
//! - `GET /registry/supergraph`: the latest published supergraph;
//! - `GET /registry/supergraph/{n}`: version `n`;
//! - `GET /registry/contracts/{name}/supergraph` (and `/{n}`): the latest version's contract
//!   supergraph (or version `n`'s, for a router pinned to it);
//! - `GET /registry/versions`: the history, newest first (JSON);
//! - `GET /registry/trusted-documents` (and `/{n}`): the apps' trusted documents published with
//!   the latest version (or version `n`), JSON (`trusted-documents/1`); 404 for a version
//!   published without them.
//!
//! Supergraphs come as `text/plain`, manifests as JSON, each with an `ETag` (version number and
//! content hash) and an `x-registry-version` header; `If-None-Match` with the current ETag
//! answers 304, so routers poll cheaply.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::store::{Store, StoreError, Version, content_hash};

/// The registry's routes, to merge into a server.
pub fn routes(store: Store) -> axum::Router {
    axum::Router::new()
        .route("/registry/supergraph", get(latest))
        .route("/registry/supergraph/{number}", get(by_number))
        .route("/registry/contracts/{name}/supergraph", get(contract))
        .route(
            "/registry/contracts/{name}/supergraph/{number}",
            get(contract_by_number),
        )
        .route("/registry/versions", get(history))
        .route("/registry/trusted-documents", get(latest_trusted_documents))
        .route(
            "/registry/trusted-documents/{number}",
            get(trusted_documents_by_number),
        )
        .with_state(store)
}

async fn latest(State(store): State<Store>, headers: HeaderMap) -> Response {
    match store.latest().await {
        Ok(Some(version)) => supergraph_response(&version, None, &headers),
        Ok(None) => not_found("nothing has been published yet"),
        Err(error) => unavailable(error),
    }
}

/// The 400 that refuses a path's version that is no number.
fn not_a_version() -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        "a version is a positive whole number",
    )
}

/// A path's version number: a positive whole number (versions count from 1).
fn version_number(text: &str) -> Option<i32> {
    text.parse::<i32>().ok().filter(|number| *number > 0)
}

async fn by_number(
    State(store): State<Store>,
    Path(number): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(number) = version_number(&number) else {
        return not_a_version();
    };
    match store.get(number).await {
        Ok(Some(version)) => supergraph_response(&version, None, &headers),
        Ok(None) => not_found(&format!("version {number} does not exist")),
        Err(error) => unavailable(error),
    }
}

async fn contract(
    State(store): State<Store>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    match store.latest().await {
        Ok(Some(version)) if version.contracts.contains_key(&name) => {
            supergraph_response(&version, Some(&name), &headers)
        }
        Ok(_) => not_found(&format!("no contract named `{name}` has been published")),
        Err(error) => unavailable(error),
    }
}

/// A contract of version `number`: what a router pinned to `…/supergraph/<number>` serves
/// partners (the latest contract would be planned against subgraphs deployed for another).
async fn contract_by_number(
    State(store): State<Store>,
    Path((name, number)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(number) = version_number(&number) else {
        return not_a_version();
    };
    match store.get(number).await {
        Ok(Some(version)) if version.contracts.contains_key(&name) => {
            supergraph_response(&version, Some(&name), &headers)
        }
        Ok(Some(_)) => not_found(&format!("version {number} has no contract named `{name}`")),
        Ok(None) => not_found(&format!("version {number} does not exist")),
        Err(error) => unavailable(error),
    }
}

async fn history(State(store): State<Store>) -> Response {
    match store.history().await {
        Ok(versions) => Json(versions).into_response(),
        Err(error) => unavailable(error),
    }
}

async fn latest_trusted_documents(State(store): State<Store>, headers: HeaderMap) -> Response {
    match store.latest().await {
        Ok(Some(version)) => trusted_documents_response(&version, &headers),
        Ok(None) => not_found("nothing has been published yet"),
        Err(error) => unavailable(error),
    }
}

async fn trusted_documents_by_number(
    State(store): State<Store>,
    Path(number): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(number) = version_number(&number) else {
        return not_a_version();
    };
    match store.get(number).await {
        Ok(Some(version)) => trusted_documents_response(&version, &headers),
        Ok(None) => not_found(&format!("version {number} does not exist")),
        Err(error) => unavailable(error),
    }
}

/// The trusted documents of `version`, honouring `If-None-Match`.
fn trusted_documents_response(version: &Version, headers: &HeaderMap) -> Response {
    let Some(manifest) = &version.trusted_documents else {
        return not_found(&format!(
            "version {} was published without trusted documents",
            version.number
        ));
    };
    let body = serde_json::to_string(manifest).expect("a JSON value always serialises");
    let etag = format!(
        "\"v{}-trusted-documents-{}\"",
        version.number,
        &content_hash(&body)[..16]
    );
    versioned_response(version.number, etag, "application/json", body, headers)
}

/// The supergraph of `version` (or of its contract), honouring `If-None-Match`.
fn supergraph_response(version: &Version, contract: Option<&str>, headers: &HeaderMap) -> Response {
    let (sdl, etag) = match contract {
        None => (
            version.supergraph.as_str(),
            format!("\"v{}-{}\"", version.number, &version.supergraph_hash[..16]),
        ),
        Some(name) => {
            let sdl = version.contracts[name].as_str();
            let hash = content_hash(sdl);
            (
                sdl,
                format!("\"v{}-{name}-{}\"", version.number, &hash[..16]),
            )
        }
    };
    versioned_response(
        version.number,
        etag,
        "text/plain; charset=utf-8",
        sdl.to_owned(),
        headers,
    )
}

/// `body` of version `number` with its ETag, or 304 when `If-None-Match` names that ETag.
fn versioned_response(
    number: i32,
    etag: String,
    content_type: &'static str,
    body: String,
    headers: &HeaderMap,
) -> Response {
    let etag_value = HeaderValue::from_str(&etag).expect("hex and digits are a valid header");
    let common = [
        (header::ETAG, etag_value),
        (
            header::HeaderName::from_static("x-registry-version"),
            HeaderValue::from(number),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|candidate| {
            let candidate = candidate.trim();
            candidate == "*" || candidate.trim_start_matches("W/") == etag
        });
    if matches {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        StatusCode::OK,
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn not_found(message: &str) -> Response {
    problem(StatusCode::NOT_FOUND, message)
}

fn unavailable(error: StoreError) -> Response {
    tracing::error!(%error, "registry store failed");
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "the registry's database is unavailable",
    )
}

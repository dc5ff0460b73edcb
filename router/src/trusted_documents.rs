//! Trusted documents: the first-party apps' operations (`client-tests/operations/{web,mobile}`),
//! published with each registry version as a manifest, and what the router does with requests
//! that are not among them (`GOSPELIB_ROUTER_TRUSTED_DOCUMENTS`):
//! - `off`: nothing;
//! - `log` (the default): every request runs; an app's operation outside the manifest is
//!   logged (its name and id, never its variables), once per distinct document, and counted;
//! - `enforce`: app callers (anonymous or signed in) may only send a manifest id or the text of
//!   a manifest document; anything else is refused with `OPERATION_NOT_TRUSTED` (HTTP 400).
//!
//! Partners (an API key, served the partner contract) are never held to the manifest: they
//! build their own operations against the introspected contract.
//!
//! A document's id is `sha256:` and the lowercase hex sha256 of its **normalized** text: the
//! text with what the GraphQL spec ignores (whitespace, commas, comments, a byte-order mark)
//! removed and one space kept only between two names or numbers, as graphql-js'
//! `stripIgnoredCharacters` does (graphql-tools' token minifier: no parse, no AST). So the same
//! operation sent with other indentation or comments has the same id, and any other token makes
//! another one. The manifest holds each document in that normalized form, so its ids can be
//! checked against its texts when it is loaded.
//!
//! Ids arrive as Apollo's persisted-query extension, `extensions.persistedQuery.sha256Hash`
//! (`version: 1`), with or without the `sha256:` prefix (the kit's request type keeps no
//! top-level `documentId`). A known id runs the manifest's text and never reaches automatic
//! persisted queries ([`crate::apq`]); for app callers under `enforce`, an unknown id is
//! answered `PERSISTED_QUERY_NOT_FOUND` without APQ looking it up (so a stock APQ client sends
//! the text next, which the manifest then judges), and an APQ registration (a text with a
//! hash) of a text outside the manifest is refused like any other text, so APQ is no way
//! around the manifest. The APQ hash of a trusted text sent with its text is remembered (in
//! this process, the [`ALIASES_PER_DOCUMENT`] latest of each document, so a client sending
//! endless layouts of one document pushes out no other's): sent alone later, it runs the
//! manifest's text.
//!
//! [`TrustedService`] applies the check in front of the router's service (before credentials
//! are verified and before APQ); the manifest is swapped in place when the registry publishes
//! a new one ([`poll_registry`]) or its file changes ([`watch_file`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gospelib_kit::caller::ForwardedHeaders;
use gospelib_kit::graphql_http::{
    ConnectionRefusal, GraphQlService, PublicHeaderValue, PublicStatusCode, ServiceResponse,
    ServiceStream,
};
use gospelib_kit::stores::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::http::RouterService;
use crate::identity::{Credential, credential};

/// The manifest's `format`.
pub const FORMAT: &str = "trusted-documents/1";
/// The prefix of every document id.
pub const ID_PREFIX: &str = "sha256:";
/// The `extensions.code` of a refused operation.
pub const NOT_TRUSTED: &str = "OPERATION_NOT_TRUSTED";
/// Its message.
pub const NOT_TRUSTED_MESSAGE: &str = "only the apps' registered operations are accepted here";
/// The first-party apps: the folders of `client-tests/operations/` whose operations are
/// trusted (`partner/` holds partners' operations, which are not).
pub const APPS: [&str; 2] = ["web", "mobile"];
/// How many distinct untrusted documents are logged by name and id (then only counted).
const MAX_LOGGED: usize = 10_000;

/// The normalized form of a document: its tokens, without what the spec ignores, one space
/// only where two names or numbers meet. Fails on a character no GraphQL token starts with.
pub fn normalize(text: &str) -> Result<String, String> {
    graphql_tools::parser::query::minify_query(text).map_err(|error| error.to_string())
}

/// The id of a document: `sha256:` and the hex sha256 of its normalized text.
pub fn document_id(text: &str) -> Result<String, String> {
    Ok(format_id(&digest_of_normalized(&normalize(text)?)))
}

fn digest_of_normalized(normalized: &str) -> [u8; 32] {
    Sha256::digest(normalized.as_bytes()).into()
}

fn format_id(digest: &[u8; 32]) -> String {
    let mut id = String::with_capacity(ID_PREFIX.len() + 64);
    id.push_str(ID_PREFIX);
    for byte in digest {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// The digest an id names: `sha256:<64 hex>` or the 64 hex digits alone (either case).
fn parse_id(id: &str) -> Option<[u8; 32]> {
    let hex = id.strip_prefix(ID_PREFIX).unwrap_or(id).as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

/// What the router does with operations outside the manifest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// No check at all.
    Off,
    /// Everything runs; an app's operation outside the manifest is logged and counted.
    #[default]
    Log,
    /// App callers may only send the manifest's documents (by id or text).
    Enforce,
}

impl Mode {
    /// `off`, `log` or `enforce`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(Self::Off),
            "log" => Ok(Self::Log),
            "enforce" => Ok(Self::Enforce),
            other => Err(format!("`{other}` is not off, log or enforce")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Log => "log",
            Self::Enforce => "enforce",
        }
    }
}

/// Why a manifest could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{origin}: not a GraphQL document: {reason}")]
    Document { origin: String, reason: String },
    #[error("not a trusted-documents manifest: {0}")]
    Malformed(String),
}

/// The manifest as JSON: `{ "format": "trusted-documents/1", "documents": { id: text } }`.
#[derive(Serialize, Deserialize)]
struct ManifestJson {
    format: String,
    documents: BTreeMap<String, String>,
}

/// The trusted documents: normalized texts by the digest of their id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    documents: HashMap<[u8; 32], Arc<str>>,
    /// The length of its longest document, normalized.
    longest: usize,
}

impl Manifest {
    /// The manifest of these documents (`source` names each in errors).
    pub fn from_documents<'a>(
        documents: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ManifestError> {
        let mut manifest = Self::default();
        for (source, text) in documents {
            let normalized = normalize(text).map_err(|reason| ManifestError::Document {
                origin: source.to_owned(),
                reason,
            })?;
            manifest.insert(digest_of_normalized(&normalized), normalized);
        }
        Ok(manifest)
    }

    fn insert(&mut self, digest: [u8; 32], normalized: String) {
        self.longest = self.longest.max(normalized.len());
        self.documents.insert(digest, normalized.into());
    }

    /// The longest text that may be one of its documents as sent: its longest document with
    /// [`MOST_LAYOUT`] times its length in layout and comments, and never less than what
    /// [`TrustedDocuments`] keeps the digests of.
    fn longest_as_sent(&self) -> usize {
        self.longest
            .saturating_mul(MOST_LAYOUT)
            .max(LONGEST_TEXT_KEPT)
    }

    /// The apps' operations under `operations` (`client-tests/operations`): every `*.graphql`
    /// of its `web/` and `mobile/` folders and the folders in them, as the registry's check
    /// reads them (a missing folder holds none).
    pub fn from_operations_dir(operations: &Path) -> Result<Self, ManifestError> {
        let mut files = Vec::new();
        let mut folders: Vec<std::path::PathBuf> =
            APPS.iter().map(|app| operations.join(app)).collect();
        while let Some(dir) = folders.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(io_error(&dir, error)),
            };
            for entry in entries {
                let path = entry.map_err(|error| io_error(&dir, error))?.path();
                if path.is_dir() {
                    folders.push(path);
                } else if path.extension().is_some_and(|ext| ext == "graphql") {
                    files.push(path);
                }
            }
        }
        files.sort();
        let texts = files
            .iter()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|text| (path.display().to_string(), text))
                    .map_err(|error| io_error(path, error))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_documents(
            texts
                .iter()
                .map(|(source, text)| (source.as_str(), text.as_str())),
        )
    }

    /// A manifest from its JSON; each id must be its document's (so a manifest cannot
    /// vouch for one text under another's id).
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|error| ManifestError::Malformed(error.to_string()))?;
        Self::from_value(&value)
    }

    /// [`Manifest::from_json`] from a parsed value.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, ManifestError> {
        let parsed = ManifestJson::deserialize(value)
            .map_err(|error| ManifestError::Malformed(error.to_string()))?;
        if parsed.format != FORMAT {
            return Err(ManifestError::Malformed(format!(
                "format `{}`, expected `{FORMAT}`",
                parsed.format
            )));
        }
        let mut manifest = Self::default();
        for (id, text) in parsed.documents {
            let digest = parse_id(&id)
                .filter(|_| id.starts_with(ID_PREFIX))
                .ok_or_else(|| ManifestError::Malformed(format!("`{id}` is not sha256:<hex>")))?;
            let normalized = normalize(&text).map_err(|reason| ManifestError::Document {
                origin: id.clone(),
                reason,
            })?;
            if digest_of_normalized(&normalized) != digest {
                return Err(ManifestError::Malformed(format!(
                    "`{id}` is not the id of its document"
                )));
            }
            manifest.insert(digest, normalized);
        }
        Ok(manifest)
    }

    /// The manifest as JSON, ids in order.
    pub fn to_json(&self) -> serde_json::Value {
        let documents: BTreeMap<String, String> = self
            .documents
            .iter()
            .map(|(digest, text)| (format_id(digest), text.to_string()))
            .collect();
        serde_json::to_value(ManifestJson {
            format: FORMAT.to_owned(),
            documents,
        })
        .expect("strings serialise")
    }

    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// The document with this id (`sha256:<hex>` or the hex alone).
    pub fn get(&self, id: &str) -> Option<&Arc<str>> {
        self.documents.get(&parse_id(id)?)
    }

    /// Every id, in order.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.documents.keys().map(format_id).collect();
        ids.sort();
        ids
    }
}

fn io_error(path: &Path, error: std::io::Error) -> ManifestError {
    ManifestError::Io {
        path: path.display().to_string(),
        error,
    }
}

/// A request the check refuses: its code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn not_trusted() -> Self {
        Self {
            code: NOT_TRUSTED,
            message: NOT_TRUSTED_MESSAGE.to_owned(),
        }
    }

    /// An id nobody vouched for, sent without its text: as APQ answers a hash it does not
    /// know, so that Apollo's link sends the text next.
    fn persisted_query_not_found() -> Self {
        Self {
            code: "PERSISTED_QUERY_NOT_FOUND",
            message: "PersistedQueryNotFound".to_owned(),
        }
    }
}

/// The router's trusted documents: its mode and the current manifest (none until one is
/// loaded; under `enforce`, no manifest refuses every app operation).
pub struct TrustedDocuments {
    mode: Mode,
    manifest: RwLock<Option<Arc<Manifest>>>,
    /// App operations outside the manifest (refused under `enforce`).
    untrusted: AtomicU64,
    /// The untrusted documents already logged.
    logged: Mutex<HashSet<[u8; 32]>>,
    /// The digests of texts recently checked (parsing and printing a document to normalize it
    /// was ~1% of the platform's CPU per request, every app request sending one of a few
    /// texts).
    digests: Mutex<lru::LruCache<Box<str>, Option<[u8; 32]>>>,
    /// APQ hashes of trusted texts (the sha256 of the text as an app sent it) and the manifest
    /// id of its document.
    aliases: Mutex<Aliases>,
}

/// How many APQ hashes of one trusted document [`TrustedDocuments`] remembers (those used
/// last): an app sends a document in a layout or two per build, and old builds linger.
pub const ALIASES_PER_DOCUMENT: usize = 16;

/// APQ hashes of trusted texts, at most [`ALIASES_PER_DOCUMENT`] a document, those used last
/// kept: a client sending layouts of a document pushes out only that document's hashes, and
/// not one an app keeps using.
#[derive(Default)]
struct Aliases {
    document_of: HashMap<[u8; 32], [u8; 32]>,
    of_document: HashMap<[u8; 32], lru::LruCache<[u8; 32], ()>>,
}

impl Aliases {
    /// The document of `hash`, which counts as used now.
    fn document_of(&mut self, hash: &[u8; 32]) -> Option<[u8; 32]> {
        let document = *self.document_of.get(hash)?;
        if let Some(hashes) = self.of_document.get_mut(&document) {
            hashes.promote(hash);
        }
        Some(document)
    }

    /// Remembers `hash` as `document`'s (used now), forgetting the document's least recently
    /// used past the limit.
    fn remember(&mut self, hash: [u8; 32], document: [u8; 32]) {
        let hashes = self.of_document.entry(document).or_insert_with(|| {
            lru::LruCache::new(std::num::NonZeroUsize::new(ALIASES_PER_DOCUMENT).expect("not zero"))
        });
        if let Some((pushed_out, ())) = hashes.push(hash, ())
            && pushed_out != hash
        {
            self.document_of.remove(&pushed_out);
        }
        self.document_of.insert(hash, document);
    }
}

/// How many texts' digests [`TrustedDocuments`] keeps.
const DIGESTS_KEPT: usize = 1024;

/// The longest text whose digest is kept (a longer one is normalized every time).
const LONGEST_TEXT_KEPT: usize = 16 * 1024;

/// How many times its normalized length a trusted document may take as sent (indentation,
/// line breaks, comments); a longer text is none of the documents.
pub const MOST_LAYOUT: usize = 8;

impl TrustedDocuments {
    pub fn new(mode: Mode, manifest: Option<Manifest>) -> Self {
        Self {
            mode,
            manifest: RwLock::new(manifest.map(Arc::new)),
            untrusted: AtomicU64::new(0),
            logged: Mutex::new(HashSet::new()),
            digests: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(DIGESTS_KEPT).expect("not zero"),
            )),
            aliases: Mutex::new(Aliases::default()),
        }
    }

    /// The digest of `text`'s normalized form; `None` when it does not parse, or when it is
    /// longer than any of `manifest`'s documents may be as sent.
    fn text_digest(&self, text: &str, manifest: &Manifest) -> Option<[u8; 32]> {
        let digest_of = |text: &str| normalize(text).ok().map(|n| digest_of_normalized(&n));
        if text.len() > LONGEST_TEXT_KEPT {
            // Not normalized at all past what a document may be as sent: whole, normalizing
            // would cost what its sender chose (a 2 MiB body, a few KiB gzipped, is a million
            // tokens and a vector of them), before any limit or credential.
            if text.len() > manifest.longest_as_sent() {
                return None;
            }
            return digest_of(text);
        }
        if let Some(digest) = self.digests.lock().expect("digests lock").get(text) {
            return *digest;
        }
        let digest = digest_of(text);
        self.digests
            .lock()
            .expect("digests lock")
            .put(text.into(), digest);
        digest
    }

    /// No check at all.
    pub fn off() -> Self {
        Self::new(Mode::Off, None)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The current manifest.
    pub fn manifest(&self) -> Option<Arc<Manifest>> {
        self.manifest.read().expect("manifest lock").clone()
    }

    /// Swaps in a new manifest (requests in flight keep the one they checked against).
    pub fn replace(&self, manifest: Manifest) {
        *self.manifest.write().expect("manifest lock") = Some(Arc::new(manifest));
    }

    /// How many app operations outside the manifest were seen (refused under `enforce`).
    pub fn untrusted_count(&self) -> u64 {
        self.untrusted.load(Ordering::Relaxed)
    }

    /// The id a request's extensions carry: `persistedQuery.sha256Hash` of version 1.
    pub fn requested_id(request: &async_graphql::Request) -> Option<String> {
        let persisted = request.extensions.get("persistedQuery")?;
        let async_graphql::Value::Object(persisted) = persisted else {
            return None;
        };
        let version = persisted.get("version");
        if !matches!(version, Some(async_graphql::Value::Number(n)) if n.as_u64() == Some(1)) {
            return None;
        }
        match persisted.get("sha256Hash") {
            Some(async_graphql::Value::String(hash)) => Some(hash.clone()),
            _ => None,
        }
    }

    /// Checks one request: its `query` (possibly empty), the id it sent (`sha256Hash`), the
    /// operation name it gave (for the log), and whether the caller is a partner.
    ///
    /// `Ok(None)`: go on as asked (APQ included). `Ok(Some(text))`: the id is the manifest's
    /// (or the APQ hash of one of its documents sent with its text before), run `text` and
    /// leave APQ out. `Err`: refused (under `enforce` only), or, for an unknown id sent alone,
    /// asked for its text.
    pub fn check(
        &self,
        query: &str,
        id: Option<&str>,
        operation_name: Option<&str>,
        partner: bool,
    ) -> Result<Option<Arc<str>>, Refusal> {
        if self.mode == Mode::Off || partner {
            return Ok(None);
        }
        let manifest = self.manifest();
        let Some(manifest) = manifest.as_deref() else {
            // Nothing to compare with: `log` has nothing to say, `enforce` stays shut.
            return match self.mode {
                Mode::Enforce => Err(self.untrusted(None, operation_name, "no manifest")),
                _ => Ok(None),
            };
        };
        let text_given = !query.trim().is_empty();
        let text_digest = text_given
            .then(|| self.text_digest(query, manifest))
            .flatten();
        if let Some(id) = id {
            let digest = parse_id(id);
            if let Some(text) = digest.and_then(|digest| manifest.documents.get(&digest)) {
                // A manifest id: its text runs, unless another text came with it.
                if !text_given || text_digest == digest {
                    return Ok(Some(text.clone()));
                }
            } else if !text_given {
                // The APQ hash of a trusted text sent with it before: the manifest's text.
                let aliased = digest
                    .and_then(|digest| {
                        self.aliases
                            .lock()
                            .expect("aliases lock")
                            .document_of(&digest)
                    })
                    .and_then(|document| manifest.documents.get(&document));
                if let Some(text) = aliased {
                    return Ok(Some(text.clone()));
                }
                // An id nobody vouched for, and no text: under `enforce`, APQ does not look it
                // up (what it holds may be any text); the client is asked for the text, which
                // the manifest then judges.
                return match self.mode {
                    Mode::Enforce => Err(Refusal::persisted_query_not_found()),
                    _ => self.outcome(digest, operation_name, "unknown id"),
                };
            }
        }
        if !text_given {
            return Ok(None);
        }
        match text_digest {
            Some(digest) if manifest.documents.contains_key(&digest) => {
                // Sent with its APQ hash: that hash runs this document when sent alone.
                if let Some(hash) = id.and_then(parse_id)
                    && hash == <[u8; 32]>::from(Sha256::digest(query.as_bytes()))
                {
                    self.aliases
                        .lock()
                        .expect("aliases lock")
                        .remember(hash, digest);
                }
                Ok(None)
            }
            Some(digest) => self.outcome(Some(digest), operation_name, "unknown document"),
            // Not even tokens: refused under `enforce`, left to the parser's error otherwise.
            None if self.mode == Mode::Enforce => {
                Err(self.untrusted(None, operation_name, "not a document"))
            }
            None => Ok(None),
        }
    }

    /// An untrusted operation: refused under `enforce`, passed under `log`.
    fn outcome(
        &self,
        digest: Option<[u8; 32]>,
        operation_name: Option<&str>,
        reason: &str,
    ) -> Result<Option<Arc<str>>, Refusal> {
        let refusal = self.untrusted(digest, operation_name, reason);
        match self.mode {
            Mode::Enforce => Err(refusal),
            _ => Ok(None),
        }
    }

    /// Counts an untrusted operation and logs it (once per distinct document).
    fn untrusted(
        &self,
        digest: Option<[u8; 32]>,
        operation_name: Option<&str>,
        reason: &str,
    ) -> Refusal {
        self.untrusted.fetch_add(1, Ordering::Relaxed);
        let first_sighting = match digest {
            Some(digest) => {
                let mut logged = self.logged.lock().expect("logged lock");
                logged.len() < MAX_LOGGED && logged.insert(digest)
            }
            None => false,
        };
        if first_sighting {
            let id = digest.as_ref().map(format_id).unwrap_or_default();
            let operation = operation_name.unwrap_or("(unnamed)");
            match self.mode {
                Mode::Enforce => tracing::info!(
                    operation,
                    document_id = %id,
                    reason,
                    "refused an app operation outside the trusted documents"
                ),
                _ => tracing::warn!(
                    operation,
                    document_id = %id,
                    reason,
                    "an app operation outside the trusted documents (GOSPELIB_ROUTER_TRUSTED_DOCUMENTS=enforce would refuse it)"
                ),
            }
        }
        Refusal::not_trusted()
    }
}

/// The router's service with the trusted-documents check in front: a request the check refuses
/// is answered `OPERATION_NOT_TRUSTED` (HTTP 400) before anything else runs, or, an unknown
/// id sent alone, `PERSISTED_QUERY_NOT_FOUND` (as APQ answers it); a manifest id (or a trusted
/// text's remembered APQ hash) is replaced by its text (and its `persistedQuery` extension
/// dropped, so APQ never sees it).
///
/// The check comes before credentials are verified, so it tells partners by the kind of
/// credential they present: a request with an API key (or with credentials that do not parse)
/// is passed on untouched, and the router then refuses it (401) unless the key is a valid
/// partner's, whose requests run on the partner contract anyway.
pub struct TrustedService {
    inner: RouterService,
    documents: Arc<TrustedDocuments>,
}

impl TrustedService {
    pub fn new(inner: RouterService, documents: Arc<TrustedDocuments>) -> Self {
        Self { inner, documents }
    }

    pub fn documents(&self) -> &Arc<TrustedDocuments> {
        &self.documents
    }

    /// The request to pass on, or the answer refusing it.
    fn screen(
        &self,
        mut request: async_graphql::Request,
    ) -> Result<async_graphql::Request, ServiceResponse> {
        if self.documents.mode() == Mode::Off {
            return Ok(request);
        }
        let partner = matches!(
            credential(ForwardedHeaders::of(&request)),
            Ok(Credential::ApiKey(_)) | Err(_)
        );
        let id = TrustedDocuments::requested_id(&request);
        match self.documents.check(
            &request.query,
            id.as_deref(),
            request.operation_name.as_deref(),
            partner,
        ) {
            Ok(None) => Ok(request),
            Ok(Some(text)) => {
                request.query = text.to_string();
                request.extensions.remove("persistedQuery");
                Ok(request)
            }
            Err(refusal) => Err(self.refused(&refusal)),
        }
    }

    /// The answer to a request the trusted documents refuse: the 401 first when its
    /// credentials are bad too (a client must learn to sign in again before anything else).
    async fn refusal(
        &self,
        headers: Option<ForwardedHeaders>,
        refused: ServiceResponse,
    ) -> ServiceResponse {
        self.inner
            .credential_refusal(headers.as_ref())
            .await
            .unwrap_or(refused)
    }

    fn refused(&self, refusal: &Refusal) -> ServiceResponse {
        let version = self.inner.router.supergraph().version.to_string();
        let mut response = ServiceResponse::from_json(&json!({
            "errors": [{ "message": refusal.message, "extensions": { "code": refusal.code } }],
            "extensions": { "supergraphVersion": version },
        }));
        // A hash not found is answered as APQ answers it (its status by the kit's rule).
        if refusal.code == NOT_TRUSTED {
            response.status = Some(PublicStatusCode::BAD_REQUEST);
        }
        if let Ok(value) = PublicHeaderValue::from_str(&version) {
            response.headers.push((
                gospelib_kit::graphql_http::HeaderName::from_static(crate::http::VERSION_HEADER),
                value,
            ));
        }
        // Never kept by a cache (a GET's 200 under `application/json` would be): a hash refused
        // now may be a trusted document's once the manifest is re-read.
        response.headers.push((
            gospelib_kit::graphql_http::HeaderName::from_static("cache-control"),
            PublicHeaderValue::from_static("no-store"),
        ));
        response
    }
}

impl GraphQlService for TrustedService {
    fn call(&self, request: async_graphql::Request) -> BoxFuture<'_, ServiceResponse> {
        let headers = ForwardedHeaders::of(&request).cloned();
        match self.screen(request) {
            Ok(request) => self.inner.call(request),
            Err(refused) => Box::pin(self.refusal(headers, refused)),
        }
    }

    fn subscribe(
        &self,
        request: async_graphql::Request,
    ) -> BoxFuture<'_, Result<ServiceStream, ServiceResponse>> {
        let headers = ForwardedHeaders::of(&request).cloned();
        match self.screen(request) {
            Ok(request) => self.inner.subscribe(request),
            Err(refused) => Box::pin(async move { Err(self.refusal(headers, refused).await) }),
        }
    }

    fn call_incremental(
        &self,
        request: async_graphql::Request,
    ) -> BoxFuture<'_, Result<gospelib_kit::multipart::IncrementalResponse, ServiceResponse>> {
        let headers = ForwardedHeaders::of(&request).cloned();
        match self.screen(request) {
            Ok(request) => self.inner.call_incremental(request),
            Err(refused) => Box::pin(async move { Err(self.refusal(headers, refused).await) }),
        }
    }

    fn accept_connection(
        &self,
        headers: ForwardedHeaders,
    ) -> BoxFuture<'_, Result<Option<std::time::SystemTime>, ConnectionRefusal>> {
        self.inner.accept_connection(headers)
    }

    fn live_client(
        &self,
        peer: Option<std::net::SocketAddr>,
        headers: &gospelib_kit::graphql_http::PublicHeaderMap,
    ) -> Option<String> {
        self.inner.live_client(peer, headers)
    }
}

/// The registry's trusted-documents route beside its supergraph route:
/// `…/registry/supergraph` → `…/registry/trusted-documents`, `…/supergraph/7` →
/// `…/trusted-documents/7`. `None` for a URL of another shape.
pub fn registry_url(supergraph_url: &str) -> Option<String> {
    let (base, query) = match supergraph_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (supergraph_url, None),
    };
    let base = base.trim_end_matches('/');
    let replaced = if let Some(prefix) = base.strip_suffix("/supergraph") {
        format!("{prefix}/trusted-documents")
    } else {
        let (prefix, number) = base.rsplit_once('/')?;
        let prefix = prefix.strip_suffix("/supergraph")?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        format!("{prefix}/trusted-documents/{number}")
    };
    Some(match query {
        Some(query) => format!("{replaced}?{query}"),
        None => replaced,
    })
}

/// A manifest read from the registry, with its ETag and version number (when given).
pub struct FetchedManifest {
    pub manifest: Manifest,
    pub etag: Option<String>,
    pub number: Option<u64>,
}

/// The registry's manifest at `url`: `Ok(None)` when it still has the ETag `etag` (304).
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    etag: Option<&str>,
) -> anyhow::Result<Option<FetchedManifest>> {
    let Some(published) = crate::reload::fetch_published(client, url, etag).await? else {
        return Ok(None);
    };
    Ok(Some(FetchedManifest {
        manifest: Manifest::from_json(&published.sdl)?,
        etag: published.etag,
        number: published.number,
    }))
}

/// Polls the registry's manifest at `url` every `every` until the task is dropped: a new one
/// is swapped in; errors are logged and the current one stays. `since` is the one held: its
/// ETag and registry version, when known.
pub async fn poll_registry(
    documents: Arc<TrustedDocuments>,
    client: reqwest::Client,
    url: String,
    since: Held,
    every: Duration,
) {
    poll_registry_nudged(documents, client, url, since, every, None).await
}

/// The manifest a router holds from the registry: its ETag and version number (`None` each
/// when unknown: none fetched yet, or a registry that gives none).
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub etag: Option<String>,
    pub number: Option<u64>,
}

/// [`poll_registry`], also polling at once when `nudges` change
/// ([`crate::reload::follow_publications`]). A manifest of an older version than the one held
/// (a lagging replica's, a restored database's) is refused, as the supergraph's poller refuses
/// an older supergraph: apps' operations published since would be refused in `enforce`.
pub async fn poll_registry_nudged(
    documents: Arc<TrustedDocuments>,
    client: reqwest::Client,
    url: String,
    mut held: Held,
    every: Duration,
    mut nudges: Option<crate::reload::Nudges>,
) {
    loop {
        crate::reload::next_poll(every, &mut nudges).await;
        match fetch(&client, &url, held.etag.as_deref()).await {
            Ok(Some(fetched)) => {
                if let (Some(new), Some(current)) = (fetched.number, held.number)
                    && new < current
                {
                    tracing::error!(%url, new, current, "the registry served older trusted documents than the ones held; keeping them");
                } else {
                    tracing::info!(%url, documents = fetched.manifest.len(), "trusted documents reloaded");
                    documents.replace(fetched.manifest);
                    held.number = fetched.number.or(held.number);
                }
                // A refused manifest is not fetched again until the registry changes.
                held.etag = fetched.etag;
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%url, error = %format!("{error:#}"), "cannot read the trusted documents; keeping the current ones")
            }
        }
    }
}

/// The trusted documents of the file at `path` (`GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE`), and
/// the task that re-reads it every `every`.
pub fn from_file(
    mode: Mode,
    path: &Path,
    every: Duration,
) -> anyhow::Result<(Arc<TrustedDocuments>, tokio::task::JoinHandle<()>)> {
    use anyhow::Context;
    // Read once: the watcher compares later readings with this very text, so a change made
    // while starting is never taken for the text already loaded.
    let text = std::fs::read_to_string(path)
        .map_err(|error| io_error(path, error))
        .context("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE")?;
    let manifest = Manifest::from_json(&text).context("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE")?;
    let documents = start(mode, Some(manifest), &path.display().to_string())?;
    let watcher = tokio::spawn(watch_file(documents.clone(), path.to_owned(), text, every));
    Ok((documents, watcher))
}

/// Re-reads the manifest file every `every` until the task is dropped; a text other than
/// `loaded` (the one in force) and valid is swapped in, an invalid one refused (the current
/// one stays).
pub async fn watch_file(
    documents: Arc<TrustedDocuments>,
    path: PathBuf,
    loaded: String,
    every: Duration,
) {
    let mut current = Some(loaded);
    loop {
        tokio::time::sleep(every).await;
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "cannot read the trusted documents; keeping the current ones");
                continue;
            }
        };
        if current.as_deref() == Some(text.as_str()) {
            continue;
        }
        match Manifest::from_json(&text) {
            Ok(manifest) => {
                tracing::info!(path = %path.display(), documents = manifest.len(), "trusted documents reloaded");
                documents.replace(manifest);
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "refused the trusted documents; keeping the current ones")
            }
        }
        current = Some(text);
    }
}

/// The router's trusted documents at start-up: `mode` with `manifest` (what the source gave,
/// if anything; `origin` names it in the log). `enforce` without a manifest is refused: it
/// would refuse every app operation.
pub fn start(
    mode: Mode,
    manifest: Option<Manifest>,
    origin: &str,
) -> anyhow::Result<Arc<TrustedDocuments>> {
    match (mode, &manifest) {
        (Mode::Off, _) => return Ok(Arc::new(TrustedDocuments::off())),
        (Mode::Enforce, None) => anyhow::bail!(
            "GOSPELIB_ROUTER_TRUSTED_DOCUMENTS=enforce, but there is no manifest of trusted \
             documents ({origin}): give GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE, or publish a \
             version with `gospelib schema publish`"
        ),
        (Mode::Log, None) => {
            tracing::info!(
                origin,
                "no trusted documents yet: nothing is compared with them"
            )
        }
        (_, Some(manifest)) => {
            tracing::info!(
                mode = mode.as_str(),
                origin,
                documents = manifest.len(),
                "trusted documents"
            )
        }
    }
    Ok(Arc::new(TrustedDocuments::new(mode, manifest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const READING: &str = "# The reading view.\nquery Reading($id: ID!) {\n  passage(id: $id) {\n    id\n    text\n  }\n}\n";
    const READING_AGAIN: &str =
        "query Reading( $id : ID! ) { passage( id: $id ) { id, text } } # same, other layout";
    const OTHER: &str = "query Reading($id: ID!) { passage(id: $id) { id } }";
    const PARTNER: &str = "query Chapter { chapter(bookId: \"john\", number: 3) { reference } }";

    fn manifest() -> Manifest {
        Manifest::from_documents([("web/Reading.graphql", READING)]).unwrap()
    }

    fn documents(mode: Mode) -> TrustedDocuments {
        TrustedDocuments::new(mode, Some(manifest()))
    }

    /// The apps' operations in folders of their own are trusted too, as the registry's check
    /// reads them; partners' are not.
    #[test]
    fn the_manifest_reads_the_apps_folders_through() {
        let root = std::env::temp_dir().join(format!("gl-manifest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("web/reader")).unwrap();
        std::fs::create_dir_all(root.join("partner")).unwrap();
        std::fs::write(root.join("web/reader/Reading.graphql"), READING).unwrap();
        std::fs::write(root.join("partner/Chapter.graphql"), PARTNER).unwrap();
        let manifest = Manifest::from_operations_dir(&root).unwrap();
        assert_eq!(manifest.len(), 1);
        assert_eq!(manifest.ids(), self::manifest().ids());
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn hex(id: &str) -> &str {
        id.strip_prefix(ID_PREFIX).unwrap()
    }

    #[test]
    fn normalization_ignores_layout_and_comments_but_not_tokens() {
        assert_eq!(
            normalize(READING).unwrap(),
            "query Reading($id:ID!){passage(id:$id){id text}}"
        );
        assert_eq!(
            document_id(READING).unwrap(),
            document_id(READING_AGAIN).unwrap()
        );
        assert_ne!(document_id(READING).unwrap(), document_id(OTHER).unwrap());
        // Another name, argument or string is another document.
        assert_ne!(
            document_id("{ a(x: \"a b\") }").unwrap(),
            document_id("{ a(x: \"a  b\") }").unwrap()
        );
        assert_ne!(
            document_id("query A { a }").unwrap(),
            document_id("query B { a }").unwrap()
        );
        let id = document_id(READING).unwrap();
        assert!(id.starts_with("sha256:") && id.len() == 7 + 64, "{id}");
        // Normalizing is idempotent: the manifest's texts are their own normal form.
        let normal = normalize(READING).unwrap();
        assert_eq!(normalize(&normal).unwrap(), normal);
        assert_eq!(id, format_id(&Sha256::digest(normal.as_bytes()).into()));
        assert!(normalize("{ a; }").is_err());
    }

    #[test]
    fn the_manifest_round_trips_through_json_and_checks_its_ids() {
        let manifest = manifest();
        let json = manifest.to_json();
        assert_eq!(json["format"], FORMAT);
        let id = document_id(READING).unwrap();
        assert_eq!(json["documents"][&id], normalize(READING).unwrap());
        assert_eq!(Manifest::from_value(&json).unwrap(), manifest);
        assert_eq!(manifest.ids(), std::slice::from_ref(&id));
        assert!(manifest.get(&id).is_some() && manifest.get(hex(&id)).is_some());

        let forged = json!({ "format": FORMAT, "documents": { id.clone(): OTHER } });
        let error = Manifest::from_value(&forged).unwrap_err().to_string();
        assert!(error.contains("is not the id of its document"), "{error}");
        let bare = json!({ "format": FORMAT, "documents": { hex(&id): READING } });
        assert!(Manifest::from_value(&bare).is_err());
        let other = json!({ "format": "apollo-persisted-query-manifest", "documents": {} });
        assert!(Manifest::from_value(&other).is_err());
        // A non-normalized text under the right id is accepted, and kept normalized.
        let loose = json!({ "format": FORMAT, "documents": { id.clone(): READING } });
        assert_eq!(Manifest::from_value(&loose).unwrap(), manifest);
    }

    #[test]
    fn the_apps_operations_are_the_committed_web_and_mobile_ones() {
        let operations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-tests/operations");
        let manifest = Manifest::from_operations_dir(&operations).unwrap();
        let count = |app: &str| {
            std::fs::read_dir(operations.join(app))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "graphql")
                })
                .count()
        };
        assert_eq!(manifest.len(), count("web") + count("mobile"));
        assert!(count("partner") > 0);
        for entry in std::fs::read_dir(operations.join("partner")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "graphql") {
                let id = document_id(&std::fs::read_to_string(&path).unwrap()).unwrap();
                assert!(manifest.get(&id).is_none(), "{} is trusted", path.display());
            }
        }
        assert!(
            Manifest::from_operations_dir(Path::new("/nonexistent"))
                .unwrap()
                .is_empty()
        );
    }

    /// Texts checked again are answered from the kept digests, each as it was the first time;
    /// a text too long to keep is not kept (here, longer than the manifest's documents may be
    /// as sent, it is none of them).
    #[test]
    fn texts_checked_again_are_answered_alike_from_the_kept_digests() {
        let documents = documents(Mode::Enforce);
        let long = format!("{READING}{}", " ".repeat(LONGEST_TEXT_KEPT));
        for _ in 0..3 {
            assert_eq!(documents.check(READING, None, None, false), Ok(None));
            assert_eq!(documents.check(READING_AGAIN, None, None, false), Ok(None));
            assert!(documents.check(OTHER, None, None, false).is_err());
            assert!(documents.check("{ a; }", None, None, false).is_err());
            assert!(documents.check(&long, None, None, false).is_err());
        }
        assert_eq!(documents.digests.lock().unwrap().len(), 4);
    }

    /// A long text is normalized only when it may be one of the documents as sent (its
    /// longest, with layout and comments): a 2 MiB body of punctuation or strings is not
    /// normalized at all, and a long trusted document sent with layout still is.
    #[test]
    fn a_long_text_is_normalized_only_if_it_may_be_a_trusted_document() {
        let big = format!(
            "query Big {{ {} }}",
            (0..4_000)
                .map(|n| format!("f{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let manifest = Manifest::from_documents([("big", big.as_str())]).unwrap();
        let longest = manifest.longest_as_sent();
        assert!(
            longest > LONGEST_TEXT_KEPT && longest < 1024 * 1024,
            "{longest}"
        );
        let documents = TrustedDocuments::new(Mode::Enforce, Some(manifest));
        let manifest = documents.manifest().unwrap();
        let laid_out = big.replace(' ', "\n    ");
        assert!(laid_out.len() > LONGEST_TEXT_KEPT);
        assert_eq!(
            documents.text_digest(&laid_out, &manifest),
            Some(digest_of_normalized(&normalize(&big).unwrap()))
        );
        assert_eq!(documents.check(&laid_out, None, None, false), Ok(None));
        for flood in [
            "{}".repeat(1024 * 1024),
            format!("{{a(b:[{}])}}", "\"\" ".repeat(700_000)),
        ] {
            assert!(normalize(&flood).is_ok(), "it tokenizes");
            assert_eq!(documents.text_digest(&flood, &manifest), None);
            assert!(documents.check(&flood, None, None, false).is_err());
        }
    }

    #[test]
    fn off_passes_everything() {
        let documents = documents(Mode::Off);
        let id = document_id(READING).unwrap();
        for (query, id) in [(OTHER, None), ("", Some(id.as_str())), ("", Some("00"))] {
            assert_eq!(documents.check(query, id, None, false), Ok(None));
        }
        assert_eq!(documents.untrusted_count(), 0);
    }

    #[test]
    fn enforce_holds_app_callers_to_the_manifest() {
        let documents = documents(Mode::Enforce);
        let id = document_id(READING).unwrap();
        let normal: Arc<str> = normalize(READING).unwrap().into();
        // By id, with or without the prefix: the manifest's text.
        assert_eq!(
            documents.check("", Some(&id), None, false),
            Ok(Some(normal.clone()))
        );
        assert_eq!(
            documents.check("", Some(&hex(&id).to_ascii_uppercase()), None, false),
            Ok(Some(normal.clone()))
        );
        // By text, in any layout.
        assert_eq!(documents.check(READING, None, None, false), Ok(None));
        assert_eq!(documents.check(READING_AGAIN, None, None, false), Ok(None));
        // The text with its own id.
        assert_eq!(
            documents.check(READING_AGAIN, Some(&id), None, false),
            Ok(Some(normal))
        );
        // Anything else is refused.
        let refused = Err(Refusal::not_trusted());
        assert_eq!(
            documents.check(OTHER, None, Some("Reading"), false),
            refused
        );
        assert_eq!(documents.check(OTHER, Some(&id), None, false), refused);
        let unknown = document_id(OTHER).unwrap();
        let not_found = Err(Refusal::persisted_query_not_found());
        assert_eq!(documents.check("", Some(&unknown), None, false), not_found);
        assert_eq!(
            documents.check("", Some("not a hash"), None, false),
            not_found
        );
        assert_eq!(documents.check("{ a; }", None, None, false), refused);
        assert_eq!(documents.untrusted_count(), 3);
        let refusal = documents.check(OTHER, None, None, false).unwrap_err();
        assert_eq!(refusal.code, "OPERATION_NOT_TRUSTED");
        assert_eq!(
            refusal.message,
            "only the apps' registered operations are accepted here"
        );
    }

    #[test]
    fn enforce_refuses_an_apq_registration_of_an_unknown_text() {
        let documents = documents(Mode::Enforce);
        // APQ's hash is the sha256 of the text as sent.
        let apq = |text: &str| crate::apq::hash_of(text);
        assert_eq!(
            documents.check(OTHER, Some(&apq(OTHER)), None, false),
            Err(Refusal::not_trusted())
        );
        // A bare APQ hash nobody vouched for is not looked up: the client is asked for the
        // text (as APQ asks), and never runs what APQ may hold under it.
        let not_found = Err(Refusal::persisted_query_not_found());
        assert_eq!(
            documents.check("", Some(&apq(OTHER)), None, false),
            not_found
        );
        assert_eq!(
            documents.check("", Some(&apq(READING)), None, false),
            not_found
        );
        // Registering a trusted text is harmless: it goes on to APQ, and its hash sent alone
        // afterwards runs the manifest's text (Apollo's link sends the hash first each time).
        assert_eq!(
            documents.check(READING, Some(&apq(READING)), None, false),
            Ok(None)
        );
        let normal: Arc<str> = normalize(READING).unwrap().into();
        assert_eq!(
            documents.check("", Some(&apq(READING)), None, false),
            Ok(Some(normal))
        );
        // Endless layouts of one document push out only that document's older hashes.
        let layouts: Vec<String> = (0..ALIASES_PER_DOCUMENT + 2)
            .map(|n| format!("{READING}{}", " ".repeat(n + 1)))
            .collect();
        for layout in &layouts {
            assert_eq!(
                documents.check(layout, Some(&apq(layout)), None, false),
                Ok(None)
            );
        }
        let known = |text: &str| documents.check("", Some(&apq(text)), None, false).is_ok();
        assert!(!known(&layouts[0]) && !known(&layouts[1]) && !known(READING));
        assert!(layouts[2..].iter().all(|layout| known(layout)));
        // One in use is kept: the least recently used goes.
        assert!(known(&layouts[2]));
        let newer = format!("{READING}\n");
        assert_eq!(
            documents.check(&newer, Some(&apq(&newer)), None, false),
            Ok(None)
        );
        assert!(known(&layouts[2]) && !known(&layouts[3]) && known(&newer));
        let again: Arc<str> = normalize(READING_AGAIN).unwrap().into();
        assert_eq!(
            documents.check(READING_AGAIN, Some(&apq(READING_AGAIN)), None, false),
            Ok(None)
        );
        assert_eq!(
            documents.check("", Some(&apq(READING_AGAIN)), None, false),
            Ok(Some(again))
        );
        // A trusted text under another text's hash teaches nothing.
        assert_eq!(
            documents.check(READING_AGAIN, Some(&apq(OTHER)), None, false),
            Ok(None)
        );
        assert_eq!(
            documents.check("", Some(&apq(OTHER)), None, false),
            not_found
        );
        // Partners keep APQ as it is.
        assert_eq!(
            documents.check("", Some(&apq(PARTNER)), None, true),
            Ok(None)
        );
    }

    #[test]
    fn partners_may_send_any_operation_in_every_mode() {
        for mode in [Mode::Off, Mode::Log, Mode::Enforce] {
            let documents = documents(mode);
            assert_eq!(documents.check(PARTNER, None, None, true), Ok(None));
            assert_eq!(documents.check(OTHER, Some("00"), None, true), Ok(None));
            let id = document_id(READING).unwrap();
            // A manifest id is the apps': a partner's goes to APQ untouched.
            assert_eq!(documents.check("", Some(&id), None, true), Ok(None));
            assert_eq!(documents.untrusted_count(), 0);
        }
    }

    #[test]
    fn log_passes_and_counts_what_enforce_would_refuse() {
        let documents = documents(Mode::Log);
        let id = document_id(READING).unwrap();
        let normal: Arc<str> = normalize(READING).unwrap().into();
        assert_eq!(
            documents.check("", Some(&id), None, false),
            Ok(Some(normal))
        );
        assert_eq!(documents.check(READING_AGAIN, None, None, false), Ok(None));
        assert_eq!(documents.untrusted_count(), 0);
        assert_eq!(
            documents.check(OTHER, None, Some("Reading"), false),
            Ok(None)
        );
        assert_eq!(
            documents.check(OTHER, None, Some("Reading"), false),
            Ok(None)
        );
        let unknown = document_id(OTHER).unwrap();
        assert_eq!(documents.check("", Some(&unknown), None, false), Ok(None));
        assert_eq!(documents.untrusted_count(), 3);
    }

    #[test]
    fn without_a_manifest_log_is_silent_and_enforce_is_shut() {
        let log = TrustedDocuments::new(Mode::Log, None);
        assert_eq!(log.check(OTHER, None, None, false), Ok(None));
        assert_eq!(log.untrusted_count(), 0);
        let enforce = TrustedDocuments::new(Mode::Enforce, None);
        assert!(enforce.check(READING, None, None, false).is_err());
        assert_eq!(enforce.check(READING, None, None, true), Ok(None));
        // A manifest swapped in is used at once.
        enforce.replace(manifest());
        assert_eq!(enforce.check(READING, None, None, false), Ok(None));
        assert!(start(Mode::Enforce, None, "test").is_err());
        assert_eq!(start(Mode::Off, None, "test").unwrap().mode(), Mode::Off);
    }

    #[test]
    fn the_requested_id_is_the_persisted_query_hash_of_version_1() {
        let request = |extensions: serde_json::Value| {
            let body = json!({ "query": "", "extensions": extensions });
            serde_json::from_value::<async_graphql::Request>(body).unwrap()
        };
        let id = document_id(READING).unwrap();
        let with = request(json!({ "persistedQuery": { "version": 1, "sha256Hash": id } }));
        assert_eq!(TrustedDocuments::requested_id(&with), Some(id.clone()));
        let v2 = request(json!({ "persistedQuery": { "version": 2, "sha256Hash": id } }));
        assert_eq!(TrustedDocuments::requested_id(&v2), None);
        assert_eq!(TrustedDocuments::requested_id(&request(json!({}))), None);
        // A top-level `documentId` does not survive the request type.
        let top = json!({ "query": "", "documentId": id });
        let parsed = serde_json::from_value::<async_graphql::Request>(top).unwrap();
        assert_eq!(TrustedDocuments::requested_id(&parsed), None);
    }

    #[test]
    fn the_registry_url_sits_beside_the_supergraphs() {
        assert_eq!(
            registry_url("http://r:4001/registry/supergraph").as_deref(),
            Some("http://r:4001/registry/trusted-documents")
        );
        assert_eq!(
            registry_url("http://r:4001/registry/supergraph/7").as_deref(),
            Some("http://r:4001/registry/trusted-documents/7")
        );
        assert_eq!(registry_url("http://r/other.graphql"), None);
        assert_eq!(registry_url("http://r/registry/supergraph/x"), None);
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse(" Enforce "), Ok(Mode::Enforce));
        assert_eq!(Mode::parse("log"), Ok(Mode::Log));
        assert_eq!(Mode::parse("off"), Ok(Mode::Off));
        assert!(Mode::parse("on").is_err());
        assert_eq!(Mode::default(), Mode::Log);
    }
}

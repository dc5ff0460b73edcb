//! Published versions in PostgreSQL (`registry.versions`): immutable, numbered 1, 2, 3… in the
//! order they were published; a rollback is a publish of an older version's content under a new
//! number.
//!
//! Publishing is a compare-and-swap: the caller names the version its check ran against (the
//! latest when it looked), and version N+1 is stored only if N is still the latest. Otherwise
//! nothing is written and [`StoreError::Conflict`] tells the caller to check again. Publishers
//! take a table lock, so the second of two waits for the first to commit and then sees it.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::compose::SubgraphSdl;

/// Why the registry store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("registry database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("version {0} does not exist")]
    NoSuchVersion(i32),
    /// Another version was published after the check ran: nothing was written.
    #[error(
        "{} was published after the check ran against {}: nothing was written; \
         check again against the latest version",
        describe_version(*latest),
        describe_version(*checked)
    )]
    Conflict {
        /// The latest version when the check ran (None: nothing was published then).
        checked: Option<i32>,
        /// The latest version now.
        latest: Option<i32>,
    },
}

/// `version N`, or what no version at all means.
pub(crate) fn describe_version(number: Option<i32>) -> String {
    match number {
        Some(number) => format!("version {number}"),
        None => "no version (an empty registry)".to_owned(),
    }
}

/// A version to publish.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub subgraphs: Vec<SubgraphSdl>,
    pub supergraph: String,
    pub api_schema: String,
    /// Each contract's supergraph SDL, by contract name.
    pub contracts: BTreeMap<String, String>,
    pub message: String,
    /// Why a failing check was overridden, when it was.
    pub forced_reason: Option<String>,
    pub check_report: Option<serde_json::Value>,
    pub rollback_of: Option<i32>,
    /// The manifest of the apps' trusted documents published with it
    /// (`{"format": "trusted-documents/1", "documents": {…}}`), if any.
    pub trusted_documents: Option<serde_json::Value>,
}

/// A published version, whole.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub number: i32,
    pub subgraphs: Vec<SubgraphSdl>,
    pub supergraph: String,
    pub supergraph_hash: String,
    pub api_schema: String,
    pub api_schema_hash: String,
    pub contracts: BTreeMap<String, String>,
    pub message: String,
    pub forced_reason: Option<String>,
    pub rollback_of: Option<i32>,
    /// RFC 3339, UTC.
    pub published_at: String,
    /// The apps' trusted documents published with it (none for versions published before
    /// manifests were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_documents: Option<serde_json::Value>,
}

/// One line of `history`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct VersionSummary {
    pub number: i32,
    pub supergraph_hash: String,
    pub api_schema_hash: String,
    pub message: String,
    pub forced_reason: Option<String>,
    pub rollback_of: Option<i32>,
    pub published_at: String,
}

type VersionRow = (
    i32,
    Json<Vec<SubgraphSdl>>,
    String,
    String,
    String,
    String,
    Json<BTreeMap<String, String>>,
    String,
    Option<String>,
    Option<i32>,
    String,
    Option<Json<serde_json::Value>>,
);

const PUBLISHED_AT: &str =
    r#"to_char(published_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#;

/// The sha256 of a text, in hex: how versions name their supergraph and API schema.
pub fn content_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The registry's versions.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The newest version, if any was published.
    pub async fn latest(&self) -> Result<Option<Version>, StoreError> {
        self.fetch_one("ORDER BY number DESC LIMIT 1", None).await
    }

    /// Version `number`, if it exists.
    pub async fn get(&self, number: i32) -> Result<Option<Version>, StoreError> {
        self.fetch_one("WHERE number = $1", Some(number)).await
    }

    /// Version `number`, or [`StoreError::NoSuchVersion`].
    pub async fn require(&self, number: i32) -> Result<Version, StoreError> {
        self.get(number)
            .await?
            .ok_or(StoreError::NoSuchVersion(number))
    }

    async fn fetch_one(
        &self,
        clause: &str,
        number: Option<i32>,
    ) -> Result<Option<Version>, StoreError> {
        let sql = format!(
            "SELECT number, subgraphs, supergraph, supergraph_hash, api_schema, api_schema_hash, \
             contracts, message, forced_reason, rollback_of, {PUBLISHED_AT}, trusted_documents \
             FROM registry.versions {clause}"
        );
        let mut query = sqlx::query_as::<_, VersionRow>(&sql);
        if let Some(number) = number {
            query = query.bind(number);
        }
        Ok(query.fetch_optional(&self.pool).await?.map(version_of_row))
    }

    /// Every version, newest first.
    pub async fn history(&self) -> Result<Vec<VersionSummary>, StoreError> {
        let sql = format!(
            "SELECT number, supergraph_hash, api_schema_hash, message, forced_reason, \
             rollback_of, {PUBLISHED_AT} AS published_at \
             FROM registry.versions ORDER BY number DESC"
        );
        Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
    }

    /// The number of the newest version, if any was published.
    pub async fn latest_number(&self) -> Result<Option<i32>, StoreError> {
        let (number,): (Option<i32>,) = sqlx::query_as("SELECT MAX(number) FROM registry.versions")
            .fetch_one(&self.pool)
            .await?;
        Ok(number)
    }

    /// Stores `version` as number `checked + 1`, if version `checked` (None: no version at all)
    /// is still the latest, and returns it; otherwise writes nothing and fails with
    /// [`StoreError::Conflict`].
    pub async fn publish(
        &self,
        version: NewVersion,
        checked: Option<i32>,
    ) -> Result<Version, StoreError> {
        let number = checked.unwrap_or(0) + 1;
        match self.insert_if_latest(&version, checked, number).await {
            Ok(true) => self.require(number).await,
            Ok(false) => Err(self.conflict(checked).await),
            // Someone stored the same number without the lock: the same conflict.
            Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
                Err(self.conflict(checked).await)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Inserts `version` as `number` when the latest is still `checked`; false when it is not.
    async fn insert_if_latest(
        &self,
        version: &NewVersion,
        checked: Option<i32>,
        number: i32,
    ) -> Result<bool, sqlx::Error> {
        let mut transaction = self.pool.begin().await?;
        // Readers go on; a second publisher waits here until this one commits, and its
        // insert below then sees the version this one stored.
        sqlx::query("LOCK TABLE registry.versions IN EXCLUSIVE MODE")
            .execute(&mut *transaction)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO registry.versions (number, subgraphs, supergraph, supergraph_hash, \
             api_schema, api_schema_hash, contracts, message, forced_reason, check_report, \
             rollback_of, trusted_documents) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $13 \
             WHERE (SELECT COALESCE(MAX(number), 0) FROM registry.versions) = $12",
        )
        .bind(number)
        .bind(Json(&version.subgraphs))
        .bind(&version.supergraph)
        .bind(content_hash(&version.supergraph))
        .bind(&version.api_schema)
        .bind(content_hash(&version.api_schema))
        .bind(Json(&version.contracts))
        .bind(&version.message)
        .bind(&version.forced_reason)
        .bind(version.check_report.as_ref().map(Json))
        .bind(version.rollback_of)
        .bind(checked.unwrap_or(0))
        .bind(version.trusted_documents.as_ref().map(Json))
        .execute(&mut *transaction)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            transaction.commit().await?;
        } else {
            transaction.rollback().await?;
        }
        Ok(inserted)
    }

    /// The conflict of a publish checked against `checked`, naming the latest version now.
    async fn conflict(&self, checked: Option<i32>) -> StoreError {
        match self.latest_number().await {
            Ok(latest) => StoreError::Conflict { checked, latest },
            Err(error) => error,
        }
    }
}

fn version_of_row(row: VersionRow) -> Version {
    let (
        number,
        Json(subgraphs),
        supergraph,
        supergraph_hash,
        api_schema,
        api_schema_hash,
        Json(contracts),
        message,
        forced_reason,
        rollback_of,
        published_at,
        trusted_documents,
    ) = row;
    Version {
        number,
        subgraphs,
        supergraph,
        supergraph_hash,
        api_schema,
        api_schema_hash,
        contracts,
        message,
        forced_reason,
        rollback_of,
        published_at,
        trusted_documents: trusted_documents.map(|Json(manifest)| manifest),
    }
}

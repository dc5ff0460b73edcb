//! Publishing and rolling back, safely under concurrency: each is a check against the latest
//! version followed by a compare-and-swap that stores the next version only if the version
//! checked is still the latest ([`Store::publish`]).
//!
//! The two steps are separate so the caller can show the report in between:
//! [`check_publish`] or [`check_rollback`] gives a [`CheckedProposal`], whose
//! [`CheckedProposal::publish`] stores it, or refuses it (a failing check without a reason to
//! force it), or does nothing (the latest version already has this supergraph). When someone
//! else published in between, nothing is written and [`PublishError::Conflict`] says to check
//! again.

use std::collections::BTreeMap;

use crate::check::{
    Baseline, CheckError, CheckReport, ClientDocument, KnownOperation, check, check_supergraph,
};
use crate::compose::{InvalidSupergraph, SubgraphSdl, api_schema};
use crate::contracts::{CONTRACTS, ContractError, contract_supergraph};
use crate::store::{NewVersion, Store, StoreError, Version, describe_version};

/// Why a publish or rollback did not happen (as opposed to being refused by its check).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Another version was published after the check ran against `checked`: nothing of this
    /// proposal was written; check again against the latest version.
    #[error(
        "{} was published after this check ran against {}: nothing was written; \
         run the check again against the latest version",
        describe_version(*latest),
        describe_version(*checked)
    )]
    Conflict {
        checked: Option<i32>,
        latest: Option<i32>,
    },
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("nothing to publish: composition failed")]
    NotComposed,
    #[error("a reason to force a failing check must say something")]
    EmptyReason,
    #[error(transparent)]
    Contract(#[from] ContractError),
    #[error(transparent)]
    InvalidSupergraph(#[from] InvalidSupergraph),
}

impl From<StoreError> for PublishError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { checked, latest } => Self::Conflict { checked, latest },
            other => Self::Store(other),
        }
    }
}

/// What [`CheckedProposal::publish`] did.
#[derive(Debug)]
pub enum PublishOutcome {
    /// Stored as this new version.
    Published(Box<Version>),
    /// The latest version (this number) already has this supergraph: nothing was written.
    Unchanged(i32),
    /// The check failed and no reason to force it was given: nothing was written.
    Refused,
}

/// A proposal checked against the latest version, publishable while that is still the latest.
#[derive(Debug)]
pub struct CheckedProposal {
    pub report: CheckReport,
    /// The latest version when the check ran (None: nothing was published yet).
    pub checked_against: Option<Version>,
    subgraphs: Vec<SubgraphSdl>,
    rollback_of: Option<i32>,
    /// The apps' trusted documents to publish with it (a rollback: the old version's, unless
    /// the publisher gives today's, as `gospelib schema rollback` does).
    trusted_documents: Option<serde_json::Value>,
}

impl CheckedProposal {
    /// The number of the version the check ran against.
    pub fn checked_number(&self) -> Option<i32> {
        self.checked_against.as_ref().map(|version| version.number)
    }

    /// The version a rollback brings back, for a rollback.
    pub fn rollback_of(&self) -> Option<i32> {
        self.rollback_of
    }

    /// Publishes `manifest` (the apps' trusted documents, `trusted-documents/1`) with the
    /// proposal. A rollback carries the manifest of the version it brings back unless given
    /// another: the apps' operations of today, which its check protected, are the ones to
    /// trust.
    pub fn with_trusted_documents(mut self, manifest: serde_json::Value) -> Self {
        self.trusted_documents = Some(manifest);
        self
    }

    /// The trusted documents the proposal publishes, if any.
    pub fn trusted_documents(&self) -> Option<&serde_json::Value> {
        self.trusted_documents.as_ref()
    }

    /// What routers would load from this proposal once published: its supergraph (named
    /// `supergraph`) and each contract's, by name; empty when it did not compose.
    pub fn supergraphs(&self) -> Result<Vec<(String, String)>, PublishError> {
        let Some(supergraph) = &self.report.supergraph else {
            return Ok(Vec::new());
        };
        let mut all = vec![("supergraph".to_owned(), supergraph.clone())];
        all.extend(self.contracts(supergraph)?);
        Ok(all)
    }

    /// Each contract of `supergraph`, as the check judged them: a contract that keeps nothing
    /// and that nobody had (the check left it out) is not stored, so what the check passed
    /// publishes.
    fn contracts(&self, supergraph: &str) -> Result<BTreeMap<String, String>, ContractError> {
        let mut contracts = BTreeMap::new();
        for (name, tag) in CONTRACTS {
            match contract_supergraph(supergraph, name, tag) {
                Ok(contract) => {
                    contracts.insert((*name).to_owned(), contract);
                }
                Err(ContractError::Empty { .. }) if !self.report.contracts.contains_key(*name) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(contracts)
    }

    /// Stores the proposal as the next version, if the version it was checked against is still
    /// the latest. A failing check is refused unless `forced_reason` says why to publish
    /// anyway; a supergraph the checked version already has, with the same trusted documents,
    /// is not stored again.
    pub async fn publish(
        self,
        store: &Store,
        message: &str,
        forced_reason: Option<&str>,
    ) -> Result<PublishOutcome, PublishError> {
        let Some(supergraph) = self.report.supergraph.clone() else {
            return Err(PublishError::NotComposed);
        };
        let contracts = self.contracts(&supergraph)?;
        // The same supergraph with contracts built by other rules (a fix in this code) is a
        // change: the routers serve the stored contracts.
        if let Some(latest) = &self.checked_against
            && latest.supergraph == supergraph
            && latest.trusted_documents == self.trusted_documents
            && latest.contracts == contracts
        {
            // Unchanged only if it is still the latest: another publish since the check means
            // the routers serve something else now, which this release must not report as its.
            let now = store.latest_number().await.map_err(PublishError::Store)?;
            if now != Some(latest.number) {
                return Err(PublishError::Conflict {
                    checked: Some(latest.number),
                    latest: now,
                });
            }
            return Ok(PublishOutcome::Unchanged(latest.number));
        }
        if forced_reason.is_some_and(|reason| reason.trim().is_empty()) {
            return Err(PublishError::EmptyReason);
        }
        if !self.report.passed && forced_reason.is_none() {
            return Ok(PublishOutcome::Refused);
        }
        let api_schema = match &self.report.api_schema {
            Some(api) => api.clone(),
            None => api_schema(&supergraph)?,
        };
        let check_report = serde_json::to_value(&self.report).ok();
        let checked = self.checked_number();
        let version = store
            .publish(
                NewVersion {
                    subgraphs: self.subgraphs,
                    supergraph,
                    api_schema,
                    contracts,
                    message: message.to_owned(),
                    forced_reason: forced_reason.map(str::to_owned),
                    check_report,
                    rollback_of: self.rollback_of,
                    trusted_documents: self.trusted_documents,
                },
                checked,
            )
            .await?;
        Ok(PublishOutcome::Published(Box::new(version)))
    }
}

/// Checks the proposed `subgraphs` against the latest published version, protecting the client
/// `documents` and the operations routers `recorded`.
pub async fn check_publish(
    store: &Store,
    subgraphs: Vec<SubgraphSdl>,
    documents: &[ClientDocument],
    recorded: Vec<KnownOperation>,
) -> Result<CheckedProposal, PublishError> {
    let latest = store.latest().await?;
    let baseline = latest.as_ref().map(Baseline::of_version);
    let report = check(&subgraphs, baseline.as_ref(), documents, recorded)?;
    Ok(CheckedProposal {
        report,
        checked_against: latest,
        subgraphs,
        rollback_of: None,
        trusted_documents: None,
    })
}

/// Checks a rollback to version `to`: its supergraph against the latest version's, as a
/// publish would be checked, protecting the same operations.
pub async fn check_rollback(
    store: &Store,
    to: i32,
    documents: &[ClientDocument],
    recorded: Vec<KnownOperation>,
) -> Result<CheckedProposal, PublishError> {
    let target = store.require(to).await?;
    let latest = store.latest().await?;
    let baseline = latest.as_ref().map(Baseline::of_version);
    let report = check_supergraph(&target.supergraph, baseline.as_ref(), documents, recorded)?;
    Ok(CheckedProposal {
        report,
        checked_against: latest,
        subgraphs: target.subgraphs,
        rollback_of: Some(to),
        trusted_documents: target.trusted_documents,
    })
}

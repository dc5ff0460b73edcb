//! `schema check`: is the proposed supergraph safe to publish?
//!
//! In order: compose the subgraphs (errors end the check); diff the new API schema against the
//! baseline's, each change classified; find the known client operations (the documents under
//! `client-tests/operations/` and those the router recorded) that touch what each breaking
//! change affects; make sure every client document still validates against the new schema.
//! The check fails when composition fails, a breaking change affects a known operation, or a
//! client document no longer validates. Breaking changes nobody uses pass, listed as such.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use apollo_compiler::Schema;
use apollo_compiler::validation::Valid;
use serde::Serialize;

use crate::compose::{CompositionIssue, SubgraphSdl, api_schema, compose};
use crate::diff::{Change, Criticality, diff};
use crate::usage::{OperationUsage, UsageError, documents_in_dir, operation_usage};

/// A client operation the check protects.
#[derive(Debug, Clone, Serialize)]
pub struct KnownOperation {
    /// Where it comes from: a file under `client-tests/operations/`, or `router:<hash>`.
    pub source: String,
    pub name: String,
    /// How often the router saw it (None for client documents).
    pub count: Option<u64>,
    pub coordinates: BTreeSet<String>,
}

impl From<OperationUsage> for KnownOperation {
    fn from(usage: OperationUsage) -> Self {
        Self {
            source: usage.source,
            name: usage.name,
            count: None,
            coordinates: usage.coordinates,
        }
    }
}

/// A client document, as text, with where it lives.
#[derive(Debug, Clone)]
pub struct ClientDocument {
    pub source: String,
    pub text: String,
}

/// The client documents under `dir` (every `*.graphql`, recursively, in path order).
pub fn client_documents(dir: &std::path::Path) -> Result<Vec<ClientDocument>, UsageError> {
    Ok(documents_in_dir(dir)?
        .into_iter()
        .map(|(source, text)| ClientDocument { source, text })
        .collect())
}

/// What the check compares the proposal with.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// e.g. `version 7`, `schema/baseline.graphql`.
    pub label: String,
    pub supergraph: String,
}

/// One change and the operations it breaks.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedChange {
    #[serde(flatten)]
    pub change: Change,
    /// `name (source)` of each known operation it breaks; empty for harmless changes.
    pub breaks: Vec<String>,
}

/// A client document that does not validate against the proposed schema.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidDocument {
    pub source: String,
    pub error: String,
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub passed: bool,
    pub against: Option<String>,
    pub composition_errors: Vec<CompositionIssue>,
    pub changes: Vec<CheckedChange>,
    pub invalid_documents: Vec<InvalidDocument>,
    pub known_operations: usize,
    /// The proposal's supergraph, when it composed.
    #[serde(skip)]
    pub supergraph: Option<String>,
    #[serde(skip)]
    pub api_schema: Option<String>,
}

/// Why the check could not run at all (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the baseline ({label}) is not a valid supergraph: {message}")]
    BadBaseline { label: String, message: String },
    #[error("the proposed supergraph has no valid API schema: {0}")]
    BadProposal(String),
}

/// Runs the check of `subgraphs` against `baseline`, protecting the client `documents` and
/// the operations the router `recorded`.
pub fn check(
    subgraphs: &[SubgraphSdl],
    baseline: Option<&Baseline>,
    documents: &[ClientDocument],
    recorded: Vec<KnownOperation>,
) -> Result<CheckReport, CheckError> {
    let supergraph = match compose(subgraphs) {
        Ok(supergraph) => supergraph,
        Err(failure) => {
            return Ok(CheckReport {
                passed: false,
                against: baseline.map(|b| b.label.clone()),
                composition_errors: failure.issues,
                changes: Vec::new(),
                invalid_documents: Vec::new(),
                known_operations: 0,
                supergraph: None,
                api_schema: None,
            });
        }
    };
    let new_api = api_schema(&supergraph).map_err(|e| CheckError::BadProposal(e.0))?;
    let new_schema = parse_api(&new_api).map_err(CheckError::BadProposal)?;
    let old_schema = match baseline {
        Some(baseline) => {
            let bad = |message: String| CheckError::BadBaseline {
                label: baseline.label.clone(),
                message,
            };
            let old_api = api_schema(&baseline.supergraph).map_err(|e| bad(e.0))?;
            Some(parse_api(&old_api).map_err(bad)?)
        }
        None => None,
    };

    // Client documents: each must validate against the new schema; their usage is read
    // against the schema they were written for (the baseline's, when there is one).
    let mut invalid_documents = Vec::new();
    let mut known: Vec<KnownOperation> = Vec::new();
    for document in documents {
        let against_new = operation_usage(&new_schema, &document.text, &document.source);
        if let Err(error) = &against_new {
            invalid_documents.push(InvalidDocument {
                source: document.source.clone(),
                error: error.to_string(),
            });
        }
        let usage = match &old_schema {
            Some(old) => operation_usage(old, &document.text, &document.source),
            None => against_new,
        };
        if let Ok(operations) = usage {
            known.extend(operations.into_iter().map(KnownOperation::from));
        }
    }
    known.extend(recorded);

    let changes: Vec<CheckedChange> = match &old_schema {
        Some(old) => diff(old, &new_schema)
            .into_iter()
            .map(|change| {
                let breaks = operations_broken_by(&change, &known);
                CheckedChange { change, breaks }
            })
            .collect(),
        None => Vec::new(),
    };
    let passed = invalid_documents.is_empty() && changes.iter().all(|c| c.breaks.is_empty());
    Ok(CheckReport {
        passed,
        against: baseline.map(|b| b.label.clone()),
        composition_errors: Vec::new(),
        changes,
        invalid_documents,
        known_operations: known.len(),
        supergraph: Some(supergraph),
        api_schema: Some(new_api),
    })
}

/// The classified changes from one API schema (SDL) to another.
pub fn diff_api_schemas(old: &str, new: &str) -> Result<Vec<Change>, String> {
    Ok(diff(&*parse_api(old)?, &*parse_api(new)?))
}

fn parse_api(sdl: &str) -> Result<Valid<Schema>, String> {
    Schema::parse_and_validate(sdl, "api.graphql").map_err(|errors| errors.errors.to_string())
}

/// The known operations a breaking change breaks: those touching what it affects.
fn operations_broken_by(change: &Change, known: &[KnownOperation]) -> Vec<String> {
    if change.criticality != Criticality::Breaking {
        return Vec::new();
    }
    known
        .iter()
        .filter(|operation| {
            change
                .affects
                .iter()
                .any(|coordinate| operation.coordinates.contains(coordinate))
        })
        .map(|operation| match operation.count {
            Some(count) => format!(
                "{} ({}, seen {count} times)",
                operation.name, operation.source
            ),
            None => format!("{} ({})", operation.name, operation.source),
        })
        .collect()
}

impl CheckReport {
    /// The report for people: one line per change, the broken operations under it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let against = self.against.as_deref().unwrap_or("nothing (first version)");
        let _ = writeln!(out, "schema check against {against}");
        if !self.composition_errors.is_empty() {
            let _ = writeln!(
                out,
                "✗ composition failed ({} error(s)):",
                self.composition_errors.len()
            );
            for issue in &self.composition_errors {
                let _ = writeln!(out, "  - {issue}");
            }
        }
        for criticality in [
            Criticality::Breaking,
            Criticality::Dangerous,
            Criticality::Safe,
        ] {
            let changes: Vec<&CheckedChange> = self
                .changes
                .iter()
                .filter(|c| c.change.criticality == criticality)
                .collect();
            if changes.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{} {:?} change(s):", changes.len(), criticality);
            for checked in changes {
                let mark = match (criticality, checked.breaks.is_empty()) {
                    (Criticality::Breaking, false) => "✗",
                    (Criticality::Breaking, true) => "!",
                    _ => "·",
                };
                let _ = writeln!(
                    out,
                    "  {mark} {} [{}]",
                    checked.change.message, checked.change.coordinate
                );
                if criticality == Criticality::Breaking && checked.breaks.is_empty() {
                    let _ = writeln!(out, "      no known operation uses it");
                }
                for operation in &checked.breaks {
                    let _ = writeln!(out, "      breaks {operation}");
                }
            }
        }
        for document in &self.invalid_documents {
            let _ = writeln!(
                out,
                "✗ {} no longer validates: {}",
                document.source, document.error
            );
        }
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(
            out,
            "{verdict}: {} change(s), {} known operation(s) checked",
            self.changes.len(),
            self.known_operations
        );
        out
    }
}

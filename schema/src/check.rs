//! `schema check`: is the proposed supergraph safe to publish?
//!
//! In order: compose the subgraphs (errors end the check); diff the new API schema against the
//! baseline's, each change classified; find the known client operations (the documents under
//! `client-tests/operations/` and those the router recorded) that touch what each breaking
//! change affects; make sure every client document still validates against the new schema.
//!
//! Then the same for each contract ([`crate::contracts::CONTRACTS`]): the proposed contract's
//! API schema is diffed against the baseline's contract (as published with it, or derived from
//! its supergraph by the same rules), and the contract's own client documents (those under
//! `<contract>/`, e.g. `partner/`) must validate against the proposed contract and protect what
//! they use in it, with the operations routers recorded from partners' API keys (for the
//! partner contract). A contract the proposal cannot build fails the check, unless no baseline,
//! no document and no recorded operation ever had one.
//!
//! The check fails when composition fails, a breaking change affects a known operation that
//! protects what it uses ([`KnownOperation::protects`]: every client document and partner
//! operation; a recorded operation of users' only once enough distinct callers sent it), or a
//! client document no longer validates, in the whole API or in a contract. Breaking changes
//! nobody uses pass, listed as such, and so do those only unprotecting operations use, listed
//! with them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use apollo_compiler::Schema;
use apollo_compiler::validation::Valid;
use serde::Serialize;

use crate::authorization::authorization_changes;
use crate::compose::{CompositionIssue, SubgraphSdl, api_schema, compose};
use crate::contracts::{CONTRACTS, ContractError, PARTNER_CONTRACT, contract_supergraph};
use crate::diff::{Change, Criticality, diff};
use crate::store::Version;
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
    /// A partner's API key sent it (routers record which): the partner contract's check
    /// protects it too.
    pub partner: bool,
    /// How many distinct callers sent it (recorded operations; None for client documents and
    /// for operations recorded before callers were counted).
    pub callers: Option<u64>,
    /// Whether a breaking change it uses fails the check. Client documents and partners'
    /// operations always do; an operation recorded from users' traffic only once enough
    /// distinct users sent it (`gospelib schema check` decides), so that one account cannot
    /// pin any field it likes against removal. One that does not is still listed.
    pub protects: bool,
}

impl From<OperationUsage> for KnownOperation {
    fn from(usage: OperationUsage) -> Self {
        Self {
            source: usage.source,
            name: usage.name,
            count: None,
            coordinates: usage.coordinates,
            partner: false,
            callers: None,
            protects: true,
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
    /// Each contract's supergraph as published with the baseline, by contract name. A contract
    /// missing here is derived from `supergraph` by the same rules as the proposal's.
    pub contracts: BTreeMap<String, String>,
}

impl Baseline {
    /// A baseline that is only a supergraph (a file): its contracts are derived from it.
    pub fn of_supergraph(label: impl Into<String>, supergraph: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            supergraph: supergraph.into(),
            contracts: BTreeMap::new(),
        }
    }

    /// A published version, with the contracts it was published with.
    pub fn of_version(version: &Version) -> Self {
        Self {
            label: format!("version {}", version.number),
            supergraph: version.supergraph.clone(),
            contracts: version.contracts.clone(),
        }
    }
}

/// One change and the operations it breaks.
#[derive(Debug, Clone, Serialize)]
pub struct CheckedChange {
    #[serde(flatten)]
    pub change: Change,
    /// `name (source)` of each known operation it breaks; empty for harmless changes.
    pub breaks: Vec<String>,
    /// The same, of recorded operations it breaks that do not protect what they use (too few
    /// distinct callers sent them): listed, not failing the check.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also_used_by: Vec<String>,
}

/// A client document that does not validate against the proposed schema.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidDocument {
    pub source: String,
    pub error: String,
}

/// The check of one contract (e.g. `partner`): its own diff and its own client documents.
#[derive(Debug, Clone, Serialize)]
pub struct ContractCheck {
    pub passed: bool,
    /// What the proposed contract was compared with, e.g. `version 7's partner contract`;
    /// None when the baseline had no such contract (or there was no baseline).
    pub against: Option<String>,
    /// Why the proposal's contract could not be built (the check then fails).
    pub error: Option<String>,
    pub changes: Vec<CheckedChange>,
    /// The contract's client documents that do not validate against the proposed contract.
    pub invalid_documents: Vec<InvalidDocument>,
    /// How many of the contract's own client operations protected it.
    pub known_operations: usize,
}

/// The whole check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub passed: bool,
    pub against: Option<String>,
    pub composition_errors: Vec<CompositionIssue>,
    /// What the routers' planner refuses of what composed (the supergraph or a contract), by
    /// [`CheckReport::refused_by_routers`]: such a version could not be served.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub router_refusals: Vec<String>,
    /// The changes to the whole API schema.
    pub changes: Vec<CheckedChange>,
    pub invalid_documents: Vec<InvalidDocument>,
    pub known_operations: usize,
    /// Each contract's check, by contract name (absent for a contract nobody has).
    pub contracts: BTreeMap<String, ContractCheck>,
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
    match compose(subgraphs) {
        Ok(supergraph) => check_supergraph(&supergraph, baseline, documents, recorded),
        Err(failure) => Ok(CheckReport {
            passed: false,
            against: baseline.map(|b| b.label.clone()),
            composition_errors: failure.issues,
            router_refusals: Vec::new(),
            changes: Vec::new(),
            invalid_documents: Vec::new(),
            known_operations: 0,
            contracts: BTreeMap::new(),
            supergraph: None,
            api_schema: None,
        }),
    }
}

/// Runs the check of an already composed `supergraph` (e.g. an older version, for a rollback)
/// against `baseline`, as [`check`] does.
pub fn check_supergraph(
    supergraph: &str,
    baseline: Option<&Baseline>,
    documents: &[ClientDocument],
    recorded: Vec<KnownOperation>,
) -> Result<CheckReport, CheckError> {
    let new_api = api_schema(supergraph).map_err(|e| CheckError::BadProposal(e.0))?;
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
    let recorded_by_partners: Vec<KnownOperation> = recorded
        .iter()
        .filter(|operation| operation.partner)
        .cloned()
        .collect();
    // What callers must be, which the API schemas do not carry: from the supergraphs.
    let authorization = match baseline {
        Some(baseline) => {
            let parse = |sdl: &str| {
                Schema::parse(sdl, "supergraph.graphql").map_err(|errors| errors.errors.to_string())
            };
            let old = parse(&baseline.supergraph).map_err(|message| CheckError::BadBaseline {
                label: baseline.label.clone(),
                message,
            })?;
            let new = parse(supergraph).map_err(CheckError::BadProposal)?;
            authorization_changes(&old, &new)
        }
        None => Vec::new(),
    };
    let whole = check_schema(
        &new_schema,
        old_schema.as_ref(),
        &authorization,
        documents,
        recorded,
    );

    let mut contracts = BTreeMap::new();
    for (name, tag) in CONTRACTS {
        let own_documents: Vec<ClientDocument> = documents
            .iter()
            .filter(|document| document.source.starts_with(&format!("{name}/")))
            .cloned()
            .collect();
        // Partners write their own operations: what routers recorded of theirs is all that
        // protects them, beyond the few in the repository.
        let own_recorded: Vec<KnownOperation> = recorded_by_partners
            .iter()
            .filter(|_| *name == PARTNER_CONTRACT)
            .cloned()
            .collect();
        if let Some(contract) = check_contract(
            supergraph,
            baseline,
            (name, tag),
            &authorization,
            &own_documents,
            own_recorded,
        )? {
            contracts.insert((*name).to_owned(), contract);
        }
    }

    let passed = whole.passed() && contracts.values().all(|contract| contract.passed);
    Ok(CheckReport {
        passed,
        against: baseline.map(|b| b.label.clone()),
        composition_errors: Vec::new(),
        router_refusals: Vec::new(),
        changes: whole.changes,
        invalid_documents: whole.invalid_documents,
        known_operations: whole.known_operations,
        contracts,
        supergraph: Some(supergraph.to_owned()),
        api_schema: Some(new_api),
    })
}

/// The diff and document checks of one API schema (the whole one, or a contract's).
struct SchemaCheck {
    changes: Vec<CheckedChange>,
    invalid_documents: Vec<InvalidDocument>,
    known_operations: usize,
}

impl SchemaCheck {
    fn passed(&self) -> bool {
        self.invalid_documents.is_empty() && self.changes.iter().all(|c| c.breaks.is_empty())
    }
}

/// Diffs `new_schema` against `old_schema` (with the `authorization` changes of what both
/// have), validates the client `documents` against the new one, and finds which known
/// operations each breaking change breaks.
fn check_schema(
    new_schema: &Valid<Schema>,
    old_schema: Option<&Valid<Schema>>,
    authorization: &[Change],
    documents: &[ClientDocument],
    recorded: Vec<KnownOperation>,
) -> SchemaCheck {
    // Client documents: each must validate against the new schema; their usage is read
    // against the schema they were written for (the baseline's, when there is one). A
    // document that begins using a field this very change adds is invalid against the
    // baseline, so its usage is read against the new schema: it still protects every field
    // it uses that the baseline already had.
    let mut invalid_documents = Vec::new();
    let mut known: Vec<KnownOperation> = Vec::new();
    for document in documents {
        let against_new = operation_usage(new_schema, &document.text, &document.source);
        if let Err(error) = &against_new {
            invalid_documents.push(InvalidDocument {
                source: document.source.clone(),
                error: error.to_string(),
            });
        }
        let usage = match old_schema {
            Some(old) => operation_usage(old, &document.text, &document.source).or(against_new),
            None => against_new,
        };
        if let Ok(operations) = usage {
            known.extend(operations.into_iter().map(KnownOperation::from));
        }
    }
    known.extend(recorded);

    let changes: Vec<Change> = match old_schema {
        Some(old) => {
            let mut changes = diff(old, new_schema);
            // Those of what this schema shows (a contract hides some).
            changes.extend(
                authorization
                    .iter()
                    .filter(|change| {
                        shows(old, &change.coordinate) && shows(new_schema, &change.coordinate)
                    })
                    .cloned(),
            );
            changes.sort_by(|a, b| {
                (&a.coordinate, a.kind, &a.message).cmp(&(&b.coordinate, b.kind, &b.message))
            });
            changes
        }
        None => Vec::new(),
    };
    let changes: Vec<CheckedChange> = changes
        .into_iter()
        .map(|change| {
            let (breaks, also_used_by) = operations_broken_by(&change, &known);
            CheckedChange {
                change,
                breaks,
                also_used_by,
            }
        })
        .collect();
    SchemaCheck {
        changes,
        invalid_documents,
        known_operations: known.len(),
    }
}

/// The check of contract `name` (keeping what is tagged `tag`): the proposal's contract
/// against the baseline's, protecting the contract's own client `documents`. None when neither
/// the proposal nor the baseline has the contract and no document needs it.
fn check_contract(
    supergraph: &str,
    baseline: Option<&Baseline>,
    (name, tag): (&str, &str),
    authorization: &[Change],
    documents: &[ClientDocument],
    recorded: Vec<KnownOperation>,
) -> Result<Option<ContractCheck>, CheckError> {
    let old_contract = match baseline {
        Some(baseline) => baseline_contract(baseline, name, tag)?,
        None => None,
    };
    let against = baseline
        .filter(|_| old_contract.is_some())
        .map(|baseline| format!("{}'s {name} contract", baseline.label));
    let new_contract = contract_supergraph(supergraph, name, tag)
        .map_err(|error| error.to_string())
        .and_then(|contract| api_schema(&contract).map_err(|error| error.to_string()))
        .and_then(|api| parse_api(&api));
    let new_schema = match new_contract {
        Ok(schema) => schema,
        Err(_) if old_contract.is_none() && documents.is_empty() && recorded.is_empty() => {
            return Ok(None);
        }
        Err(error) => {
            return Ok(Some(ContractCheck {
                passed: false,
                against,
                error: Some(error),
                changes: Vec::new(),
                invalid_documents: Vec::new(),
                known_operations: 0,
            }));
        }
    };
    let checked = check_schema(
        &new_schema,
        old_contract.as_ref(),
        authorization,
        documents,
        recorded,
    );
    Ok(Some(ContractCheck {
        passed: checked.passed(),
        against,
        error: None,
        changes: checked.changes,
        invalid_documents: checked.invalid_documents,
        known_operations: checked.known_operations,
    }))
}

/// The API schema of the baseline's contract `name`: as published with it, or derived from its
/// supergraph. None when the baseline keeps nothing for that contract.
fn baseline_contract(
    baseline: &Baseline,
    name: &str,
    tag: &str,
) -> Result<Option<Valid<Schema>>, CheckError> {
    let bad = |message: String| CheckError::BadBaseline {
        label: format!("{}'s {name} contract", baseline.label),
        message,
    };
    let contract = match baseline.contracts.get(name) {
        Some(contract) => contract.clone(),
        None => match contract_supergraph(&baseline.supergraph, name, tag) {
            Ok(contract) => contract,
            Err(ContractError::Empty { .. }) => return Ok(None),
            Err(error) => return Err(bad(error.to_string())),
        },
    };
    let api = api_schema(&contract).map_err(|e| bad(e.0))?;
    Ok(Some(parse_api(&api).map_err(bad)?))
}

/// The classified changes from one API schema (SDL) to another.
pub fn diff_api_schemas(old: &str, new: &str) -> Result<Vec<Change>, String> {
    Ok(diff(&*parse_api(old)?, &*parse_api(new)?))
}

fn parse_api(sdl: &str) -> Result<Valid<Schema>, String> {
    Schema::parse_and_validate(sdl, "api.graphql").map_err(|errors| errors.errors.to_string())
}

/// Whether `schema` has the field at `coordinate` (`Type.field`).
fn shows(schema: &Schema, coordinate: &str) -> bool {
    let Some((type_name, field)) = coordinate.split_once('.') else {
        return false;
    };
    schema
        .types
        .get(type_name)
        .and_then(crate::authorization::fields_of)
        .is_some_and(|fields| fields.contains_key(field))
}

/// The known operations a breaking change breaks (those touching what it affects): those that
/// protect what they use, then those that do not.
fn operations_broken_by(change: &Change, known: &[KnownOperation]) -> (Vec<String>, Vec<String>) {
    if change.criticality != Criticality::Breaking {
        return (Vec::new(), Vec::new());
    }
    let (protecting, not_protecting): (Vec<&KnownOperation>, Vec<&KnownOperation>) = known
        .iter()
        .filter(|operation| {
            change
                .affects
                .iter()
                .any(|coordinate| operation.coordinates.contains(coordinate))
        })
        .partition(|operation| operation.protects);
    let described = |operations: Vec<&KnownOperation>| {
        operations
            .into_iter()
            .map(describe_operation)
            .collect::<Vec<_>>()
    };
    (described(protecting), described(not_protecting))
}

/// `name (source)`, with how often and by how many callers a recorded one was seen.
fn describe_operation(operation: &KnownOperation) -> String {
    match (operation.count, operation.callers) {
        (Some(count), Some(callers)) => format!(
            "{} ({}, seen {count} times by {callers} caller{})",
            operation.name,
            operation.source,
            if callers == 1 { "" } else { "s" }
        ),
        (Some(count), None) => format!(
            "{} ({}, seen {count} times)",
            operation.name, operation.source
        ),
        (None, _) => format!("{} ({})", operation.name, operation.source),
    }
}

impl CheckReport {
    /// Records that the routers' planner refuses `what` (e.g. "the `partner` contract") for
    /// `reason`: the check fails.
    pub fn refused_by_routers(&mut self, what: &str, reason: &str) {
        self.passed = false;
        self.router_refusals
            .push(format!("the routers cannot load the {what}: {reason}"));
    }

    /// The report for people: one line per change, the broken operations under it; then each
    /// contract's own section.
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
        for refusal in &self.router_refusals {
            let _ = writeln!(out, "✗ {refusal}");
        }
        write_changes(&mut out, &self.changes, "");
        for document in &self.invalid_documents {
            let _ = writeln!(
                out,
                "✗ {} no longer validates: {}",
                document.source, document.error
            );
        }
        for (name, contract) in &self.contracts {
            write_contract(&mut out, name, contract);
        }
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = write!(
            out,
            "{verdict}: {} change(s), {} known operation(s) checked",
            self.changes.len(),
            self.known_operations
        );
        for (name, contract) in &self.contracts {
            let verdict = if contract.passed { "passed" } else { "FAILED" };
            let _ = write!(
                out,
                "; {name} contract {verdict}: {} change(s), {} operation(s)",
                contract.changes.len(),
                contract.known_operations
            );
        }
        out.push('\n');
        out
    }
}

/// The changes grouped breaking, dangerous, safe, each line indented by `indent`.
fn write_changes(out: &mut String, changes: &[CheckedChange], indent: &str) {
    for criticality in [
        Criticality::Breaking,
        Criticality::Dangerous,
        Criticality::Safe,
    ] {
        let changes: Vec<&CheckedChange> = changes
            .iter()
            .filter(|c| c.change.criticality == criticality)
            .collect();
        if changes.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "{indent}{} {:?} change(s):",
            changes.len(),
            criticality
        );
        for checked in changes {
            let mark = match (criticality, checked.breaks.is_empty()) {
                (Criticality::Breaking, false) => "✗",
                (Criticality::Breaking, true) => "!",
                _ => "·",
            };
            let _ = writeln!(
                out,
                "{indent}  {mark} {} [{}]",
                checked.change.message, checked.change.coordinate
            );
            if criticality == Criticality::Breaking
                && checked.breaks.is_empty()
                && checked.also_used_by.is_empty()
            {
                let _ = writeln!(out, "{indent}      no known operation uses it");
            }
            for operation in &checked.breaks {
                let _ = writeln!(out, "{indent}      breaks {operation}");
            }
            for operation in &checked.also_used_by {
                let _ = writeln!(
                    out,
                    "{indent}      also used by {operation}: too few callers to protect it"
                );
            }
        }
    }
}

/// One contract's section: what it was compared with, its changes, its invalid documents.
fn write_contract(out: &mut String, name: &str, contract: &ContractCheck) {
    let against = contract
        .against
        .as_deref()
        .unwrap_or("nothing (no earlier contract)");
    let _ = writeln!(
        out,
        "{name} contract (what {name} clients see), against {against}:"
    );
    if let Some(error) = &contract.error {
        let _ = writeln!(out, "  ✗ the {name} contract cannot be built: {error}");
    }
    if contract.error.is_none() && contract.changes.is_empty() {
        let _ = writeln!(out, "  no change");
    }
    write_changes(out, &contract.changes, "  ");
    for document in &contract.invalid_documents {
        let _ = writeln!(
            out,
            "  ✗ {} no longer validates against the {name} contract: {}",
            document.source, document.error
        );
    }
}

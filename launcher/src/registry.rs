//! `gospelib schema check|publish|history|diff|rollback|baseline`: the registry's commands.
//!
//! The proposal is what the code gives (every part's SDL, composed), or for `rollback` an older
//! version's content. Known operations are the documents under `client-tests/operations/`
//! (those under `partner/` also protect the partner contract) plus, when `GOSPELIB_REDIS_URL` is
//! set, the operations routers recorded. Published versions live in PostgreSQL
//! (`GOSPELIB_PG_URL`); `publish` and `rollback` store a version only if the one they checked
//! against is still the latest, and otherwise write nothing and say to check again.
//! `publish` stores with the version the manifest of the apps' trusted documents (the
//! operations under `web/` and `mobile/` of the operations folder); so does `rollback`, with
//! the old version's supergraph: the apps in use now are the ones its check protected.

use std::path::Path;

use anyhow::{Context, bail};
use gospelib_kit::config::{ConfigReader, Env};
use gospelib_kit::stores::{postgres_pool, redis_client};
use gospelib_router::trusted_documents::Manifest;
use gospelib_schema::check::{
    Baseline, CheckReport, ClientDocument, KnownOperation, check, client_documents,
    diff_api_schemas,
};
use gospelib_schema::publish::{
    CheckedProposal, PublishError, PublishOutcome, check_publish, check_rollback,
};
use gospelib_schema::store::Store;

use crate::schema_files::{committed_url, subgraph_sdls};

/// How a report is printed.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// The check failed (the report says why): exit status 1 without another message.
#[derive(Debug, thiserror::Error)]
#[error("the schema check failed")]
pub struct CheckFailed;

/// What the registry commands read from the environment.
pub(crate) struct RegistrySettings {
    postgres: Option<url::Url>,
    redis: Option<url::Url>,
    /// `GOSPELIB_REGISTRY_USAGE_MIN_CALLERS`: how many distinct users must have sent an
    /// operation the routers recorded before it protects what it uses (a partner's always
    /// does).
    min_callers: u64,
}

/// The default of `GOSPELIB_REGISTRY_USAGE_MIN_CALLERS`.
pub const DEFAULT_USAGE_MIN_CALLERS: u64 = 3;

impl RegistrySettings {
    pub(crate) fn read(env: &Env, needs_postgres: bool) -> anyhow::Result<Self> {
        let mut reader = ConfigReader::new(env);
        let example = "postgres://gospelib@127.0.0.1:25432/gospelib";
        let postgres = if needs_postgres || reader.raw("GOSPELIB_PG_URL").is_some() {
            reader.required_url("GOSPELIB_PG_URL", example, &["postgres", "postgresql"])
        } else {
            None
        };
        let redis = if reader.raw("GOSPELIB_REDIS_URL").is_some() {
            reader.required_url(
                "GOSPELIB_REDIS_URL",
                "redis://127.0.0.1:26379",
                &["redis", "rediss"],
            )
        } else {
            None
        };
        let min_callers = reader.number(
            "GOSPELIB_REGISTRY_USAGE_MIN_CALLERS",
            DEFAULT_USAGE_MIN_CALLERS,
            1,
            1_000_000,
        );
        reader.finish()?;
        Ok(Self {
            postgres,
            redis,
            min_callers: min_callers.unwrap_or(DEFAULT_USAGE_MIN_CALLERS),
        })
    }

    fn store(&self) -> anyhow::Result<Store> {
        let url = self
            .postgres
            .as_ref()
            .context("GOSPELIB_PG_URL is needed to reach published versions")?;
        Ok(Store::new(
            postgres_pool(url, 2).context("GOSPELIB_PG_URL")?,
        ))
    }
}

/// `schema check`.
pub async fn run_check(
    env: &Env,
    against: &str,
    operations: &Path,
    format: Format,
) -> anyhow::Result<()> {
    let settings = RegistrySettings::read(env, against_needs_store(against))?;
    let baseline = baseline(&settings, against).await?;
    let mut report = check_code(&settings, baseline.as_ref(), operations).await?;
    // What publish would refuse, the check refuses too (in its report, text or JSON): the
    // routers' planner cannot load it.
    if let Some(supergraph) = &report.supergraph
        && let Some((name, reason)) = refused_by_routers(&loaded_by_routers(supergraph))
    {
        report.refused_by_routers(&name, &reason);
    }
    print_report(&report, format)?;
    if report.passed {
        Ok(())
    } else {
        Err(CheckFailed.into())
    }
}

/// `schema publish`.
pub async fn run_publish(
    env: &Env,
    message: &str,
    operations: &Path,
    force_reason: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let settings = RegistrySettings::read(env, true)?;
    let store = settings.store()?;
    let (documents, recorded) = known_operations(&settings, operations).await?;
    let manifest = Manifest::from_operations_dir(operations)
        .with_context(|| format!("the apps' operations under {}", operations.display()))?;
    let mut proposal = check_publish(&store, subgraph_sdls(committed_url), &documents, recorded)
        .await?
        .with_trusted_documents(manifest.to_json());
    judge_loadable(&mut proposal)?;
    print_report(&proposal.report, format)?;
    publish_checked(
        &settings,
        &store,
        proposal,
        message,
        force_reason,
        "publish",
        format,
    )
    .await
}

/// Publishes a checked proposal, saying what happened; `command` names the command to run
/// again when another version was published since the check.
async fn publish_checked(
    settings: &RegistrySettings,
    store: &Store,
    proposal: CheckedProposal,
    message: &str,
    force_reason: Option<&str>,
    command: &str,
    format: Format,
) -> anyhow::Result<()> {
    let rollback_of = proposal.rollback_of();
    // Composition is apollo-federation's; the routers load with the hive planner. What they
    // could not load is never published (forced or not): running routers would keep the last
    // version and every router starting would fail.
    if let Some((name, reason)) = refused_by_routers(&proposal.supergraphs()?) {
        bail!("refused: the routers cannot load the {name} ({reason}); nothing was published");
    }
    let outcome = match proposal.publish(store, message, force_reason).await {
        Ok(outcome) => outcome,
        Err(conflict @ PublishError::Conflict { .. }) => {
            eprintln!(
                "conflict: the registry moved on while this ran; re-run `gospelib schema {command}` \
                 to check against the latest version"
            );
            return Err(conflict.into());
        }
        Err(error) => return Err(error.into()),
    };
    match outcome {
        PublishOutcome::Published(version) => {
            match rollback_of {
                Some(to) => say(
                    format,
                    &format!(
                        "published version {} (the content of version {to})",
                        version.number
                    ),
                ),
                None => say(format, &format!("published version {}", version.number)),
            }
            announce_published(settings, version.number, format).await;
        }
        PublishOutcome::Unchanged(latest) => match rollback_of {
            Some(to) => {
                bail!("the latest version ({latest}) already has version {to}'s supergraph")
            }
            None => eprintln!(
                "unchanged: version {latest} already has this supergraph and these trusted \
                 documents"
            ),
        },
        PublishOutcome::Refused => {
            eprintln!(
                "refused: the check failed ({command} --force --reason \"…\" to {command} anyway)"
            );
            return Err(CheckFailed.into());
        }
    }
    Ok(())
}

/// Records in `proposal`'s report what the routers would refuse of it (before the report is
/// shown, so its text and JSON say why the publish is refused).
fn judge_loadable(proposal: &mut CheckedProposal) -> anyhow::Result<()> {
    if let Some((name, reason)) = refused_by_routers(&proposal.supergraphs()?) {
        proposal.report.refused_by_routers(&name, &reason);
    }
    Ok(())
}

/// What routers load of `supergraph`: itself (named `supergraph`) and each contract's (a
/// contract that would keep nothing is left out; publish does not store it).
fn loaded_by_routers(supergraph: &str) -> Vec<(String, String)> {
    let mut all = vec![("supergraph".to_owned(), supergraph.to_owned())];
    for (name, tag) in gospelib_schema::contracts::CONTRACTS {
        if let Ok(contract) = gospelib_schema::contracts::contract_supergraph(supergraph, name, tag)
        {
            all.push(((*name).to_owned(), contract));
        }
    }
    all
}

/// The first of `supergraphs` (name, SDL) the router refuses to load, with why.
fn refused_by_routers(supergraphs: &[(String, String)]) -> Option<(String, String)> {
    supergraphs.iter().find_map(|(name, sdl)| {
        let what = if name == "supergraph" {
            "supergraph".to_owned()
        } else {
            format!("`{name}` contract")
        };
        gospelib_router::supergraph::Supergraph::parse(sdl, None)
            .err()
            .map(|error| (what, error.to_string()))
    })
}

/// Says what a publish did: on standard output as text, on standard error with
/// `--format json`, whose standard output is the report's JSON alone.
fn say(format: Format, line: &str) {
    match format {
        Format::Text => println!("{line}"),
        Format::Json => eprintln!("{line}"),
    }
}

/// A connection to the Redis at `url` (`GOSPELIB_REDIS_URL`): recorded usage, announcements.
async fn redis_connection(url: &url::Url) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis_client(url).context("GOSPELIB_REDIS_URL")?;
    client
        .get_multiplexed_async_connection()
        .await
        .context("Redis at GOSPELIB_REDIS_URL")
}

/// How long announcing a publish may take before it is given up (routers poll anyway).
const ANNOUNCE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Tells the routers following the registry's announcements (in the Redis at
/// `GOSPELIB_REDIS_URL`, when set) that version `number` is published, so they fetch it at
/// once rather than at their next poll. Best effort: a router that does not hear it polls.
async fn announce_published(
    settings: &RegistrySettings,
    number: impl std::fmt::Display,
    format: Format,
) {
    let Some(url) = &settings.redis else {
        return;
    };
    let announce = async {
        let mut connection = redis_connection(url).await?;
        let heard: i64 = redis::AsyncCommands::publish(
            &mut connection,
            gospelib_kit::announcements::REGISTRY_PUBLISHED_CHANNEL,
            number.to_string(),
        )
        .await?;
        anyhow::Ok(heard)
    };
    match tokio::time::timeout(ANNOUNCE_TIMEOUT, announce).await {
        Ok(Ok(heard)) => say(
            format,
            &format!("announced to {heard} router process(es) following the registry"),
        ),
        Ok(Err(error)) => {
            eprintln!(
                "warning: the publish was not announced ({error:#}); routers pick it up at their next poll"
            )
        }
        Err(_) => eprintln!(
            "warning: the publish was not announced within {ANNOUNCE_TIMEOUT:?}; routers pick it up at their next poll"
        ),
    }
}

/// `schema history`.
pub async fn run_history(env: &Env, format: Format) -> anyhow::Result<()> {
    let store = RegistrySettings::read(env, true)?.store()?;
    let versions = store.history().await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&versions)?),
        Format::Text => {
            if versions.is_empty() {
                println!("no version published yet");
            }
            for version in versions {
                let mut notes = Vec::new();
                if let Some(number) = version.rollback_of {
                    notes.push(format!("rollback to {number}"));
                }
                if let Some(reason) = &version.forced_reason {
                    notes.push(format!("forced: {reason}"));
                }
                println!(
                    "{:>4}  {}  {}  {}{}",
                    version.number,
                    version.published_at,
                    &version.api_schema_hash[..12],
                    version.message,
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", notes.join("; "))
                    }
                );
            }
        }
    }
    Ok(())
}

/// `schema diff <a> <b>`: the classified changes from version `a` to version `b`.
pub async fn run_diff(env: &Env, from: i32, to: i32, format: Format) -> anyhow::Result<()> {
    let store = RegistrySettings::read(env, true)?.store()?;
    let old = store.require(from).await?;
    let new = store.require(to).await?;
    let mut changes = diff_api_schemas(&old.api_schema, &new.api_schema)
        .map_err(|error| anyhow::anyhow!("versions {from} and {to}: {error}"))?;
    // Access rules (`@authenticated`, `@requiresScopes`) are the supergraph's, not the API
    // schema's: as the check does, they are compared there.
    changes.extend(
        gospelib_schema::authorization::authorization_changes_of_sdl(
            &old.supergraph,
            &new.supergraph,
        )
        .map_err(|error| anyhow::anyhow!("versions {from} and {to}: {error}"))?,
    );
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&changes)?),
        Format::Text => {
            println!("version {from} → version {to}: {} change(s)", changes.len());
            for change in changes {
                println!(
                    "  {:<9} {} [{}]",
                    format!("{:?}", change.criticality),
                    change.message,
                    change.coordinate
                );
            }
        }
    }
    Ok(())
}

/// `schema rollback --to <n>`: checks version `n`'s content against the latest version, then
/// publishes it as a new version (refused when the check fails, unless forced with a reason).
pub async fn run_rollback(
    env: &Env,
    to: i32,
    message: Option<&str>,
    operations: &Path,
    force_reason: Option<&str>,
    format: Format,
) -> anyhow::Result<()> {
    let settings = RegistrySettings::read(env, true)?;
    let store = settings.store()?;
    let (documents, recorded) = known_operations(&settings, operations).await?;
    // The apps in use now are the ones the check just protected: their manifest goes out with
    // the old supergraph, not the old version's, which routers enforcing trusted documents
    // would refuse today's operations by (or, from before manifests, not have at all).
    let manifest = Manifest::from_operations_dir(operations)
        .with_context(|| format!("the apps' operations under {}", operations.display()))?;
    let mut proposal = check_rollback(&store, to, &documents, recorded)
        .await?
        .with_trusted_documents(manifest.to_json());
    judge_loadable(&mut proposal)?;
    print_report(&proposal.report, format)?;
    let message = message
        .map(str::to_owned)
        .unwrap_or_else(|| format!("rollback to version {to}"));
    publish_checked(
        &settings,
        &store,
        proposal,
        &message,
        force_reason,
        "rollback",
        format,
    )
    .await
}

/// `schema baseline --reason`: accepts the code's supergraph as the CI gate's new baseline.
pub async fn run_baseline(
    env: &Env,
    file: &Path,
    log: &Path,
    operations: &Path,
    reason: &str,
) -> anyhow::Result<()> {
    if reason.trim().is_empty() {
        bail!("--reason must say why the baseline changes");
    }
    let settings = RegistrySettings::read(env, false)?;
    let baseline = file_baseline(file)?;
    let report = check_code(&settings, baseline.as_ref(), operations).await?;
    let Some(supergraph) = &report.supergraph else {
        print_report(&report, Format::Text)?;
        bail!("composition failed: nothing to accept");
    };
    std::fs::write(file, supergraph).with_context(|| format!("writing {}", file.display()))?;
    let title = reason.lines().next().unwrap_or(reason);
    let mut entry = format!("\n## {title}\n\n{reason}\n\n");
    let breaking: Vec<_> = report
        .changes
        .iter()
        .filter(|c| c.change.criticality == gospelib_schema::diff::Criticality::Breaking)
        .collect();
    if breaking.is_empty() {
        entry.push_str("No breaking change.\n");
    }
    for change in breaking {
        entry.push_str(&format!("- breaking: {}", change.change.message));
        if !change.breaks.is_empty() {
            entry.push_str(&format!(" (breaks {})", change.breaks.join(", ")));
        }
        entry.push('\n');
    }
    let mut text = std::fs::read_to_string(log).unwrap_or_else(|_| {
        "# Schema baseline changes\n\nEach accepted change to `schema/baseline.graphql`, with its reason.\n"
            .to_owned()
    });
    text.push_str(&entry);
    std::fs::write(log, text).with_context(|| format!("writing {}", log.display()))?;
    println!("{} and {} updated", file.display(), log.display());
    Ok(())
}

fn against_needs_store(against: &str) -> bool {
    against == "latest" || against.parse::<i32>().is_ok()
}

/// The baseline `--against` names: `latest`, a version number, or a supergraph file.
async fn baseline(settings: &RegistrySettings, against: &str) -> anyhow::Result<Option<Baseline>> {
    if !against_needs_store(against) {
        return file_baseline(Path::new(against));
    }
    let store = settings.store()?;
    let version = if against == "latest" {
        store.latest().await?
    } else {
        Some(store.require(against.parse()?).await?)
    };
    Ok(version.as_ref().map(Baseline::of_version))
}

fn file_baseline(path: &Path) -> anyhow::Result<Option<Baseline>> {
    let supergraph = std::fs::read_to_string(path)
        .with_context(|| format!("reading the baseline {}", path.display()))?;
    Ok(Some(Baseline::of_supergraph(
        path.display().to_string(),
        supergraph,
    )))
}

/// Checks the code's subgraphs against `baseline`.
async fn check_code(
    settings: &RegistrySettings,
    baseline: Option<&Baseline>,
    operations: &Path,
) -> anyhow::Result<CheckReport> {
    let (documents, recorded) = known_operations(settings, operations).await?;
    Ok(check(
        &subgraph_sdls(committed_url),
        baseline,
        &documents,
        recorded,
    )?)
}

/// The client documents under `operations` and the operations routers recorded.
async fn known_operations(
    settings: &RegistrySettings,
    operations: &Path,
) -> anyhow::Result<(Vec<ClientDocument>, Vec<KnownOperation>)> {
    let documents = client_documents(operations)
        .with_context(|| format!("reading client operations under {}", operations.display()))?;
    let recorded = recorded_operations(settings).await?;
    Ok((documents, recorded))
}

/// The operations routers recorded in Redis, when `GOSPELIB_REDIS_URL` is set.
async fn recorded_operations(settings: &RegistrySettings) -> anyhow::Result<Vec<KnownOperation>> {
    let Some(url) = &settings.redis else {
        // Said, not silent: partners' operations are known from these records alone.
        eprintln!(
            "note: GOSPELIB_REDIS_URL is not set, so the operations routers recorded (partners' \
             among them) were not read: only the committed client operations are protected"
        );
        return Ok(Vec::new());
    };
    let mut connection = redis_connection(url)
        .await
        .context("reading recorded operations")?;
    let recorded = gospelib_kit::usage::read_all(&mut connection)
        .await
        .context("reading recorded operations")?;
    Ok(recorded
        .into_iter()
        .map(|operation| KnownOperation {
            protects: protects(&operation, settings.min_callers),
            source: format!("router:{}", &operation.hash[..12.min(operation.hash.len())]),
            name: operation.name,
            count: Some(operation.count),
            coordinates: operation.coordinates,
            partner: operation.partner,
            callers: operation.callers,
        })
        .collect())
}

/// Whether a recorded operation protects what it uses: a partner's always; a user's once
/// `min_callers` distinct callers sent it; one recorded before callers were counted, as it
/// did then.
fn protects(operation: &gospelib_kit::usage::RecordedOperation, min_callers: u64) -> bool {
    operation.partner
        || operation
            .callers
            .is_none_or(|callers| callers >= min_callers)
}

fn print_report(report: &CheckReport, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Text => print!("{}", report.to_text()),
        Format::Json => println!("{}", serde_json::to_string_pretty(report)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_operation_protects_once_enough_callers_sent_it() {
        let operation =
            |partner: bool, callers: Option<u64>| gospelib_kit::usage::RecordedOperation {
                hash: "h".to_owned(),
                name: "Op".to_owned(),
                coordinates: Default::default(),
                count: 10,
                partner,
                callers,
            };
        assert!(!protects(&operation(false, Some(2)), 3));
        assert!(protects(&operation(false, Some(3)), 3));
        assert!(protects(&operation(false, Some(1)), 1));
        // A partner's, whatever the count; one recorded before callers were counted.
        assert!(protects(&operation(true, Some(1)), 3));
        assert!(protects(&operation(false, None), 3));
    }

    #[test]
    fn what_the_routers_cannot_load_is_named() {
        let committed = include_str!("../../schema/supergraph.graphql").to_owned();
        let loadable = loaded_by_routers(&committed);
        assert_eq!(loadable.len(), 2, "the supergraph and the partner contract");
        assert_eq!(refused_by_routers(&loadable), None);
        // A schema that is no supergraph (no join directives): the planner refuses it.
        let refused = vec![
            ("supergraph".to_owned(), committed),
            ("partner".to_owned(), "type Query { a: Int }".to_owned()),
        ];
        let (name, reason) = refused_by_routers(&refused).unwrap();
        assert_eq!(name, "`partner` contract");
        assert!(!reason.is_empty());
    }
}

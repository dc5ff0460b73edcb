//! The parts one `gospelib` process can run, and which stores each needs.
//!
//! Phase 1 runs every part in one process; Phase 2 runs one Deployment per part with
//! `gospelib serve --only <name>`. A subgraph becomes a part here when its crate exists.

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::Subgraph;
use gospelib_kit::caller::{CallerGuard, CallerKey};
use gospelib_kit::config::{ConfigError, ConfigProblem, ConfigReader, Env, Problem};
use gospelib_kit::nonce_ledger::NonceLedger;
use gospelib_kit::stores::{Dependency, StoreClients};

use crate::settings::{ServeSettings, StripeSettings};

/// What a part needs to be built: the process's shared connections, its settings, and the
/// signal its background tasks stop on.
pub struct PartInputs<'a> {
    pub clients: &'a StoreClients,
    pub settings: &'a ServeSettings,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Set once the listeners stopped (every request answered or cut at the grace): what the
    /// outbox relays' last pass waits for, so the changes those requests committed go with it.
    pub requests_done: tokio::sync::watch::Receiver<bool>,
    /// The process's metrics (`/metrics`), for parts that count what they do.
    pub metrics: &'a gospelib_kit::metrics::Metrics,
}

/// A part, built: its subgraph, the routes third parties call it on (public), and the tasks
/// that keep it working in the background.
pub struct BuiltPart {
    pub subgraph: Subgraph,
    pub public_routes: Option<axum::Router>,
    /// Each ends once [`PartInputs::shutdown`] says so (the outbox relays once
    /// [`PartInputs::requests_done`] does), after finishing what it holds (a delivery it
    /// claimed, a relay's last pass): the launcher waits for them within what is left of its
    /// shutdown grace, then aborts what is left of them.
    pub background: Vec<tokio::task::JoinHandle<()>>,
}

/// One part of the platform.
pub struct Part {
    pub name: &'static str,
    /// Builds the part on the process's shared connections (a missing setting it alone needs
    /// is a configuration error).
    pub build: fn(&PartInputs<'_>) -> Result<BuiltPart, ConfigError>,
    /// Reads and checks the settings the part needs beyond [`ServeSettings`], as `build` does,
    /// without connecting to anything (`gospelib settings check`).
    pub check: fn(&Env) -> Result<(), ConfigError>,
    /// The part's federation SDL, without any store.
    pub sdl: fn() -> String,
    /// The (stream, consumer group) pairs the part's consumers read, whose backlog the process
    /// exports (`gospelib_stream_lag`, `gospelib_stream_pending`).
    pub consumes: &'static [(&'static str, &'static str)],
}

/// Every part this build contains, in start-up order.
pub const PARTS: &[Part] = &[
    Part {
        name: gospelib_content::schema::NAME,
        build: content,
        check: gospelib_content::settings::check,
        sdl: gospelib_content::schema::federation_sdl,
        consumes: &[],
    },
    Part {
        name: gospelib_accounts::NAME,
        build: accounts,
        check: check_accounts,
        sdl: gospelib_accounts::federation_sdl,
        consumes: &[(
            gospelib_accounts::device_rejections::DEFAULT_NOTIFICATIONS_STREAM,
            gospelib_accounts::device_rejections::GROUP,
        )],
    },
    Part {
        name: gospelib_billing::NAME,
        build: billing,
        check: check_billing,
        sdl: gospelib_billing::federation_sdl,
        consumes: &[(
            gospelib_billing::trial::DEFAULT_USERS_STREAM,
            gospelib_billing::trial::GROUP,
        )],
    },
    Part {
        name: gospelib_study::NAME,
        build: study,
        check: nothing_more,
        sdl: gospelib_study::federation_sdl,
        consumes: &[(
            gospelib_study::consumer::DEFAULT_USERS_STREAM,
            gospelib_study::consumer::GROUP,
        )],
    },
    Part {
        name: gospelib_notifications::NAME,
        build: notifications,
        check: check_notifications,
        sdl: gospelib_notifications::federation_sdl,
        consumes: &[
            (
                gospelib_notifications::events::USERS_STREAM,
                gospelib_notifications::events::GROUP,
            ),
            (
                gospelib_notifications::events::BILLING_STREAM,
                gospelib_notifications::events::GROUP,
            ),
        ],
    },
    Part {
        name: gospelib_ai::NAME,
        build: ai,
        check: check_ai,
        sdl: gospelib_ai::federation_sdl,
        consumes: &[],
    },
];

/// A part that needs no settings of its own.
fn nothing_more(_: &Env) -> Result<(), ConfigError> {
    Ok(())
}

/// The scripture graph; its reads go where `GOSPELIB_FALKORDB_READ_URL` and
/// `GOSPELIB_TYPESENSE_URLS` say (a FalkorDB replica, every Typesense node), when set.
fn content(inputs: &PartInputs<'_>) -> Result<BuiltPart, ConfigError> {
    let (subgraph, service) = gospelib_content::schema::subgraph_from_env(
        gospelib_content::namespace::Namespace::production(),
        inputs.clients,
        &Env::from_process(),
    )?;
    inputs
        .metrics
        .count_store_queries_from("falkordb", "content", move || service.graph_queries());
    Ok(BuiltPart {
        subgraph,
        public_routes: None,
        background: Vec::new(),
    })
}

/// How often the accounts outbox is relayed to Redis when an inline publish failed.
const OUTBOX_RELAY_EVERY: Duration = Duration::from_secs(5);

/// One configuration problem of one variable.
fn one_problem(variable: &str, expected: &str, problem: Problem) -> ConfigError {
    ConfigError {
        problems: vec![ConfigProblem {
            variable: variable.to_owned(),
            expected: expected.to_owned(),
            problem,
        }],
    }
}

/// Users (Clerk's webhooks, on the public listener) and their devices; the outbox of user and
/// device events relayed to `gl:events:users`; the consumer of `gl:events:notifications` that
/// removes the devices push providers rejected.
fn accounts(inputs: &PartInputs<'_>) -> Result<BuiltPart, ConfigError> {
    let clients = inputs.clients;
    let secret = inputs
        .settings
        .clerk_webhook_secret
        .as_ref()
        .map(|secret| secret.expose().to_owned())
        .ok_or_else(clerk_secret_missing)?;
    let webhooks = gospelib_accounts::WebhookState::new(
        clients.postgres.clone(),
        clients.redis.clone(),
        gospelib_accounts::WebhookSettings::new(secret),
    )
    .map_err(|error| {
        one_problem(
            "GOSPELIB_CLERK_WEBHOOK_SECRET",
            "a Svix signing secret (`whsec_…`)",
            Problem::Malformed {
                shown: None,
                reason: error.to_string(),
            },
        )
    })?;
    let relay = tokio::spawn(gospelib_accounts::relay_outbox(
        clients.postgres.clone(),
        clients.redis.clone(),
        OUTBOX_RELAY_EVERY,
        inputs.requests_done.clone(),
    ));
    let rejections = tokio::spawn({
        let (pool, redis) = (clients.postgres.clone(), clients.redis.clone());
        let shutdown = inputs.shutdown.clone();
        let name = format!("accounts-{}", consumer_suffix());
        async move {
            let stats = gospelib_accounts::run_device_rejections_consumer(
                pool,
                redis,
                gospelib_accounts::DeviceRejectionsSettings::new(name),
                shutdown,
            )
            .await;
            tracing::info!(?stats, "accounts' device-rejections consumer stopped");
        }
    });
    Ok(BuiltPart {
        subgraph: gospelib_accounts::subgraph(clients),
        public_routes: Some(gospelib_accounts::webhook_routes(webhooks)),
        background: vec![
            relay,
            rejections,
            forget_old_rows(
                inputs,
                &[
                    ("accounts.webhook_messages", "received_at"),
                    ("accounts.early_sign_ins", "received_at"),
                    ("accounts.outbox", "published_at"),
                ],
            ),
        ],
    })
}

/// The accounts part cannot run without Clerk's webhook secret.
fn clerk_secret_missing() -> ConfigError {
    one_problem(
        CLERK_WEBHOOK_SECRET,
        "the webhook endpoint's signing secret from Clerk's dashboard (`whsec_…`), needed by \
         the accounts part",
        Problem::Missing,
    )
}

/// `GOSPELIB_CLERK_WEBHOOK_SECRET`, whose form the shared settings check when it is set.
const CLERK_WEBHOOK_SECRET: &str = "GOSPELIB_CLERK_WEBHOOK_SECRET";

fn check_accounts(env: &Env) -> Result<(), ConfigError> {
    match env.get(CLERK_WEBHOOK_SECRET) {
        Some(_) => Ok(()),
        None => Err(clerk_secret_missing()),
    }
}

/// The `--only` name of the schema registry's endpoints alone (`/registry/…` on the internal
/// listener, what Phase 2's routers poll): no subgraph, no background work, PostgreSQL only.
/// The whole platform serves them too.
pub const REGISTRY: &str = "registry";

/// A `--only` list that names nothing this build can serve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("unknown part {name:?} in --only; this build's parts are: {known}")]
    UnknownPart { name: String, known: String },
    #[error("--only names no part; this build's parts are: {known}")]
    NothingChosen { known: String },
}

/// The names `--only` takes: the parts, then the registry.
fn known_names() -> String {
    PARTS
        .iter()
        .map(|p| p.name)
        .chain([REGISTRY])
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names in a `--only` list, blanks left out.
fn named(only: &[String]) -> impl Iterator<Item = &str> {
    only.iter().map(|n| n.trim()).filter(|n| !n.is_empty())
}

/// Whether a process given `--only` (empty: the whole platform) serves the registry's
/// endpoints.
pub fn serves_registry(only: &[String]) -> bool {
    only.is_empty() || named(only).any(|name| name == REGISTRY)
}

/// The parts to run: all of them, or those named by `--only` (in the order given, once each;
/// [`REGISTRY`] is no part). A list naming nothing (`--only ""`) is refused: such a process
/// would serve nothing and still say it is ready.
pub fn select(only: &[String]) -> Result<Vec<&'static Part>, SelectError> {
    if only.is_empty() {
        return Ok(PARTS.iter().collect());
    }
    let mut chosen: Vec<&'static Part> = Vec::new();
    for name in named(only).filter(|name| *name != REGISTRY) {
        let Some(part) = PARTS.iter().find(|p| p.name == name) else {
            return Err(SelectError::UnknownPart {
                name: name.to_owned(),
                known: known_names(),
            });
        };
        if !chosen.iter().any(|p| p.name == part.name) {
            chosen.push(part);
        }
    }
    if chosen.is_empty() && !serves_registry(only) {
        return Err(SelectError::NothingChosen {
            known: known_names(),
        });
    }
    Ok(chosen)
}

/// Plans and subscriptions (Stripe's webhooks, on the public listener), the consumer of
/// `gl:events:users` (trials, a deleted user's erasure), the worker cancelling a deleted user's
/// Stripe subscriptions, the sweep announcing trials that end soon (`trial.ending`, every 10
/// minutes), and the outbox of billing events relayed to `gl:events:billing`.
fn billing(inputs: &PartInputs<'_>) -> Result<BuiltPart, ConfigError> {
    let (clients, settings) = (inputs.clients, inputs.settings);
    let (secret, stripe) = billing_stripe(&settings.stripe)?;
    let webhooks = gospelib_billing::WebhookState::new(
        clients.postgres.clone(),
        clients.redis.clone(),
        secret,
        settings.plans.clone(),
    )
    .map_err(|error| {
        one_problem(
            "GOSPELIB_STRIPE_WEBHOOK_SECRET",
            "a Stripe signing secret (`whsec_…`)",
            Problem::Malformed {
                shown: None,
                reason: error.to_string(),
            },
        )
    })?;
    let app = settings.app_url.as_str();
    // A deleted user's Stripe subscriptions (queued by the consumer's erasure) cancelled, and
    // replaced or orphaned Checkout Sessions (queued by checkouts and erasures) expired, at
    // Stripe by the worker (only with an API key: without one they wait in the queue).
    let cancellation_bell = Arc::new(tokio::sync::Notify::new());
    let cancellations = match &stripe {
        Some(api) => Some(tokio::spawn(gospelib_billing::run_cancellations(
            clients.postgres.clone(),
            api.clone(),
            gospelib_billing::CancellationSettings::default(),
            cancellation_bell.clone(),
            inputs.shutdown.clone(),
        ))),
        None => {
            tracing::warn!(
                "no GOSPELIB_STRIPE_API_KEY: a deleted user's Stripe subscriptions are queued \
                 for cancellation but not cancelled until billing runs with one"
            );
            None
        }
    };
    let billing_settings = gospelib_billing::BillingSettings {
        plans: settings.plans.clone(),
        cancellations: Some(cancellation_bell.clone()),
        stripe,
        success_url: format!("{app}?checkout=success"),
        cancel_url: format!("{app}?checkout=cancelled"),
        return_url: app.to_owned(),
        ..gospelib_billing::BillingSettings::default()
    };
    let consumer = format!("billing-{}", consumer_suffix());
    let trial = tokio::spawn({
        let (pool, redis, plans) = (
            clients.postgres.clone(),
            clients.redis.clone(),
            settings.plans.clone(),
        );
        let (shutdown, cancellation_bell) = (inputs.shutdown.clone(), cancellation_bell.clone());
        async move {
            let stats = gospelib_billing::run_trial_consumer(
                pool,
                redis,
                plans,
                gospelib_billing::TrialConsumerSettings::new(consumer),
                cancellation_bell,
                shutdown,
            )
            .await;
            tracing::info!(?stats, "trial consumer stopped");
        }
    });
    let relay = tokio::spawn(gospelib_billing::relay_outbox(
        clients.postgres.clone(),
        clients.redis.clone(),
        OUTBOX_RELAY_EVERY,
        inputs.requests_done.clone(),
    ));
    let trial_ending = tokio::spawn(gospelib_billing::run_trial_ending_sweep(
        clients.postgres.clone(),
        clients.redis.clone(),
        gospelib_billing::TrialEndingSettings::default(),
        inputs.shutdown.clone(),
    ));
    Ok(BuiltPart {
        subgraph: gospelib_billing::subgraph(clients, billing_settings),
        public_routes: Some(gospelib_billing::webhook_routes(webhooks)),
        background: [trial, relay, trial_ending]
            .into_iter()
            .chain(cancellations)
            .chain([forget_old_rows(
                inputs,
                &[
                    ("billing.stripe_events", "received_at"),
                    ("billing.stripe_cancellations", "done_at"),
                    ("billing.processed_user_events", "processed_at"),
                    ("billing.outbox", "published_at"),
                ],
            )])
            .collect(),
    })
}

/// Stripe's API client, when a key is set.
type StripeClient = Option<Arc<dyn gospelib_billing::StripeApi>>;

/// What billing needs of Stripe's settings: the webhook secret (required, and in a form Stripe
/// signs with), and the API client when a key is set.
fn billing_stripe(stripe: &StripeSettings) -> Result<(&str, StripeClient), ConfigError> {
    const WEBHOOK_SECRET: &str = "GOSPELIB_STRIPE_WEBHOOK_SECRET";
    let secret = stripe.webhook_secret.as_deref().ok_or_else(|| {
        one_problem(
            WEBHOOK_SECRET,
            "the webhook endpoint's signing secret from Stripe (`whsec_…`), needed by the \
             billing part",
            Problem::Missing,
        )
    })?;
    gospelib_billing::stripe::signature::StripeVerifier::new(secret).map_err(|error| {
        one_problem(
            WEBHOOK_SECRET,
            "a Stripe signing secret (`whsec_…`)",
            Problem::Malformed {
                shown: None,
                reason: error.to_string(),
            },
        )
    })?;
    let api = match &stripe.api_key {
        Some(key) => {
            let client = gospelib_billing::HttpStripe::with_options(
                key,
                stripe.api_base.as_str().trim_end_matches('/'),
                STRIPE_TIMEOUT,
            )
            .map_err(|error| {
                one_problem(
                    "GOSPELIB_STRIPE_API_KEY",
                    "a Stripe secret or restricted key (`sk_…`, `rk_…`)",
                    Problem::Malformed {
                        shown: None,
                        reason: error.to_string(),
                    },
                )
            })?;
            Some(Arc::new(client) as Arc<dyn gospelib_billing::StripeApi>)
        }
        None => None,
    };
    Ok((secret, api))
}

fn check_billing(env: &Env) -> Result<(), ConfigError> {
    let mut reader = ConfigReader::new(env);
    let stripe = StripeSettings::read(&mut reader);
    // A malformed Stripe variable is a problem of the shared settings, reported with them.
    match (stripe, reader.finish()) {
        (Some(stripe), Ok(())) => billing_stripe(&stripe).map(drop),
        _ => Ok(()),
    }
}

/// Forgets `tables`' (table, timestamp column) rows older than the retention every hour: what a
/// part keeps only to recognise repeats, or publishes and keeps as history (see
/// [`gospelib_kit::retention`]).
fn forget_old_rows(
    inputs: &PartInputs<'_>,
    tables: &[(&'static str, &'static str)],
) -> tokio::task::JoinHandle<()> {
    use gospelib_kit::retention::{DEFAULT_KEEP, Retained};
    let tables = tables
        .iter()
        .map(|&(table, column)| Retained {
            table,
            column,
            keep: DEFAULT_KEEP,
        })
        .collect();
    forget_by_age(inputs, tables)
}

/// Forgets, every hour, the rows of `tables` older than each one's `keep`.
fn forget_by_age(
    inputs: &PartInputs<'_>,
    tables: Vec<gospelib_kit::retention::Retained>,
) -> tokio::task::JoinHandle<()> {
    use gospelib_kit::retention::{DEFAULT_EVERY, run_retention};
    tokio::spawn(run_retention(
        inputs.clients.postgres.clone(),
        tables,
        DEFAULT_EVERY,
        inputs.shutdown.clone(),
    ))
}

/// Highlights, notes, bookmarks and reading progress; the consumer of `gl:events:users` that
/// removes a deleted user's study data.
fn study(inputs: &PartInputs<'_>) -> Result<BuiltPart, ConfigError> {
    let clients = inputs.clients;
    let consumer = tokio::spawn({
        let (pool, redis) = (clients.postgres.clone(), clients.redis.clone());
        let shutdown = inputs.shutdown.clone();
        let name = format!("study-{}", consumer_suffix());
        async move {
            let stats = gospelib_study::run_user_events_consumer(
                pool,
                redis,
                gospelib_study::UserEventsSettings::new(name),
                shutdown,
            )
            .await;
            tracing::info!(?stats, "study's user-events consumer stopped");
        }
    });
    let (subgraph, service) =
        gospelib_study::subgraph_and_service(clients, gospelib_study::StudySettings::default());
    inputs
        .metrics
        .count_store_queries_from("postgres", "study", move || service.queries_run());
    Ok(BuiltPart {
        subgraph,
        public_routes: None,
        background: vec![
            consumer,
            forget_old_rows(
                inputs,
                &[
                    ("study.processed_events", "processed_at"),
                    ("study.deleted_items", "deleted_at"),
                ],
            ),
        ],
    })
}

/// Each user's inbox and notification preferences; the consumers of `gl:events:users` and
/// `gl:events:billing` that make notifications from them (and keep each user's devices and
/// address); the worker delivering them through APNs, FCM and Resend (`GOSPELIB_APNS_*`,
/// `GOSPELIB_FCM_*`, `GOSPELIB_RESEND_*`, `GOSPELIB_NOTIFICATIONS_DELIVERY_*`; a provider left
/// unset skips its sends); the outbox of `device.rejected` relayed to `gl:events:notifications`.
fn notifications(inputs: &PartInputs<'_>) -> Result<BuiltPart, ConfigError> {
    let clients = inputs.clients;
    let name = format!("notifications-{}", consumer_suffix());
    let delivery =
        gospelib_notifications::DeliveryConfig::from_env(&Env::from_process(), name.clone())?;
    let spawn = |settings: gospelib_notifications::EventsSettings| {
        let (pool, redis) = (clients.postgres.clone(), clients.redis.clone());
        let live = clients.live.clone();
        let shutdown = inputs.shutdown.clone();
        tokio::spawn(async move {
            let stats =
                gospelib_notifications::run_events_consumer(pool, redis, live, settings, shutdown)
                    .await;
            tracing::info!(?stats, "notifications' events consumer stopped");
        })
    };
    let users = spawn(gospelib_notifications::EventsSettings::users(name.clone()));
    let billing = spawn(gospelib_notifications::EventsSettings::billing(name));
    let worker = tokio::spawn({
        let (pool, redis) = (clients.postgres.clone(), clients.redis.clone());
        let shutdown = inputs.shutdown.clone();
        async move {
            let stats = gospelib_notifications::run_delivery_worker(
                pool,
                redis,
                delivery.providers,
                delivery.settings,
                shutdown,
            )
            .await;
            tracing::info!(?stats, "notifications' delivery worker stopped");
        }
    });
    let relay = tokio::spawn(gospelib_notifications::relay_outbox(
        clients.postgres.clone(),
        clients.redis.clone(),
        OUTBOX_RELAY_EVERY,
        inputs.requests_done.clone(),
    ));
    Ok(BuiltPart {
        subgraph: gospelib_notifications::subgraph(clients),
        public_routes: None,
        background: vec![
            users,
            billing,
            worker,
            relay,
            forget_by_age(inputs, gospelib_notifications::retention::retained()),
        ],
    })
}

/// The delivery providers and the worker's settings (key files are read, clients built).
fn check_notifications(env: &Env) -> Result<(), ConfigError> {
    gospelib_notifications::DeliveryConfig::from_env(env, "settings-check").map(drop)
}

/// The study assistant: answers grounded in the scripture graph, which it reads through
/// content's GraphQL API — content's executor built in this process, or content's endpoint
/// over HTTP when `GOSPELIB_AI_CONTENT_URL` is set (Phase 2) — by the LLM vendors
/// `GOSPELIB_ANTHROPIC_*`/`GOSPELIB_OPENAI_*` configure (none: the extractive provider), with
/// answers cached in Redis.
fn ai(inputs: &PartInputs<'_>) -> Result<BuiltPart, ConfigError> {
    let clients = inputs.clients;
    let env = Env::from_process();
    let (over_http, llm, vendor_budget) = ai_settings(&env)?;
    let content: Arc<dyn gospelib_ai::content::ContentSource> = match over_http {
        Some(content) => Arc::new(content.signed_with(caller_key(inputs.settings, "content")?)),
        None => {
            // With content's own settings (its FalkorDB read replica, its Typesense nodes).
            let (subgraph, _) = gospelib_content::schema::subgraph_from_env(
                gospelib_content::namespace::Namespace::production(),
                clients,
                &env,
            )?;
            Arc::new(gospelib_ai::content::InProcess(subgraph.executor))
        }
    };
    let cache = gospelib_ai::cache::AnswerCache::new(clients.redis.clone(), "gl");
    let budget =
        gospelib_ai::budget::VendorBudget::new(clients.redis.clone(), "gl", vendor_budget.per_day)
            .per_caller(vendor_budget.per_caller);
    let assistant = gospelib_ai::assistant::Assistant::new(content, llm, Some(cache))
        .with_vendor_budget(budget)
        .with_metrics(inputs.metrics.clone());
    Ok(BuiltPart {
        subgraph: gospelib_ai::subgraph(gospelib_ai::AiService::new(assistant)),
        public_routes: None,
        background: Vec::new(),
    })
}

/// The assistant's settings: content's endpoint when content runs elsewhere (else `None`: in
/// this process), the LLM client (`None`: the extractive provider), and the vendors' daily
/// budget (`GOSPELIB_AI_DAILY_VENDOR_QUESTIONS`, `…_PER_CALLER`).
type AiSettings = (
    Option<gospelib_ai::content::OverHttp>,
    Option<Arc<dyn gospelib_ai::llm::LlmClient>>,
    gospelib_ai::budget::BudgetSettings,
);

/// [`AiSettings`] from `env`, with every problem of each.
fn ai_settings(env: &Env) -> Result<AiSettings, ConfigError> {
    let content = ai_content_over_http(env);
    let llm = gospelib_ai::llm::LlmSettings::from_env(env);
    let mut reader = ConfigReader::new(env);
    let budget = gospelib_ai::budget::BudgetSettings::read(&mut reader);
    let budget = reader
        .finish()
        .map(|()| budget.expect("present once finish() succeeded"));
    match (content, llm, budget) {
        (Ok(content), Ok(llm), Ok(budget)) => Ok((content, llm, budget)),
        (content, llm, budget) => Err(ConfigError {
            problems: content
                .err()
                .into_iter()
                .chain(llm.err())
                .chain(budget.err())
                .flat_map(|error| error.problems)
                .collect(),
        }),
    }
}

/// Content's GraphQL API over HTTP when `GOSPELIB_AI_CONTENT_URL` is set.
fn ai_content_over_http(env: &Env) -> Result<Option<gospelib_ai::content::OverHttp>, ConfigError> {
    let mut reader = ConfigReader::new(env);
    let content_url = reader.raw(AI_CONTENT_URL).is_some().then(|| {
        reader.required_url(
            AI_CONTENT_URL,
            "http://content.internal:4001/graphql",
            &["http", "https"],
        )
    });
    reader.finish()?;
    content_url
        .flatten()
        .map(|url| {
            gospelib_ai::content::OverHttp::new(url, AI_CONTENT_TIMEOUT).map_err(|error| {
                one_problem(
                    AI_CONTENT_URL,
                    "an http(s) URL of content's GraphQL endpoint",
                    Problem::Malformed {
                        shown: None,
                        reason: error.to_string(),
                    },
                )
            })
        })
        .transpose()
}

fn check_ai(env: &Env) -> Result<(), ConfigError> {
    ai_settings(env).map(drop)
}

/// `GOSPELIB_AI_CONTENT_URL`: content's GraphQL endpoint for the assistant in another process.
const AI_CONTENT_URL: &str = "GOSPELIB_AI_CONTENT_URL";

/// The deadline of one context query to content over HTTP.
const AI_CONTENT_TIMEOUT: Duration = Duration::from_secs(5);

/// What distinguishes this process's stream consumers from other pods' (the pod's host name, or
/// the process id): a restarted pod reclaims its own pending entries, and the others' after
/// they have been idle long enough.
fn consumer_suffix() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string())
}

/// How long one call to Stripe's API may take.
const STRIPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The chosen parts, built, as one process serves them.
pub struct Assembled {
    /// Each behind the caller guard: only a router-signed caller context is believed.
    pub subgraphs: Vec<Subgraph>,
    /// The stores `/ready` checks: everything in the one-process topology, because that node
    /// runs beside every store.
    pub dependencies: Vec<Dependency>,
    pub public_routes: Option<axum::Router>,
    pub background: Vec<tokio::task::JoinHandle<()>>,
}

/// The caller key of the subgraph `name`: what this process checks the callers of `name`
/// with when it serves it, or signs its own requests to `name` with (the assistant's to
/// content over HTTP). A process given keys (`GOSPELIB_CALLER_KEYS`) must have been given it.
pub fn caller_key(settings: &ServeSettings, name: &str) -> Result<CallerKey, ConfigError> {
    settings.caller_keys.get(name).ok_or_else(|| {
        no_key_for(
            "GOSPELIB_CALLER_KEYS",
            name,
            "prints it",
            "which this process needs",
        )
    })
}

/// The problem of keys in `variable` that hold none for the subgraph `name` (`how` says where
/// the key comes from, `why` why it is needed).
fn no_key_for(variable: &str, name: &str, how: &str, why: &str) -> ConfigError {
    one_problem(
        variable,
        &format!("`{name}=KEY` among the keys (`gospelib caller-keys {name}` {how})"),
        Problem::Malformed {
            shown: None,
            reason: format!("it holds no key for {name}, {why}"),
        },
    )
}

/// The key of the subgraph `name` derived from the previous internal secret, which its guard
/// still believes while the secret is rotated: none when `GOSPELIB_CALLER_KEYS_PREVIOUS` is
/// unset; when it is set, it must hold a key for every subgraph this process serves (a
/// misnamed entry would otherwise be noticed only when the rotation refuses requests).
pub fn previous_caller_key(
    settings: &ServeSettings,
    name: &str,
) -> Result<Option<CallerKey>, ConfigError> {
    if settings.previous_caller_keys.is_empty() {
        return Ok(None);
    }
    settings
        .previous_caller_keys
        .get(name)
        .map(Some)
        .ok_or_else(|| {
            no_key_for(
                "GOSPELIB_CALLER_KEYS_PREVIOUS",
                name,
                "with the previous secret",
                "which this process serves",
            )
        })
}

/// The subgraphs whose caller keys the chosen parts need, as `env` configures them: each
/// part's own, and content's for an assistant that asks content over HTTP.
pub fn needed_caller_keys(parts: &[&'static Part], env: &Env) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = parts.iter().map(|part| part.name).collect();
    if names.contains(&"ai") && env.get(AI_CONTENT_URL).is_some() && !names.contains(&"content") {
        names.push("content");
    }
    names
}

pub fn assemble(
    parts: &[&'static Part],
    whole_platform: bool,
    inputs: &PartInputs<'_>,
) -> Result<Assembled, ConfigError> {
    let mut assembled = Assembled {
        subgraphs: Vec::new(),
        dependencies: if whole_platform {
            inputs.clients.all_dependencies()
        } else {
            Vec::new()
        },
        public_routes: None,
        background: Vec::new(),
    };
    // One ledger (one Redis connection) for every part's guard.
    let ledger = NonceLedger::new(inputs.clients.redis.clone(), "gl");
    for part in parts {
        let built = (part.build)(inputs)?;
        let mut subgraph = built.subgraph;
        subgraph.executor = Arc::new(
            CallerGuard::new(
                subgraph.executor,
                caller_key(inputs.settings, part.name)?,
                ledger.clone(),
            )
            .also_believing(previous_caller_key(inputs.settings, part.name)?),
        );
        assembled.subgraphs.push(subgraph);
        assembled.public_routes = match (assembled.public_routes, built.public_routes) {
            (Some(routes), Some(more)) => Some(routes.merge(more)),
            (routes, more) => routes.or(more),
        };
        assembled.background.extend(built.background);
    }
    Ok(assembled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_part_is_refused_with_the_known_ones() {
        let error = select(&["nonesuch".to_owned()]).err().unwrap();
        assert!(matches!(&error, SelectError::UnknownPart { name, .. } if name == "nonesuch"));
        assert!(
            error
                .to_string()
                .contains("unknown part \"nonesuch\" in --only")
        );
        assert!(error.to_string().ends_with(", ai, registry"), "{error}");
    }

    #[test]
    fn an_only_list_naming_nothing_is_refused() {
        for only in [vec![String::new()], vec![" ".to_owned(), ",".to_owned()]] {
            let only: Vec<String> = only
                .iter()
                .flat_map(|n| n.split(','))
                .map(str::to_owned)
                .collect();
            assert!(
                matches!(select(&only), Err(SelectError::NothingChosen { .. })),
                "{only:?}"
            );
        }
    }

    #[test]
    fn the_registry_alone_is_no_part() {
        let only = ["registry".to_owned()];
        assert!(select(&only).unwrap().is_empty());
        assert!(serves_registry(&only));
        let only = ["registry".to_owned(), "content".to_owned()];
        assert_eq!(select(&only).unwrap().len(), 1);
        assert!(serves_registry(&only));
        assert!(!serves_registry(&["content".to_owned()]));
        assert!(serves_registry(&[]));
    }

    #[test]
    fn no_only_means_every_part() {
        assert_eq!(select(&[]).unwrap().len(), PARTS.len());
    }
}

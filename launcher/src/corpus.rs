//! `gospelib corpus …`: the corpus jobs, with their reports on stdout.

use std::path::Path;

use anyhow::Context;
use gospelib_content::graph::Graph;
use gospelib_content::import::{self, ImportOptions};
use gospelib_content::ingest::{self, Targets};
use gospelib_content::namespace::Namespace;
use gospelib_kit::config::Env;
use gospelib_kit::stores::{TypesenseClient, redis_client};

use crate::settings::read_ingest_settings;

/// `gospelib corpus import`: writes `<data>/corpus` (and the fixture when asked), prints the
/// report as JSON.
pub fn run_import(data: &Path, fixture: Option<&Path>) -> anyhow::Result<()> {
    let options = ImportOptions {
        downloads: data.join("downloads"),
        work: data.join("work"),
        out: data.join("corpus"),
    };
    let (corpus, report) = import::import(&options).context("corpus import")?;
    if let Some(fixture) = fixture {
        import::write(&import::excerpt(&corpus), fixture, true).context("writing the fixture")?;
        gospelib_content::corpus::load(fixture).context("the fixture does not validate")?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `gospelib ingest`: validates the corpus, writes the graph and search, prints the report as
/// JSON.
pub async fn run_ingest(env: &Env, corpus: &Path, dry_run: bool) -> anyhow::Result<()> {
    let settings = read_ingest_settings(env)?;
    let stores = &settings.stores;
    let namespace = Namespace::production();
    let mut typesense =
        TypesenseClient::new(stores.typesense.clone(), stores.typesense_api_key.clone())
            .context("HTTP client")?;
    if !settings.typesense_nodes.is_empty() && !dry_run {
        // Through the leader: the ingest reads back what it wrote, which a follower may not
        // hold yet.
        typesense = leader_of(&typesense, &settings.typesense_nodes).await?;
        tracing::info!(node = %typesense.base_url, "ingesting through the Typesense cluster's leader");
    }
    let targets = Targets {
        graph: Graph::new(&stores.falkordb, &namespace.graph),
        namespace,
        typesense,
        redis: redis_client(&stores.redis).context("GOSPELIB_REDIS_URL")?,
        replica_wait: ingest::REPLICA_WAIT,
    };
    let report = ingest::ingest(corpus, dry_run, &targets)
        .await
        .context("ingest")?;
    eprintln!("{}", summary(&report));
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// How long the ingest waits for a Typesense cluster to have a leader (an election takes
/// seconds) before it fails.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The node of `nodes` leading their cluster, asked every 2 s for up to [`LEADER_WAIT`] while
/// none does (at once refused when a node refuses the key: waiting will not mend that).
async fn leader_of(
    client: &TypesenseClient,
    nodes: &[url::Url],
) -> anyhow::Result<TypesenseClient> {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    loop {
        match gospelib_content::typesense::leader(client, nodes).await {
            Ok(leader) => return Ok(leader),
            Err(none) if !none.key_refused && tokio::time::Instant::now() < deadline => {
                tracing::info!(%none, "waiting for the Typesense cluster to have a leader");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(none) => {
                return Err(anyhow::Error::new(none).context(
                    "GOSPELIB_TYPESENSE_URLS: the ingest writes through the cluster's leader",
                ));
            }
        }
    }
}

/// The report for people: one line per stage, then the graph's and search's counts.
fn summary(report: &ingest::IngestReport) -> String {
    let mut text = format!(
        "ingest of content version {}{} in {:.1} s\n",
        report.version,
        if report.dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        },
        report.seconds
    );
    for stage in &report.stages {
        text.push_str(&format!(
            "  {:<16} {:>9} rows {:>8.2} s\n",
            stage.stage, stage.rows, stage.seconds
        ));
    }
    for (label, count) in &report.nodes {
        text.push_str(&format!("  node {label:<14} {count:>9}\n"));
    }
    for (edge, count) in &report.edges {
        text.push_str(&format!("  edge {edge:<14} {count:>9}\n"));
    }
    for (collection, count) in &report.search {
        text.push_str(&format!("  search {collection:<12} {count:>9}\n"));
    }
    text
}

//! `platform-load`: the platform benchmark's driver (`scripts/bench-platform` runs it).
//!
//! - `prepare`: reads the canon (every chapter's verse count), the topic ids and the Strong's
//!   entries the mix uses from the running platform (anonymously, through the router).
//! - `seed`: writes the readers and their study data as COPY files (see [`seed`]).
//! - `marker`: prints the seed's identity (the script skips seeding when it is stored).
//! - `tokens`: mints each seeded user's session token (see [`tokens`]).
//! - `verify`: signs in as some users and checks the platform knows them under the seeded ids.
//! - `run`: the load (see [`load`] and [`mix`]); one JSON line, then a readable line.
//! - `prime`: every chapter's reader page once.

mod canon;
mod ids;
mod load;
mod mix;
mod prom;
mod rng;
mod seed;
mod tokens;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "platform-load",
    about = "The platform benchmark's seed, tokens and load."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read the canon, topics and Strong's entries from the platform into `--out`.
    Prepare {
        #[arg(long)]
        url: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the seed's COPY files into `--out`; print what they hold.
    Seed {
        /// Where `prepare` wrote the canon.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        users: u32,
        #[arg(long, default_value_t = 20_261_201)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the seed's marker.
    Marker {
        #[arg(long, default_value_t = 10_000)]
        users: u32,
        #[arg(long, default_value_t = 20_261_201)]
        seed: u64,
    },
    /// Mint every seeded user's session token into `--out`.
    Tokens {
        #[arg(long, default_value_t = 10_000)]
        users: u32,
        #[arg(long, default_value_t = 20_261_201)]
        seed: u64,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        audience: String,
        /// How long the tokens are valid (the router refuses one valid for over an hour).
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign in as some seeded users and check who the platform says they are.
    Verify {
        #[arg(long)]
        url: String,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long, default_value_t = 20_261_201)]
        seed: u64,
    },
    /// The load.
    Run(RunArgs),
    /// Every chapter's reader page once (the warm state's content).
    Prime {
        #[arg(long)]
        url: String,
        #[arg(long)]
        operations: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        tokens: PathBuf,
        #[arg(long, default_value_t = 20_261_201)]
        seed: u64,
        #[arg(long, default_value_t = 20)]
        connections: usize,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A router's GraphQL URL (repeat for several routers: connections take them in turn).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// The app's operations (client-tests/operations).
    #[arg(long)]
    operations: PathBuf,
    /// Where `prepare` wrote the canon, topics and Strong's entries.
    #[arg(long)]
    data: PathBuf,
    /// The tokens `tokens` minted.
    #[arg(long)]
    tokens: PathBuf,
    #[arg(long, default_value_t = 20_261_201)]
    seed: u64,
    /// Concurrent readers, each with one request in flight.
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds first (0: the window opens with the first request).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value = "load")]
    label: String,
    /// `key=value` copied into the JSON line (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Page views per session of one user (geometric mean).
    #[arg(long, default_value_t = 6.0)]
    session_mean: f64,
    /// Mean pause after each page view, milliseconds (exponential; 0: closed loop).
    #[arg(long, default_value_t = 0.0)]
    think_ms: f64,
    /// Weights of the mix, e.g. `ReaderPage=45,Search=12` (the rest keep their defaults).
    #[arg(long, default_value = "")]
    mix: String,
    /// A Prometheus endpoint read at the window's edges (repeatable; their growth is summed).
    #[arg(long = "metrics")]
    metrics: Vec<String>,
    /// A shell command printing `name value` lines (store counters), run at the window's edges.
    #[arg(long)]
    probe: Option<String>,
    /// `NAME=PID`: a process whose CPU time is reported (repeatable).
    #[arg(long = "cpu")]
    cpu: Vec<String>,
    /// `NAME=PID`: a process whose CPU time, with its children's, is reported (repeatable).
    #[arg(long = "cpu-tree")]
    cpu_tree: Vec<String>,
}

fn name_pid(text: &str, children: bool) -> anyhow::Result<(String, u32, bool)> {
    let (name, pid) = text
        .split_once('=')
        .with_context(|| format!("`{text}` is not NAME=PID"))?;
    Ok((
        name.to_owned(),
        pid.trim().parse().context("a pid")?,
        children,
    ))
}

/// `query` answered, as an anonymous caller; refused for its rate limit (`429`), asked again
/// every two seconds until the limit lets it through (at most three minutes): preparing reads
/// more lexicon entries than an anonymous caller may ask in a minute (each aliased entry counts).
async fn graphql(url: &str, query: &str, variables: Value) -> anyhow::Result<Value> {
    let http = load::client()?;
    let body = serde_json::to_vec(&json!({"query": query, "variables": variables}))?;
    let mut attempts = 0;
    let bytes = loop {
        match load::send(&http, url, None, body.clone()).await {
            Ok(bytes) => break bytes,
            Err(error) if error.to_string().contains("HTTP 429") && attempts < 90 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(error) => anyhow::bail!("{error}"),
        }
    };
    Ok(serde_json::from_slice(&bytes)?)
}

async fn prepare(url: &str, out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    // 20 books an operation (the most root fields one may have): every chapter of every book
    // in one costs more than the router's cost limit allows, and one operation a book is more
    // than an anonymous caller's `passages` allowance a minute (aliases in one operation count
    // once).
    let index = graphql(url, "{ books { id corpus } }", json!({}))
        .await
        .context("the canon's books")?;
    let mut books = Vec::new();
    for chunk in index["data"]["books"]
        .as_array()
        .context("no books")?
        .chunks(20)
    {
        let fields: Vec<String> = (0..chunk.len())
            .map(|i| format!("b{i}: book(id: $b{i}) {{ chapters {{ number verseCount }} }}"))
            .collect();
        let parameters: Vec<String> = (0..chunk.len()).map(|i| format!("$b{i}: ID!")).collect();
        let query = format!(
            "query Chapters({}) {{ {} }}",
            parameters.join(", "),
            fields.join(" ")
        );
        let variables: serde_json::Map<String, Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, book)| (format!("b{i}"), book["id"].clone()))
            .collect();
        let answer = graphql(url, &query, Value::Object(variables))
            .await
            .with_context(|| {
                format!(
                    "the chapters of {} books from {}",
                    chunk.len(),
                    chunk[0]["id"]
                )
            })?;
        for (i, book) in chunk.iter().enumerate() {
            let chapters = &answer["data"][format!("b{i}")]["chapters"];
            anyhow::ensure!(
                chapters.is_array(),
                "no chapters for {}: {answer}",
                book["id"]
            );
            let mut book = book.clone();
            book["chapters"] = chapters.clone();
            books.push(book);
        }
    }
    let books = json!({ "data": { "books": books } });
    let canon = canon::Canon::from_books(&books["data"]["books"])?;
    std::fs::write(
        out.join("canon.json"),
        serde_json::to_string(&json!({"books": books["data"]["books"]}))?,
    )?;
    let mut topics = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = graphql(
            url,
            "query($after: String) { topics(first: 100, after: $after) { pageInfo { hasNextPage endCursor } nodes { id } } }",
            json!({ "after": after }),
        )
        .await
        .context("the topics")?;
        let connection = &page["data"]["topics"];
        for node in connection["nodes"].as_array().context("topics")? {
            topics.push(node["id"].as_str().context("a topic id")?.to_owned());
        }
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
    std::fs::write(out.join("topics.txt"), topics.join("\n") + "\n")?;
    // Only the Strong's entries the lexicon holds (aliased, 20 per request).
    let mut strongs = Vec::new();
    for chunk in mix::STRONGS.chunks(20) {
        let fields: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| format!("e{i}: lexiconEntry(id: \"{id}\") {{ id }}"))
            .collect();
        let answer = graphql(url, &format!("{{ {} }}", fields.join(" ")), json!({}))
            .await
            .context("the Strong's entries")?;
        for (i, id) in chunk.iter().enumerate() {
            if answer["data"][format!("e{i}")]["id"] == *id {
                strongs.push(*id);
            }
        }
    }
    std::fs::write(out.join("strongs.txt"), strongs.join("\n") + "\n")?;
    println!(
        "{}",
        json!({"chapters": canon.chapters.len(), "topics": topics.len(),
               "strongs": strongs.len(), "skew": canon.skew()})
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread: the driver is pinned to one core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Prepare { url, out } => runtime.block_on(prepare(&url, &out)),
        Command::Seed {
            data,
            users,
            seed,
            out,
        } => {
            let canon = canon::Canon::from_file(&data.join("canon.json"))?;
            let summary = seed::write(&canon, users, seed, &out)?;
            println!("{summary}");
            Ok(())
        }
        Command::Marker { users, seed } => {
            println!("{}", seed::marker(users, seed));
            Ok(())
        }
        Command::Tokens {
            users,
            seed,
            issuer,
            audience,
            minutes,
            out,
        } => tokens::mint(users, seed, &issuer, &audience, minutes, &out),
        Command::Verify { url, tokens, seed } => {
            let tokens = tokens::read(&tokens)?;
            let report = runtime.block_on(load::verify(&url, &tokens, seed))?;
            println!("{report}");
            Ok(())
        }
        Command::Prime {
            url,
            operations,
            data,
            tokens,
            seed,
            connections,
        } => {
            let mix = mix::Mix::load(&operations, &data, mix::DEFAULT_WEIGHTS, seed)?;
            let tokens = tokens::read(&tokens)?;
            anyhow::ensure!(!tokens.is_empty(), "no tokens");
            let shared = Arc::new(load::Shared::new(mix, tokens, seed, "prime"));
            let report = runtime.block_on(load::prime(&url, shared, connections))?;
            println!("{report}");
            Ok(())
        }
        Command::Run(args) => {
            let weights = mix::parse_weights(&args.mix)?;
            let mix = mix::Mix::load(&args.operations, &args.data, weights, args.seed)?;
            let tokens = tokens::read(&args.tokens)?;
            anyhow::ensure!(!tokens.is_empty(), "no tokens");
            let shared = Arc::new(load::Shared::new(mix, tokens, args.seed, &args.label));
            let mut cpu = Vec::new();
            for text in &args.cpu {
                cpu.push(name_pid(text, false)?);
            }
            for text in &args.cpu_tree {
                cpu.push(name_pid(text, true)?);
            }
            let tags = args
                .tags
                .iter()
                .map(|tag| {
                    tag.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--tag {tag:?} is not key=value"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let settings = load::Settings {
                urls: args.urls,
                connections: args.connections,
                duration: args.duration,
                warmup: args.warmup,
                label: args.label,
                tags,
                seed: args.seed,
                session_mean: args.session_mean,
                think_ms: args.think_ms,
                metrics: args.metrics,
                probe: args.probe,
                cpu,
            };
            runtime.block_on(load::run(shared, settings))
        }
    }
}

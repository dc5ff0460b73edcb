//! `demo-subgraphs`: serves the four demo subgraphs (accounts, inventory, products, reviews),
//! each on its own loopback port, until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use gospelib_federation_bench as demo;

#[derive(Debug, Parser)]
#[command(
    name = "demo-subgraphs",
    about = "The classic four-subgraph federation demo, each subgraph on its own 127.0.0.1 port."
)]
struct Cli {
    #[arg(long, env = "GOSPELIB_BENCH_ACCOUNTS_PORT", default_value_t = demo::SUBGRAPHS[0].1)]
    accounts_port: u16,
    #[arg(long, env = "GOSPELIB_BENCH_INVENTORY_PORT", default_value_t = demo::SUBGRAPHS[1].1)]
    inventory_port: u16,
    #[arg(long, env = "GOSPELIB_BENCH_PRODUCTS_PORT", default_value_t = demo::SUBGRAPHS[2].1)]
    products_port: u16,
    #[arg(long, env = "GOSPELIB_BENCH_REVIEWS_PORT", default_value_t = demo::SUBGRAPHS[3].1)]
    reviews_port: u16,
}

async fn listen(name: &str, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("{name}: cannot listen on 127.0.0.1:{port}"))?;
    eprintln!("{name}: {}", demo::subgraph_url(port));
    Ok(listener)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let accounts = listen("accounts", cli.accounts_port).await?;
    let inventory = listen("inventory", cli.inventory_port).await?;
    let products = listen("products", cli.products_port).await?;
    let reviews = listen("reviews", cli.reviews_port).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = demo::serve(demo::accounts(), accounts) => result.context("accounts")?,
        result = demo::serve(demo::inventory(), inventory) => result.context("inventory")?,
        result = demo::serve(demo::products(), products) => result.context("products")?,
        result = demo::serve(demo::reviews(), reviews) => result.context("reviews")?,
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

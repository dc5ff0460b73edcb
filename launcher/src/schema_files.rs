//! `gospelib schema export|compose`: each part's federation SDL and the composed supergraph,
//! written where the repository keeps them (`schema/subgraphs/<name>.graphql`,
//! `schema/supergraph.graphql`). Tests check the committed files equal what the code gives.

use std::path::Path;

use anyhow::Context;
use gospelib_schema::compose::{CompositionFailed, SubgraphSdl, compose};

use crate::parts::PARTS;

/// Where the committed supergraph says each subgraph is: its path on the one-process server's
/// internal listener (the public one serves no subgraph), at `scripts/run`'s default address.
pub fn committed_url(name: &str) -> String {
    format!("http://127.0.0.1:4001/subgraphs/{name}/graphql")
}

/// Every part's SDL with the URL `url` gives it.
pub fn subgraph_sdls(url: impl Fn(&str) -> String) -> Vec<SubgraphSdl> {
    PARTS
        .iter()
        .map(|part| SubgraphSdl {
            name: part.name.to_owned(),
            url: url(part.name),
            sdl: (part.sdl)(),
        })
        .collect()
}

/// The supergraph of every part, reached at the URLs `url` gives.
pub fn supergraph(url: impl Fn(&str) -> String) -> Result<String, CompositionFailed> {
    compose(&subgraph_sdls(url))
}

/// `gospelib schema export`: writes `<dir>/<name>.graphql` for each part.
pub fn export(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for subgraph in subgraph_sdls(committed_url) {
        let path = dir.join(format!("{}.graphql", subgraph.name));
        std::fs::write(&path, &subgraph.sdl)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// `gospelib schema compose`: writes the supergraph of the committed subgraph URLs.
pub fn compose_to(file: &Path) -> anyhow::Result<()> {
    let sdl = supergraph(committed_url)?;
    std::fs::write(file, sdl).with_context(|| format!("writing {}", file.display()))?;
    println!("{}", file.display());
    Ok(())
}

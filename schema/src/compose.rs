//! Composition: subgraph SDLs → the supergraph SDL (Federation 2, join spec), with the
//! reference algorithm of the `apollo-federation` crate (merge rules and satisfiability).

use apollo_federation::composition::{CompositionOptions, compose as compose_subgraphs};
use apollo_federation::subgraph::typestate::Subgraph;

/// One subgraph's federation SDL and the URL the router reaches it at.
#[derive(Debug, Clone)]
pub struct SubgraphSdl {
    pub name: String,
    pub url: String,
    pub sdl: String,
}

/// Why composition failed: every error, as the composer words it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("composition failed:\n{}", errors.join("\n"))]
pub struct CompositionFailed {
    pub errors: Vec<String>,
}

/// Composes the subgraphs into a supergraph SDL.
pub fn compose(subgraphs: &[SubgraphSdl]) -> Result<String, CompositionFailed> {
    let mut parsed = Vec::with_capacity(subgraphs.len());
    let mut errors = Vec::new();
    for subgraph in subgraphs {
        match Subgraph::parse(&subgraph.name, &subgraph.url, &subgraph.sdl) {
            Ok(parsed_subgraph) => parsed.push(parsed_subgraph),
            Err(error) => errors.push(format!(
                "[{}] {}",
                subgraph.name,
                error.to_string().trim_end()
            )),
        }
    }
    if !errors.is_empty() {
        return Err(CompositionFailed { errors });
    }
    match compose_subgraphs(parsed, CompositionOptions::default()) {
        Ok(supergraph) => Ok(supergraph.schema().schema().to_string()),
        Err(failure) => Err(CompositionFailed {
            errors: failure.errors.iter().map(ToString::to_string).collect(),
        }),
    }
}

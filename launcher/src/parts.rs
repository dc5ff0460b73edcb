//! The parts one `gospelib` process can run, and which stores each needs.
//!
//! Phase 1 runs every part in one process; Phase 2 runs one Deployment per part with
//! `gospelib serve --only <name>`. A subgraph becomes a part here when its crate exists.

use gospelib_kit::Subgraph;
use gospelib_kit::stores::Dependency;

use gospelib_kit::stores::StoreClients;

/// One part of the platform.
pub struct Part {
    pub name: &'static str,
    /// Builds the part's subgraph on the process's shared connections.
    pub build: fn(&StoreClients) -> Subgraph,
    /// The part's federation SDL, without any store.
    pub sdl: fn() -> String,
}

/// Every part this build contains, in start-up order.
pub const PARTS: &[Part] = &[Part {
    name: gospelib_content::schema::NAME,
    build: content,
    sdl: gospelib_content::schema::federation_sdl,
}];

fn content(clients: &StoreClients) -> Subgraph {
    gospelib_content::schema::subgraph(
        gospelib_content::namespace::Namespace::production(),
        clients,
    )
    .0
}

/// A `--only` name that is not a part of this build.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown part {name:?} in --only; this build's parts are: {known}")]
pub struct UnknownPart {
    pub name: String,
    pub known: String,
}

/// The parts to run: all of them, or those named by `--only` (in the order given, once each).
pub fn select(only: &[String]) -> Result<Vec<&'static Part>, UnknownPart> {
    if only.is_empty() {
        return Ok(PARTS.iter().collect());
    }
    let mut chosen: Vec<&'static Part> = Vec::new();
    for name in only.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let Some(part) = PARTS.iter().find(|p| p.name == name) else {
            let known: Vec<&str> = PARTS.iter().map(|p| p.name).collect();
            return Err(UnknownPart {
                name: name.to_owned(),
                known: if known.is_empty() {
                    "(none yet)".to_owned()
                } else {
                    known.join(", ")
                },
            });
        };
        if !chosen.iter().any(|p| p.name == part.name) {
            chosen.push(part);
        }
    }
    Ok(chosen)
}

/// The subgraphs of the chosen parts and the stores the process must check in `/ready`:
/// everything, in the one-process topology, because that node runs beside every store.
pub fn assemble(
    parts: &[&'static Part],
    whole_platform: bool,
    connections: &StoreClients,
) -> (Vec<Subgraph>, Vec<Dependency>) {
    let subgraphs: Vec<Subgraph> = parts.iter().map(|p| (p.build)(connections)).collect();
    let dependencies = if whole_platform {
        connections.all_dependencies()
    } else {
        Vec::new()
    };
    (subgraphs, dependencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_part_is_refused_with_the_known_ones() {
        let error = select(&["nonesuch".to_owned()]).err().unwrap();
        assert_eq!(error.name, "nonesuch");
        assert!(
            error
                .to_string()
                .contains("unknown part \"nonesuch\" in --only")
        );
    }

    #[test]
    fn no_only_means_every_part() {
        assert_eq!(select(&[]).unwrap().len(), PARTS.len());
    }
}

//! Composition: subgraph SDLs → the supergraph SDL (Federation 2, join spec), with the
//! reference algorithm of the `apollo-federation` crate (merge rules and satisfiability), and
//! the API schema clients see (join internals and `@inaccessible` elements stripped).
//!
//! A failure lists every error with its code, the composer's message (which names the type and
//! field) and where it is: the subgraph, the line and column, and that line of the SDL.

use std::fmt;

use apollo_federation::ApiSchemaOptions;
use apollo_federation::composition::{CompositionOptions, compose as compose_subgraphs};
use apollo_federation::error::CompositionError;
use apollo_federation::subgraph::typestate::Subgraph;
use serde::{Deserialize, Serialize};

/// One subgraph's federation SDL and the URL the router reaches it at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubgraphSdl {
    pub name: String,
    pub url: String,
    pub sdl: String,
}

/// Where in a subgraph's SDL an error is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SdlLocation {
    pub subgraph: String,
    pub line: usize,
    pub column: usize,
    /// The text of that line, to show the reader without opening the file.
    pub excerpt: String,
}

/// One composition error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompositionIssue {
    /// The composer's error code, e.g. `INVALID_GRAPHQL`, `FIELD_TYPE_MISMATCH`.
    pub code: String,
    pub message: String,
    pub locations: Vec<SdlLocation>,
}

impl fmt::Display for CompositionIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        for location in &self.locations {
            write!(
                f,
                "\n    at {} line {}, column {}: {}",
                location.subgraph,
                location.line,
                location.column,
                location.excerpt.trim()
            )?;
        }
        Ok(())
    }
}

/// Why composition failed: every error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("composition failed with {} error(s):\n{}", issues.len(), render(issues))]
pub struct CompositionFailed {
    pub issues: Vec<CompositionIssue>,
}

fn render(issues: &[CompositionIssue]) -> String {
    issues
        .iter()
        .map(|issue| format!("  - {issue}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Composes the subgraphs into a supergraph SDL.
pub fn compose(subgraphs: &[SubgraphSdl]) -> Result<String, CompositionFailed> {
    let mut parsed = Vec::with_capacity(subgraphs.len());
    let mut errors: Vec<CompositionError> = Vec::new();
    for subgraph in subgraphs {
        match Subgraph::parse(&subgraph.name, &subgraph.url, &subgraph.sdl) {
            Ok(parsed_subgraph) => parsed.push(parsed_subgraph),
            Err(error) => {
                let failure: apollo_federation::composition::CompositionFailure = error.into();
                errors.extend(failure.errors);
            }
        }
    }
    if errors.is_empty() {
        match compose_subgraphs(parsed, CompositionOptions::default()) {
            Ok(supergraph) => return Ok(supergraph.schema().schema().to_string()),
            Err(failure) => errors = failure.errors,
        }
    }
    Err(CompositionFailed {
        issues: errors
            .iter()
            .map(|error| issue_of(error, subgraphs))
            .collect(),
    })
}

fn issue_of(error: &CompositionError, subgraphs: &[SubgraphSdl]) -> CompositionIssue {
    let code = error.code().definition().code().to_string();
    let message = error.to_string();
    // The composer prefixes subgraph errors with "[name] "; the locations say it again.
    let (prefix_subgraph, message) = match message
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        Some((name, text)) if subgraphs.iter().any(|s| s.name == name) => {
            (Some(name.to_owned()), text.to_owned())
        }
        _ => (None, message.clone()),
    };
    let mut locations: Vec<SdlLocation> = error
        .locations()
        .iter()
        .map(|location| {
            let line = location.range.start.line;
            let excerpt = subgraphs
                .iter()
                .find(|subgraph| subgraph.name == location.subgraph)
                .and_then(|subgraph| subgraph.sdl.lines().nth(line.saturating_sub(1)))
                .unwrap_or_default()
                .to_owned();
            SdlLocation {
                subgraph: location.subgraph.clone(),
                line,
                column: location.range.start.column,
                excerpt,
            }
        })
        .collect();
    if locations.is_empty() {
        locations = locate_named_elements(&message, prefix_subgraph.as_deref(), subgraphs);
    }
    CompositionIssue {
        code,
        message,
        locations,
    }
}

/// Some merge errors come without locations but name the element (`"Thing.size"`) and the
/// subgraphs (`subgraph "a"`): find that element's definition in each named subgraph.
fn locate_named_elements(
    message: &str,
    prefix_subgraph: Option<&str>,
    subgraphs: &[SubgraphSdl],
) -> Vec<SdlLocation> {
    let quoted: Vec<&str> = message.split('"').skip(1).step_by(2).collect();
    let named_subgraphs: Vec<&SubgraphSdl> = subgraphs
        .iter()
        .filter(|subgraph| {
            prefix_subgraph == Some(subgraph.name.as_str())
                || message.contains(&format!("subgraph \"{}\"", subgraph.name))
        })
        .collect();
    let mut found = Vec::new();
    for coordinate in quoted.iter().filter(|text| is_coordinate(text)) {
        for subgraph in &named_subgraphs {
            if let Some(location) = locate(subgraph, coordinate) {
                found.push(location);
            }
        }
    }
    found
}

fn is_coordinate(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').count() <= 2
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Where `Type` or `Type.field` is defined in `subgraph`'s SDL.
fn locate(subgraph: &SubgraphSdl, coordinate: &str) -> Option<SdlLocation> {
    use apollo_compiler::ast::{Definition, Document};
    let document = Document::parse(&subgraph.sdl, &subgraph.name).ok()?;
    let (type_name, field_name) = match coordinate.split_once('.') {
        Some((type_name, field)) => (type_name, Some(field)),
        None => (coordinate, None),
    };
    for definition in &document.definitions {
        if definition.name().is_none_or(|name| name != type_name) {
            continue;
        }
        let range = match (definition, field_name) {
            (_, None) => definition
                .location()
                .and_then(|span| span.line_column_range(&document.sources)),
            (Definition::ObjectTypeDefinition(object), Some(field)) => object
                .fields
                .iter()
                .find(|f| f.name == field)?
                .line_column_range(&document.sources),
            (Definition::ObjectTypeExtension(object), Some(field)) => object
                .fields
                .iter()
                .find(|f| f.name == field)?
                .line_column_range(&document.sources),
            (Definition::InterfaceTypeDefinition(interface), Some(field)) => interface
                .fields
                .iter()
                .find(|f| f.name == field)?
                .line_column_range(&document.sources),
            _ => None,
        };
        if let Some(range) = range {
            let line = range.start.line;
            return Some(SdlLocation {
                subgraph: subgraph.name.clone(),
                line,
                column: range.start.column,
                excerpt: subgraph
                    .sdl
                    .lines()
                    .nth(line.saturating_sub(1))
                    .unwrap_or_default()
                    .to_owned(),
            });
        }
    }
    None
}

/// Why a supergraph could not give its API schema.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid supergraph: {0}")]
pub struct InvalidSupergraph(pub String);

/// The security features the GospeLib router enforces (see `router/src/authorization.rs`), beside
/// the core, join, tag and inaccessible specs every supergraph may link. A supergraph linking
/// another `for: SECURITY` or `for: EXECUTION` feature (`@policy`, `@context`, …) is refused:
/// the router would silently ignore it.
const ENFORCED_SECURITY_SPECS: [&str; 2] = [
    "https://specs.apollo.dev/authenticated/v0.1",
    "https://specs.apollo.dev/requiresScopes/v0.1",
];

/// The API schema of a supergraph, as SDL: what clients can query and introspect.
pub fn api_schema(supergraph_sdl: &str) -> Result<String, InvalidSupergraph> {
    let mut supported = apollo_federation::default_supported_supergraph_specs();
    supported.extend(
        ENFORCED_SECURITY_SPECS
            .iter()
            .map(|url| url.parse().expect("a valid spec URL")),
    );
    let supergraph = apollo_federation::Supergraph::new_with_spec_check(supergraph_sdl, &supported)
        .map_err(|error| InvalidSupergraph(error.to_string()))?;
    let api = supergraph
        .to_api_schema(ApiSchemaOptions::default())
        .map_err(|error| InvalidSupergraph(error.to_string()))?;
    Ok(api.schema().to_string())
}

/// The features a supergraph links: each `@link` on its schema as its URL and the name an
/// `as:` gives it (`join`, `requiresScopes`, … are named by their URL otherwise).
pub(crate) fn links(schema: &apollo_compiler::Schema) -> Vec<(String, Option<String>)> {
    schema
        .schema_definition
        .directives
        .get_all("link")
        .filter_map(|link| {
            let argument = |name: &str| {
                link.specified_argument_by_name(name)
                    .and_then(|value| value.as_str())
                    .map(str::to_owned)
            };
            Some((argument("url")?, argument("as")))
        })
        .collect()
}

//! The supergraph a router serves: its SDL, its version (a content hash, plus the registry's
//! number when it came from the registry), the subgraphs it names with their URLs, and the query
//! planner built from it. A new supergraph is built whole and swapped in; an invalid one is
//! refused with the reason.

use crate::authorization::AccessRules;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use hive_router_query_planner::planner::{Planner, QueryPlannerOptions};
use hive_router_query_planner::state::supergraph_state::{SupergraphDefinition, SupergraphState};
use hive_router_query_planner::utils::parsing::safe_parse_schema;
use sha2::{Digest, Sha256};

use crate::introspection::Introspection;
use crate::limits::SchemaShape;
use crate::variables::InputTypes;

/// Why a supergraph SDL cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SupergraphError {
    #[error("the supergraph SDL does not parse: {0}")]
    Syntax(String),
    #[error("the supergraph names no subgraph (no `join__Graph` values with @join__graph)")]
    NoSubgraphs,
    #[error("the query planner refuses the supergraph: {0}")]
    Planner(String),
}

/// Which supergraph a response was computed with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SupergraphVersion {
    /// The first 16 hex digits of the SDL's sha256.
    pub hash: String,
    /// The registry's version number, when the supergraph came from the registry.
    pub number: Option<u64>,
}

impl fmt::Display for SupergraphVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.number {
            Some(number) => write!(f, "{number}-{}", self.hash),
            None => f.write_str(&self.hash),
        }
    }
}

/// The directive the router adds to every API schema (the incremental delivery RFC's).
const DEFER_DIRECTIVE: &str = "\"Delivers the fragment's fields after the rest of the response (multipart/mixed).\"\n\
    directive @defer(label: String, if: Boolean! = true) on FRAGMENT_SPREAD | INLINE_FRAGMENT\n";

/// A parsed, plannable supergraph.
pub struct Supergraph {
    pub version: SupergraphVersion,
    sdl: String,
    introspection: Introspection,
    /// The API schema's fields, for the operation's cost.
    shape: SchemaShape,
    /// The API schema's input types, which coerce each request's variables.
    input_types: InputTypes,
    /// Subgraph name → URL, as the supergraph's `@join__graph` directives give them.
    subgraphs: BTreeMap<String, String>,
    /// `@authenticated` and `@requiresScopes`, enforced before fetching.
    access: AccessRules,
    /// The interfaces and unions with a possible type the API schema hides (an `@inaccessible`
    /// implementation or member): where a subgraph may answer an object the client must not
    /// see, which only its `__typename` tells.
    hiding_possible_types: BTreeSet<String>,
    planner: Planner,
}

impl Supergraph {
    /// Parses `sdl` and builds its planner.
    pub fn parse(sdl: &str, registry_number: Option<u64>) -> Result<Self, SupergraphError> {
        let document =
            safe_parse_schema(sdl).map_err(|e| SupergraphError::Syntax(e.to_string()))?;
        let mut planner = Planner::new_from_supergraph(&document, QueryPlannerOptions::default())
            .map_err(|e| SupergraphError::Planner(e.to_string()))?;
        // The router serves `@defer` itself (see `crate::defer`): clients may use it.
        if !planner
            .consumer_schema
            .document
            .definitions
            .iter()
            .any(|d| matches!(d, graphql_tools::parser::schema::Definition::DirectiveDefinition(d) if d.name == "defer"))
        {
            let defer = graphql_tools::parser::schema::parse_schema::<String>(DEFER_DIRECTIVE)
                .expect("the @defer definition parses")
                .into_static();
            let mut document = (*planner.consumer_schema.document).clone();
            document.definitions.extend(defer.definitions);
            planner.consumer_schema = std::sync::Arc::new(
                hive_router_query_planner::consumer_schema::ConsumerSchema {
                    document: std::sync::Arc::new(document),
                    hash: planner.consumer_schema.hash,
                },
            );
        }
        let subgraphs: BTreeMap<String, String> = planner
            .supergraph
            .subgraph_endpoint_map
            .iter()
            .map(|(name, url)| (name.clone(), url.clone()))
            .collect();
        if subgraphs.is_empty() {
            return Err(SupergraphError::NoSubgraphs);
        }
        let hash = format!("{:x}", Sha256::digest(sdl.as_bytes()))[..16].to_owned();
        let introspection = Introspection::new(&planner.consumer_schema.document);
        let shape = SchemaShape::new(&planner.consumer_schema.document);
        let input_types = InputTypes::new(&planner.consumer_schema.document);
        let access = AccessRules::from_supergraph(&document);
        let hiding_possible_types = hiding_possible_types(&planner.supergraph, &introspection);
        Ok(Self {
            access,
            hiding_possible_types,
            introspection,
            shape,
            input_types,
            version: SupergraphVersion {
                hash,
                number: registry_number,
            },
            sdl: sdl.to_owned(),
            subgraphs,
            planner,
        })
    }

    pub fn sdl(&self) -> &str {
        &self.sdl
    }

    /// The authorization the supergraph declares.
    pub fn access_rules(&self) -> &AccessRules {
        &self.access
    }

    /// Subgraph name → URL.
    /// Points subgraphs at other URLs than the supergraph gives (Phase 2: each subgraph's own
    /// Service); names the supergraph does not have are ignored.
    pub fn override_urls(&mut self, overrides: &BTreeMap<String, String>) {
        for (name, url) in overrides {
            if let Some(current) = self.subgraphs.get_mut(name) {
                current.clone_from(url);
            }
        }
    }

    pub fn subgraphs(&self) -> &BTreeMap<String, String> {
        &self.subgraphs
    }

    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// Whether interface or union `name` has a possible type the API schema hides.
    pub fn hides_possible_types(&self, name: &str) -> bool {
        self.hiding_possible_types.contains(name)
    }

    /// Whether any interface or union has a possible type the API schema hides.
    pub fn hides_any_possible_type(&self) -> bool {
        !self.hiding_possible_types.is_empty()
    }

    /// The API schema as introspection answers it.
    pub fn introspection(&self) -> &Introspection {
        &self.introspection
    }

    /// The API schema's input types, for the variables of each request.
    pub fn input_types(&self) -> &InputTypes {
        &self.input_types
    }

    /// The API schema's fields as the operation cost sees them.
    pub fn shape(&self) -> &SchemaShape {
        &self.shape
    }
}

/// The interfaces and unions of the supergraph with a possible type the API schema does not
/// have as one.
fn hiding_possible_types(
    supergraph: &SupergraphState,
    introspection: &Introspection,
) -> BTreeSet<String> {
    let mut hiding = BTreeSet::new();
    for definition in supergraph.definitions.values() {
        match definition {
            SupergraphDefinition::Union(union)
                if union
                    .types
                    .iter()
                    .any(|member| !introspection.is_possible_type(&union.name, member)) =>
            {
                hiding.insert(union.name.clone());
            }
            SupergraphDefinition::Object(object) => {
                for implemented in &object.join_implements {
                    if !introspection.is_possible_type(&implemented.interface, &object.name) {
                        hiding.insert(implemented.interface.clone());
                    }
                }
            }
            _ => {}
        }
    }
    hiding
}

/// Whether a fragment on `condition` applies to an object whose `__typename` is `runtime`: the
/// same type, a union it belongs to, or an interface it implements.
pub fn fragment_applies(supergraph: &SupergraphState, condition: &str, runtime: &str) -> bool {
    if condition == runtime {
        return true;
    }
    match supergraph.definitions.get(condition) {
        Some(SupergraphDefinition::Union(union)) => union.types.iter().any(|t| t == runtime),
        Some(SupergraphDefinition::Interface(_)) => match supergraph.definitions.get(runtime) {
            Some(SupergraphDefinition::Object(object)) => object
                .join_implements
                .iter()
                .any(|i| i.interface == condition),
            Some(SupergraphDefinition::Interface(interface)) => interface
                .join_implements
                .iter()
                .any(|i| i.interface == condition),
            _ => false,
        },
        _ => false,
    }
}

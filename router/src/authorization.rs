//! Authorization declared in the schema, enforced before anything is fetched: Federation's
//! `@authenticated` (a signed-in user or a partner) and `@requiresScopes(scopes: [[…]])` (any
//! one of the inner lists, all of its scopes), on fields and on object types (a type's
//! requirement holds for every field that returns it, and for its own fields wherever they
//! are selected: in a fragment on it under a union, or on an interface it implements).
//!
//! For each request the router works out which selected fields the caller may not have
//! ([`Denials`]). Those fields are taken out of the operation that is planned, so no subgraph is
//! asked for them; the response still has each one, as `null` with an error of its own
//! (`UNAUTHORIZED` for an anonymous caller, `FORBIDDEN` for a caller lacking a scope) at its
//! exact path, and the rest of the response is intact. A denied field in a non-null position
//! makes its parent null, as the GraphQL spec's null propagation says.

use std::collections::{BTreeSet, HashMap};

use graphql_tools::parser::schema::{Definition, Directive, Document, TypeDefinition, Value};
use hive_router_query_planner::ast::operation::OperationDefinition;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::{FieldSelection, SelectionSet};
use hive_router_query_planner::state::supergraph_state::{SupergraphDefinition, SupergraphState};

use gospelib_kit::caller::Caller;

/// The links that define the two directives, and their names when not renamed.
const AUTHENTICATED_SPEC: &str = "https://specs.apollo.dev/authenticated/";
const REQUIRES_SCOPES_SPEC: &str = "https://specs.apollo.dev/requiresScopes/";

pub use gospelib_kit::access::Requirement;

/// What the caller has, as far as authorization goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Access {
    pub authenticated: bool,
    pub scopes: BTreeSet<String>,
}

impl Access {
    pub fn of(caller: &Caller) -> Self {
        Self {
            authenticated: !caller.is_anonymous(),
            scopes: caller.scopes.iter().cloned().collect(),
        }
    }

    /// Why this caller may not have something that needs `requirement`, if it may not.
    fn refusal(&self, requirement: &Requirement) -> Option<Refusal> {
        if requirement.lets_through(self.authenticated, &self.scopes) {
            None
        } else if self.authenticated {
            Some(Refusal::MissingScope)
        } else {
            Some(Refusal::Unauthenticated)
        }
    }
}

/// Why a field is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nobody signed in.
    Unauthenticated,
    /// Signed in, without a scope the field needs.
    MissingScope,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "UNAUTHORIZED",
            Refusal::MissingScope => "FORBIDDEN",
        }
    }
}

/// One denied field: why, and its schema coordinate for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub refusal: Refusal,
    pub coordinate: String,
}

impl Denial {
    /// The field's GraphQL error message.
    pub fn message(&self) -> String {
        match self.refusal {
            Refusal::Unauthenticated => {
                format!("`{}` is only for signed-in callers", self.coordinate)
            }
            Refusal::MissingScope => format!(
                "`{}` needs a plan or scope this caller does not have",
                self.coordinate
            ),
        }
    }
}

/// The denied fields of one operation for one caller, by the address of their selection in
/// that operation (which lives as long as its cached plan).
pub type Denials = HashMap<usize, Denial>;

/// A field selection's identity in [`Denials`].
pub fn selection_id(field: &FieldSelection) -> usize {
    std::ptr::from_ref(field) as usize
}

/// The supergraph's authorization directives.
#[derive(Debug, Default)]
pub struct AccessRules {
    /// `(type, field)` → what selecting it needs.
    fields: HashMap<(String, String), Requirement>,
    /// Object type → what any field returning it needs.
    types: HashMap<String, Requirement>,
}

impl AccessRules {
    /// The rules of a supergraph document (none when it links neither directive).
    pub fn from_supergraph(document: &Document<'static, String>) -> Self {
        let names = DirectiveNames::linked_in(document);
        let mut rules = AccessRules::default();
        if names.authenticated.is_none() && names.requires_scopes.is_none() {
            return rules;
        }
        for definition in &document.definitions {
            let (type_name, type_directives, fields) = match definition {
                Definition::TypeDefinition(TypeDefinition::Object(object)) => {
                    (&object.name, &object.directives, Some(&object.fields))
                }
                Definition::TypeDefinition(TypeDefinition::Interface(interface)) => (
                    &interface.name,
                    &interface.directives,
                    Some(&interface.fields),
                ),
                Definition::TypeDefinition(TypeDefinition::Scalar(scalar)) => {
                    (&scalar.name, &scalar.directives, None)
                }
                Definition::TypeDefinition(TypeDefinition::Enum(enumeration)) => {
                    (&enumeration.name, &enumeration.directives, None)
                }
                _ => continue,
            };
            let on_type = names.requirement(type_directives);
            if !on_type.is_empty() {
                rules.types.insert(type_name.clone(), on_type);
            }
            for field in fields.into_iter().flatten() {
                let on_field = names.requirement(&field.directives);
                if !on_field.is_empty() {
                    rules
                        .fields
                        .insert((type_name.clone(), field.name.clone()), on_field);
                }
            }
        }
        rules
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.types.is_empty()
    }

    /// What selecting `field` on `parent` needs: the field's own rule, the rule of the type it
    /// returns, and the rule of `parent` itself. A field returning a protected type is denied
    /// before its selections are looked at; `parent`'s rule is what protects a protected type
    /// reached otherwise: through a fragment on it under a union or an interface.
    fn requirement(
        &self,
        supergraph: &SupergraphState,
        parent: &str,
        field: &str,
    ) -> Option<Requirement> {
        let own = self.fields.get(&(parent.to_owned(), field.to_owned()));
        let returned = supergraph
            .field_return_type_name(parent, field)
            .and_then(|name| self.types.get(name));
        let of_parent = self.types.get(parent);
        [own, returned, of_parent].into_iter().flatten().fold(
            None,
            |all: Option<Requirement>, one| {
                Some(all.map_or_else(|| one.clone(), |all| all.and(one)))
            },
        )
    }

    /// Why `access` may not select `field` on `parent`, if it may not. On an interface the
    /// field is denied when any implementation would deny it (it is never fetched for one
    /// type and not another).
    fn decide(
        &self,
        supergraph: &SupergraphState,
        access: &Access,
        parent: &str,
        field: &str,
    ) -> Option<Denial> {
        if field.starts_with("__") {
            return None;
        }
        let mut owners = vec![parent.to_owned()];
        if let Some(members) = supergraph.interface_members(parent) {
            owners.extend(members.iter().cloned());
        }
        owners.iter().find_map(|owner| {
            let requirement = self.requirement(supergraph, owner, field)?;
            access.refusal(&requirement).map(|refusal| Denial {
                refusal,
                coordinate: format!("{parent}.{field}"),
            })
        })
    }

    /// The fields of `operation` `access` may not select.
    pub fn denials(
        &self,
        supergraph: &SupergraphState,
        operation: &OperationDefinition,
        access: &Access,
    ) -> Denials {
        let mut denials = Denials::new();
        if self.is_empty() {
            return denials;
        }
        let Ok(root) = supergraph.root_type_name(operation.operation_kind.as_ref()) else {
            return denials;
        };
        self.collect(
            supergraph,
            access,
            root,
            &operation.selection_set,
            &mut denials,
        );
        denials
    }

    fn collect(
        &self,
        supergraph: &SupergraphState,
        access: &Access,
        parent: &str,
        selections: &SelectionSet,
        denials: &mut Denials,
    ) {
        for item in &selections.items {
            match item {
                SelectionItem::Field(field) => {
                    if let Some(denial) = self.decide(supergraph, access, parent, &field.name) {
                        denials.insert(selection_id(field), denial);
                    } else if let Some(returned) =
                        supergraph.field_return_type_name(parent, &field.name)
                    {
                        self.collect(supergraph, access, returned, &field.selections, denials);
                    }
                }
                SelectionItem::InlineFragment(fragment) => {
                    self.collect(
                        supergraph,
                        access,
                        &fragment.type_condition,
                        &fragment.selections,
                        denials,
                    );
                }
                SelectionItem::FragmentSpread(_) => {}
            }
        }
    }

    /// `operation` without the fields `access` may not select: what is planned and fetched.
    /// A selection left empty asks for `__typename` instead (a selection set cannot be empty).
    pub fn permitted(
        &self,
        supergraph: &SupergraphState,
        operation: &OperationDefinition,
        access: &Access,
    ) -> OperationDefinition {
        let mut permitted = operation.clone();
        if let Ok(root) = supergraph.root_type_name(operation.operation_kind.as_ref()) {
            let root = root.to_owned();
            self.prune(
                supergraph,
                access,
                &root,
                &mut permitted.selection_set,
                true,
            );
        }
        permitted
    }

    fn prune(
        &self,
        supergraph: &SupergraphState,
        access: &Access,
        parent: &str,
        selections: &mut SelectionSet,
        is_root: bool,
    ) {
        selections.items.retain_mut(|item| match item {
            SelectionItem::Field(field) => {
                if self
                    .decide(supergraph, access, parent, &field.name)
                    .is_some()
                {
                    return false;
                }
                if let Some(returned) = supergraph.field_return_type_name(parent, &field.name) {
                    let returned = returned.to_owned();
                    self.prune(supergraph, access, &returned, &mut field.selections, false);
                }
                true
            }
            SelectionItem::InlineFragment(fragment) => {
                let condition = fragment.type_condition.clone();
                self.prune(
                    supergraph,
                    access,
                    &condition,
                    &mut fragment.selections,
                    false,
                );
                !fragment.selections.items.is_empty()
            }
            SelectionItem::FragmentSpread(_) => true,
        });
        // A composite field whose every selection was denied still needs one (the root may be
        // left empty: then nothing is fetched at all).
        if selections.items.is_empty() && !is_root && is_composite(supergraph, parent) {
            selections
                .items
                .push(SelectionItem::Field(typename_selection()));
        }
    }
}

fn is_composite(supergraph: &SupergraphState, type_name: &str) -> bool {
    matches!(
        supergraph.definitions.get(type_name),
        Some(
            SupergraphDefinition::Object(_)
                | SupergraphDefinition::Interface(_)
                | SupergraphDefinition::Union(_)
        )
    )
}

fn typename_selection() -> FieldSelection {
    FieldSelection {
        name: "__typename".to_owned(),
        selections: SelectionSet::default(),
        alias: None,
        arguments: None,
        skip_if: None,
        include_if: None,
        omit_from_response: false,
    }
}

/// The names the supergraph gives the two directives (`@link(url: …, as: …)`).
struct DirectiveNames {
    authenticated: Option<String>,
    requires_scopes: Option<String>,
}

impl DirectiveNames {
    fn linked_in(document: &Document<'static, String>) -> Self {
        let mut names = DirectiveNames {
            authenticated: None,
            requires_scopes: None,
        };
        let links = document.definitions.iter().flat_map(|definition| {
            let directives: &[Directive<'static, String>] = match definition {
                Definition::SchemaDefinition(schema) => &schema.directives,
                Definition::TypeExtension(_) | Definition::TypeDefinition(_) => &[],
                Definition::DirectiveDefinition(_) => &[],
            };
            directives.iter().filter(|d| d.name == "link")
        });
        for link in links {
            let argument = |name: &str| {
                link.arguments.iter().find_map(|(n, v)| match v {
                    Value::String(text) if n == name => Some(text.clone()),
                    _ => None,
                })
            };
            let Some(url) = argument("url") else { continue };
            let renamed = argument("as");
            if url.starts_with(AUTHENTICATED_SPEC) {
                names.authenticated = Some(renamed.unwrap_or_else(|| "authenticated".into()));
            } else if url.starts_with(REQUIRES_SCOPES_SPEC) {
                names.requires_scopes = Some(renamed.unwrap_or_else(|| "requiresScopes".into()));
            }
        }
        names
    }

    fn requirement(&self, directives: &[Directive<'static, String>]) -> Requirement {
        let mut requirement = Requirement::default();
        for directive in directives {
            if Some(&directive.name) == self.authenticated.as_ref() {
                requirement.authenticated = true;
            } else if Some(&directive.name) == self.requires_scopes.as_ref() {
                let alternatives = directive
                    .arguments
                    .iter()
                    .filter(|(name, _)| name == "scopes")
                    .flat_map(|(_, value)| list(value))
                    .map(|inner| {
                        list(inner)
                            .iter()
                            .filter_map(|scope| match scope {
                                Value::String(scope) => Some(scope.clone()),
                                _ => None,
                            })
                            .collect::<BTreeSet<String>>()
                    });
                let scoped = Requirement {
                    authenticated: true,
                    scopes: alternatives.collect(),
                };
                requirement = requirement.and(&scoped);
            }
        }
        requirement
    }
}

fn list<'a>(value: &'a Value<'static, String>) -> &'a [Value<'static, String>] {
    match value {
        Value::List(items) => items,
        single => std::slice::from_ref(single),
    }
}

//! Changes to what the supergraph requires of its callers (`@authenticated`,
//! `@requiresScopes`), which the API schemas [`crate::diff`] compares do not carry: without
//! them, making a field `@requiresScopes` passed the check with no change at all, and every
//! client without the scope lost the field (null with `FORBIDDEN`, its parent with it when the
//! field is non-null).
//!
//! Each field is compared by what the router requires to select it (`router/src/
//! authorization.rs`): the field's own rule, its parent type's and its return type's, and, for
//! a field of an interface, every implementation's (the router refuses it when any
//! implementation would). So a rule moved from a type onto its fields changes nothing, and a
//! rule put on a type changes every field that returns it or belongs to it. A change that
//! refuses some caller the old supergraph let through is breaking for the operations selecting
//! the field (on its type, or on an interface that declares it); one that only lets more
//! callers through is safe.

use apollo_compiler::Schema;
use apollo_compiler::ast::{Directive, FieldDefinition, Value};
use apollo_compiler::schema::ExtendedType;

use gospelib_kit::access::Requirement;

use crate::diff::{Change, ChangeKind, Criticality};

/// The link URLs that define the two directives (their names when not renamed by `as:`).
const AUTHENTICATED_SPEC: &str = "https://specs.apollo.dev/authenticated/";
const REQUIRES_SCOPES_SPEC: &str = "https://specs.apollo.dev/requiresScopes/";

/// A requirement as people read it.
fn describe(requirement: &Requirement) -> String {
    if requirement.is_empty() {
        return "nothing".to_owned();
    }
    let mut sets: Vec<String> = requirement
        .scopes
        .iter()
        .map(|set| {
            let scopes: Vec<&str> = set.iter().map(String::as_str).collect();
            format!("[{}]", scopes.join(", "))
        })
        .collect();
    sets.sort();
    sets.dedup();
    if sets.is_empty() {
        "a signed-in caller".to_owned()
    } else {
        format!(
            "a signed-in caller with all the scopes of one of {}",
            sets.join(" or ")
        )
    }
}

/// A supergraph's names for the two directives, and what they require where.
struct Rules<'s> {
    schema: &'s Schema,
    authenticated: Option<String>,
    requires_scopes: Option<String>,
}

impl<'s> Rules<'s> {
    fn of(schema: &'s Schema) -> Self {
        let mut rules = Rules {
            schema,
            authenticated: None,
            requires_scopes: None,
        };
        for (url, alias) in crate::compose::links(schema) {
            if url.starts_with(AUTHENTICATED_SPEC) {
                rules.authenticated = Some(alias.unwrap_or("authenticated".into()));
            } else if url.starts_with(REQUIRES_SCOPES_SPEC) {
                rules.requires_scopes = Some(alias.unwrap_or("requiresScopes".into()));
            }
        }
        rules
    }

    /// The requirement `directives` state, as the router reads them.
    fn requirement<'a>(&self, directives: impl IntoIterator<Item = &'a Directive>) -> Requirement {
        let mut requirement = Requirement::default();
        for directive in directives {
            let name = Some(directive.name.as_str());
            if name == self.authenticated.as_deref() {
                requirement.authenticated = true;
            } else if name == self.requires_scopes.as_deref() {
                let alternatives = directive
                    .specified_argument_by_name("scopes")
                    .map(|value| listed(value))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|inner| {
                        listed(inner)
                            .into_iter()
                            .filter_map(|scope| scope.as_str().map(str::to_owned))
                            .collect()
                    })
                    .collect();
                requirement = requirement.and(&Requirement {
                    authenticated: true,
                    scopes: alternatives,
                });
            }
        }
        requirement
    }

    /// A type's own rule (none for a type the supergraph does not have).
    fn of_type(&self, name: &str) -> Requirement {
        self.schema
            .types
            .get(name)
            .map(|definition| self.requirement(definition.directives().iter().map(|d| &***d)))
            .unwrap_or_default()
    }

    /// What selecting `field` of `owner` requires: its own rule, its owner's and its return
    /// type's; on an interface, also every implementation's rule for the field and its type.
    fn of_field(&self, owner: &str, field: &FieldDefinition) -> Requirement {
        let mut requirement = self
            .requirement(field.directives.iter().map(|d| &**d))
            .and(&self.of_type(owner))
            .and(&self.of_type(field.ty.inner_named_type()));
        if matches!(
            self.schema.types.get(owner),
            Some(ExtendedType::Interface(_))
        ) {
            for (name, definition) in &self.schema.types {
                let ExtendedType::Object(object) = definition else {
                    continue;
                };
                if !object.implements_interfaces.iter().any(|i| i.name == owner) {
                    continue;
                }
                if let Some(own) = object.fields.get(&field.name) {
                    requirement = requirement
                        .and(&self.requirement(own.directives.iter().map(|d| &**d)))
                        .and(&self.of_type(name))
                        .and(&self.of_type(own.ty.inner_named_type()));
                }
            }
        }
        requirement
    }
}

/// A directive argument as a list: a single value is a list of one (as GraphQL coerces it).
fn listed(value: &Value) -> Vec<&Value> {
    match value {
        Value::List(items) => items.iter().map(|item| item.as_ref()).collect(),
        single => vec![single],
    }
}

/// The fields of an object or interface type.
pub(crate) fn fields_of(
    definition: &ExtendedType,
) -> Option<
    &apollo_compiler::collections::IndexMap<
        apollo_compiler::Name,
        apollo_compiler::schema::Component<FieldDefinition>,
    >,
> {
    match definition {
        ExtendedType::Object(object) => Some(&object.fields),
        ExtendedType::Interface(interface) => Some(&interface.fields),
        _ => None,
    }
}

/// [`authorization_changes`] of two supergraphs' SDL; the error says which does not parse.
pub fn authorization_changes_of_sdl(old: &str, new: &str) -> Result<Vec<Change>, String> {
    let parse = |which: &str, sdl: &str| {
        Schema::parse(sdl, "supergraph.graphql")
            .map_err(|errors| format!("the {which} supergraph: {}", errors.errors))
    };
    Ok(authorization_changes(
        &parse("old", old)?,
        &parse("new", new)?,
    ))
}

/// The changes to what selecting each field requires, from supergraph `old` to `new`, of the
/// fields both have, sorted by coordinate.
pub fn authorization_changes(old: &Schema, new: &Schema) -> Vec<Change> {
    let (old_rules, new_rules) = (Rules::of(old), Rules::of(new));
    let mut changes = Vec::new();
    for (owner, new_type) in &new.types {
        let (Some(new_fields), Some(old_fields)) = (
            fields_of(new_type),
            old.types.get(owner).and_then(fields_of),
        ) else {
            continue;
        };
        for (name, new_field) in new_fields {
            let Some(old_field) = old_fields.get(name) else {
                continue;
            };
            let before = old_rules.of_field(owner, old_field);
            let after = new_rules.of_field(owner, new_field);
            let tightened = before.refuses_more(&after);
            if !tightened && !after.refuses_more(&before) {
                continue;
            }
            let coordinate = format!("{owner}.{name}");
            let message = format!(
                "Field '{coordinate}' requires {} of its caller (it required {})",
                describe(&after),
                describe(&before)
            );
            changes.push(if tightened {
                // Selected on an interface that declares it, it is refused too.
                let mut affects = vec![coordinate.clone()];
                if let ExtendedType::Object(object) = new_type {
                    for interface in &object.implements_interfaces {
                        let declares = new
                            .types
                            .get(&interface.name)
                            .and_then(fields_of)
                            .is_some_and(|fields| fields.contains_key(name));
                        if declares {
                            affects.push(format!("{}.{name}", interface.name));
                        }
                    }
                }
                Change {
                    criticality: Criticality::Breaking,
                    kind: ChangeKind::FieldAuthorizationTightened,
                    coordinate,
                    message,
                    affects,
                }
            } else {
                Change {
                    criticality: Criticality::Safe,
                    kind: ChangeKind::FieldAuthorizationLoosened,
                    coordinate,
                    message,
                    affects: Vec::new(),
                }
            });
        }
    }
    changes.sort_by(|a, b| a.coordinate.cmp(&b.coordinate));
    changes
}

//! Changes to what the supergraph requires of its callers (`@authenticated`,
//! `@requiresScopes`), which the API schemas [`crate::diff`] compares do not carry: without
//! them, making a field `@requiresScopes` passed the check with no change at all, and every
//! client without the scope lost the field (null with `FORBIDDEN`, its parent with it when the
//! field is non-null).
//!
//! A change that refuses some caller the old supergraph let through is breaking for the
//! operations that select what it protects (a type's requirement: each of its fields); one
//! that only lets more callers through is safe.

use std::collections::BTreeSet;

use apollo_compiler::Schema;
use apollo_compiler::ast::{Directive, Value};
use apollo_compiler::schema::ExtendedType;

use crate::diff::{Change, ChangeKind, Criticality};

/// What one type or field requires: a signed-in caller, and/or the scopes of one of the sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Requirement {
    authenticated: bool,
    /// `@requiresScopes(scopes:)`: one of these sets, whole (`None`: no scopes needed).
    scopes: Option<Vec<BTreeSet<String>>>,
}

/// A caller as requirements see it.
struct Caller<'a> {
    signed_in: bool,
    scopes: &'a BTreeSet<String>,
}

impl Requirement {
    fn of<'a>(directives: impl IntoIterator<Item = &'a Directive>) -> Self {
        let mut requirement = Self::default();
        for directive in directives {
            match directive.name.as_str() {
                "authenticated" => requirement.authenticated = true,
                "requiresScopes" => {
                    let sets = match directive
                        .specified_argument_by_name("scopes")
                        .map(|value| value.as_ref())
                    {
                        Some(Value::List(sets)) => sets
                            .iter()
                            .map(|set| match set.as_ref() {
                                Value::List(scopes) => scopes
                                    .iter()
                                    .filter_map(|scope| scope.as_str().map(str::to_owned))
                                    .collect(),
                                other => other.as_str().map(str::to_owned).into_iter().collect(),
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    requirement.scopes = Some(sets);
                }
                _ => {}
            }
        }
        requirement
    }

    fn lets_through(&self, caller: &Caller<'_>) -> bool {
        (!self.authenticated || caller.signed_in)
            && self.scopes.as_ref().is_none_or(|sets| {
                sets.iter()
                    .any(|set| (caller.signed_in || set.is_empty()) && set.is_subset(caller.scopes))
            })
    }

    /// Whether some caller `self` lets through is refused by `new`. Letting a caller through
    /// only gets easier with more scopes and being signed in, so the callers with the least
    /// `self` lets through are the ones to try.
    fn refuses_more(&self, new: &Requirement) -> bool {
        let none = BTreeSet::new();
        let mut least: Vec<Caller<'_>> = Vec::new();
        match &self.scopes {
            None => {
                least.push(Caller {
                    signed_in: true,
                    scopes: &none,
                });
                if !self.authenticated {
                    least.push(Caller {
                        signed_in: false,
                        scopes: &none,
                    });
                }
            }
            Some(sets) => least.extend(sets.iter().map(|set| Caller {
                signed_in: true,
                scopes: set,
            })),
        }
        least
            .iter()
            .filter(|caller| self.lets_through(caller))
            .any(|caller| !new.lets_through(caller))
    }

    fn describe(&self) -> String {
        let scopes = self.scopes.as_ref().map(|sets| {
            let sets: Vec<String> = sets
                .iter()
                .map(|set| {
                    let scopes: Vec<&str> = set.iter().map(String::as_str).collect();
                    format!("[{}]", scopes.join(", "))
                })
                .collect();
            format!("the scopes of one of {}", sets.join(" or "))
        });
        match (self.authenticated, scopes) {
            (false, None) => "nothing".to_owned(),
            (true, None) => "a signed-in caller".to_owned(),
            (false, Some(scopes)) => scopes,
            (true, Some(scopes)) => format!("a signed-in caller with {scopes}"),
        }
    }
}

/// The changes to callers' requirements from supergraph `old` to `new`, of the types and
/// fields both have, sorted by coordinate.
pub fn authorization_changes(old: &Schema, new: &Schema) -> Vec<Change> {
    let mut changes = Vec::new();
    for (name, new_type) in &new.types {
        let Some(old_type) = old.types.get(name) else {
            continue;
        };
        let (old_fields, new_fields) = match (old_type, new_type) {
            (ExtendedType::Object(old), ExtendedType::Object(new)) => (&old.fields, &new.fields),
            (ExtendedType::Interface(old), ExtendedType::Interface(new)) => {
                (&old.fields, &new.fields)
            }
            _ => continue,
        };
        let every_field: Vec<String> = new_fields
            .keys()
            .map(|field| format!("{name}.{field}"))
            .collect();
        let old_requirement = Requirement::of(old_type.directives().iter().map(|d| &***d));
        let new_requirement = Requirement::of(new_type.directives().iter().map(|d| &***d));
        changes.extend(change(
            "Type",
            name.as_str(),
            &old_requirement,
            &new_requirement,
            every_field,
        ));
        for (field, new_field) in new_fields {
            let Some(old_field) = old_fields.get(field) else {
                continue;
            };
            let coordinate = format!("{name}.{field}");
            changes.extend(change(
                "Field",
                &coordinate,
                &Requirement::of(old_field.directives.iter().map(|d| &**d)),
                &Requirement::of(new_field.directives.iter().map(|d| &**d)),
                vec![coordinate.clone()],
            ));
        }
    }
    changes.sort_by(|a, b| (&a.coordinate, a.kind).cmp(&(&b.coordinate, b.kind)));
    changes
}

/// The change of `what` (`Type` or `Field`) at `coordinate` from `old` to `new`, if any.
fn change(
    what: &str,
    coordinate: &str,
    old: &Requirement,
    new: &Requirement,
    affects: Vec<String>,
) -> Option<Change> {
    if old == new {
        return None;
    }
    let message = format!(
        "{what} '{coordinate}' requires {} of its caller (it required {})",
        new.describe(),
        old.describe()
    );
    let type_level = what == "Type";
    Some(if old.refuses_more(new) {
        Change {
            criticality: Criticality::Breaking,
            kind: if type_level {
                ChangeKind::TypeAuthorizationTightened
            } else {
                ChangeKind::FieldAuthorizationTightened
            },
            coordinate: coordinate.to_owned(),
            message,
            affects,
        }
    } else {
        Change {
            criticality: Criticality::Safe,
            kind: if type_level {
                ChangeKind::TypeAuthorizationLoosened
            } else {
                ChangeKind::FieldAuthorizationLoosened
            },
            coordinate: coordinate.to_owned(),
            message,
            affects: Vec::new(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirement(authenticated: bool, scopes: Option<&[&[&str]]>) -> Requirement {
        Requirement {
            authenticated,
            scopes: scopes.map(|sets| {
                sets.iter()
                    .map(|set| set.iter().map(|s| (*s).to_owned()).collect())
                    .collect()
            }),
        }
    }

    #[test]
    fn a_requirement_refuses_more_when_some_caller_it_let_through_is_refused() {
        let open = requirement(false, None);
        let signed_in = requirement(true, None);
        let ai = requirement(false, Some(&[&["ai"]]));
        let ai_or_explorer = requirement(false, Some(&[&["ai"], &["explorer"]]));
        let ai_and_explorer = requirement(false, Some(&[&["ai", "explorer"]]));
        assert!(open.refuses_more(&signed_in));
        assert!(open.refuses_more(&ai));
        assert!(signed_in.refuses_more(&ai));
        assert!(ai_or_explorer.refuses_more(&ai));
        assert!(ai.refuses_more(&ai_and_explorer));
        // Only more callers let through.
        assert!(!signed_in.refuses_more(&open));
        assert!(!ai.refuses_more(&ai_or_explorer));
        assert!(!ai_and_explorer.refuses_more(&ai));
        assert!(!ai.refuses_more(&signed_in));
        // Scopes are only ever a signed-in caller's: adding the requirement to sign in takes
        // nothing from a field that needs scopes.
        assert!(!ai.refuses_more(&requirement(true, Some(&[&["ai"]]))));
    }
}

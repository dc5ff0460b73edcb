//! Contracts: a variant of the supergraph filtered by `@tag`, served to a class of clients
//! (the `partner` contract to partner API keys). Elements outside the contract are marked
//! `@inaccessible`, so the contract supergraph still plans like the whole one while its API
//! schema (introspection, validation) shows only the contract.
//!
//! Which elements a contract keeps (after Apollo's contract rules, with one difference):
//! - a type that carries the tag on itself or on a field decides by its tags: a field is kept
//!   when it or its type carries the tag; arguments follow their field;
//! - a type that carries the tag nowhere (plumbing such as generated connection and edge
//!   types, or `Book` under a tagged `Passage.book`) is kept whole when a kept field's type
//!   is it (Apollo would drop it: tagging generated types is not possible in async-graphql),
//!   but not as an implementation of a kept interface or a member of a kept union;
//! - enums, scalars, input objects and unions are kept when something kept reaches them
//!   (unions keep only their kept members);
//! - a field whose type is not kept, or that needs an argument whose type is not kept, goes;
//!   a field an interface keeps is kept on every kept implementation;
//! - finally every type no root field reaches is pruned. This repeats until nothing changes.

use std::collections::{BTreeSet, HashMap, HashSet};

use apollo_compiler::ast::{Directive, OperationType};
use apollo_compiler::schema::{Component, ExtendedType};
use apollo_compiler::{Name, Node, Schema};

use crate::compose::{InvalidSupergraph, api_schema};

/// The contracts the registry builds for every version, with the tag each keeps.
pub const CONTRACTS: &[(&str, &str)] = &[(PARTNER_CONTRACT, "partner")];

/// The contract partners' API keys are served.
pub const PARTNER_CONTRACT: &str = "partner";

/// Why a contract could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("the supergraph does not parse: {0}")]
    Parse(String),
    #[error("the `{contract}` contract keeps no root field: tag some with @tag(name: \"{tag}\")")]
    Empty { contract: String, tag: String },
    #[error("the `{contract}` contract is not a valid supergraph: {source}")]
    Invalid {
        contract: String,
        source: InvalidSupergraph,
    },
}

/// The supergraph of contract `name`, keeping what is tagged `tag`.
pub fn contract_supergraph(
    supergraph_sdl: &str,
    name: &str,
    tag: &str,
) -> Result<String, ContractError> {
    let schema = Schema::builder()
        .adopt_orphan_extensions()
        .parse(supergraph_sdl, "supergraph.graphql")
        .build()
        .map_err(|errors| ContractError::Parse(errors.errors.to_string()))?;
    let kept = Kept::decide(&schema, tag);
    if kept
        .fields
        .iter()
        .all(|(owner, _)| !kept.roots.contains(owner))
    {
        return Err(ContractError::Empty {
            contract: name.to_owned(),
            tag: tag.to_owned(),
        });
    }
    let contract = mark_inaccessible(schema, &kept);
    // The contract must still be a supergraph with an API schema.
    api_schema(&contract).map_err(|source| ContractError::Invalid {
        contract: name.to_owned(),
        source,
    })?;
    Ok(contract)
}

/// What a contract keeps: types by name, fields as (type, field).
struct Kept {
    /// The namespaces of the linked features, whose types are left as they are.
    linked: Vec<String>,
    roots: BTreeSet<Name>,
    types: HashSet<Name>,
    fields: HashSet<(Name, Name)>,
    /// The types that carry the tag nowhere: kept whole only where a kept field's type is
    /// theirs, never as an implementation of a kept interface or a member of a kept union
    /// (a tagged `node(id:)` returning `Node` must not show every untagged `Node`).
    untagged: HashSet<Name>,
}

impl Kept {
    fn decide(schema: &Schema, tag: &str) -> Self {
        let linked = linked_namespaces(schema);
        let roots: BTreeSet<Name> = [
            OperationType::Query,
            OperationType::Mutation,
            OperationType::Subscription,
        ]
        .into_iter()
        .filter_map(|operation| schema.root_operation(operation).cloned())
        .collect();
        let mut fields = HashSet::new();
        let mut untagged_types = HashSet::new();
        for (type_name, definition) in &schema.types {
            if is_internal(type_name, &linked) {
                continue;
            }
            let type_tagged = has_tag(definition.directives().iter().map(|d| &d.node), tag);
            // Root types always decide by their tags.
            let untagged = !roots.contains(type_name)
                && !type_tagged
                && output_fields(definition)
                    .all(|(_, field)| !has_tag(field.directives.iter(), tag));
            if untagged {
                untagged_types.insert(type_name.clone());
            }
            for (field_name, field) in output_fields(definition) {
                if type_tagged || untagged || has_tag(field.directives.iter(), tag) {
                    fields.insert((type_name.clone(), field_name.clone()));
                }
            }
        }
        let mut kept = Kept {
            linked,
            roots,
            types: HashSet::new(),
            fields,
            untagged: untagged_types,
        };
        // Each pass can only remove fields, so this ends.
        loop {
            kept.share_interface_fields(schema);
            kept.types = kept.reachable(schema);
            let before = kept.fields.len();
            kept.fields.retain(|(owner, field)| {
                kept.types.contains(owner) && field_is_keepable(schema, owner, field, &kept.types)
            });
            if kept.fields.len() == before {
                return kept;
            }
        }
    }

    /// A field an interface keeps is kept on its implementations.
    fn share_interface_fields(&mut self, schema: &Schema) {
        let mut added = Vec::new();
        for (type_name, definition) in &schema.types {
            let interfaces = match definition {
                ExtendedType::Object(object) => &object.implements_interfaces,
                ExtendedType::Interface(interface) => &interface.implements_interfaces,
                _ => continue,
            };
            let keeps_any = self.fields.iter().any(|(owner, _)| owner == type_name);
            if !keeps_any {
                continue;
            }
            for interface in interfaces {
                for (owner, field) in &self.fields {
                    if owner == &interface.name {
                        added.push((type_name.clone(), field.clone()));
                    }
                }
            }
        }
        self.fields.extend(added);
    }

    /// The types reachable from the roots through kept fields and their arguments.
    fn reachable(&self, schema: &Schema) -> HashSet<Name> {
        let kept_object = |name: &Name| self.fields.iter().any(|(owner, _)| owner == name);
        // Reached as a possible type of a kept interface or union: only a type that decides
        // by its tags (see [`Kept::untagged`]).
        let kept_member = |name: &Name| kept_object(name) && !self.untagged.contains(name);
        let implementers: HashMap<Name, Vec<Name>> = schema
            .implementers_map()
            .into_iter()
            .map(|(interface, implementers)| {
                let mut names: Vec<Name> = implementers.objects.into_iter().collect();
                names.extend(implementers.interfaces);
                (interface, names)
            })
            .collect();
        let mut seen = HashSet::new();
        let mut to_visit: Vec<Name> = self.roots.iter().cloned().collect();
        while let Some(name) = to_visit.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(definition) = schema.types.get(&name) else {
                continue;
            };
            match definition {
                ExtendedType::Object(_) | ExtendedType::Interface(_) => {
                    for (field_name, field) in output_fields(definition) {
                        if !self.fields.contains(&(name.clone(), field_name.clone())) {
                            continue;
                        }
                        to_visit.push(field.ty.inner_named_type().clone());
                        for argument in &field.arguments {
                            to_visit.push(argument.ty.inner_named_type().clone());
                        }
                    }
                    for implementer in implementers.get(&name).into_iter().flatten() {
                        if kept_member(implementer) {
                            to_visit.push(implementer.clone());
                        }
                    }
                }
                ExtendedType::Union(union) => {
                    for member in &union.members {
                        if kept_member(&member.name) {
                            to_visit.push(member.name.clone());
                        }
                    }
                }
                ExtendedType::InputObject(input) => {
                    for field in input.fields.values() {
                        to_visit.push(field.ty.inner_named_type().clone());
                    }
                }
                ExtendedType::Scalar(_) | ExtendedType::Enum(_) => {}
            }
        }
        // A union or interface with no kept member cannot stay.
        let reached = seen.clone();
        seen.retain(|name| match schema.types.get(name) {
            Some(ExtendedType::Union(union)) => union
                .members
                .iter()
                .any(|member| reached.contains(&member.name) && kept_object(&member.name)),
            Some(ExtendedType::Object(_)) => kept_object(name),
            Some(ExtendedType::Interface(_)) => kept_object(name),
            _ => true,
        });
        seen
    }
}

/// A field can stay when its type and every required argument's type stay.
fn field_is_keepable(schema: &Schema, owner: &Name, field: &Name, types: &HashSet<Name>) -> bool {
    let Some(definition) = schema.types.get(owner) else {
        return false;
    };
    let Some((_, field)) = output_fields(definition).find(|(name, _)| *name == field) else {
        return false;
    };
    let is_kept = |name: &Name| types.contains(name) || is_builtin_scalar(name);
    is_kept(field.ty.inner_named_type())
        && field
            .arguments
            .iter()
            .filter(|argument| argument.is_required())
            .all(|argument| is_kept(argument.ty.inner_named_type()))
}

/// Adds `@inaccessible` to everything the contract does not keep.
fn mark_inaccessible(mut schema: Schema, kept: &Kept) -> String {
    let needs_definition = !schema.directive_definitions.contains_key("inaccessible");
    for (type_name, definition) in schema.types.iter_mut() {
        if is_internal(type_name, &kept.linked) || definition.is_built_in() {
            continue;
        }
        let type_kept = kept.types.contains(type_name);
        match definition {
            ExtendedType::Object(object) if type_kept => {
                let object = object.make_mut();
                for (field_name, field) in object.fields.iter_mut() {
                    if !kept
                        .fields
                        .contains(&(type_name.clone(), field_name.clone()))
                        && !field.directives.has("inaccessible")
                    {
                        field.make_mut().directives.push(inaccessible());
                    }
                }
            }
            ExtendedType::Interface(interface) if type_kept => {
                let interface = interface.make_mut();
                for (field_name, field) in interface.fields.iter_mut() {
                    if !kept
                        .fields
                        .contains(&(type_name.clone(), field_name.clone()))
                        && !field.directives.has("inaccessible")
                    {
                        field.make_mut().directives.push(inaccessible());
                    }
                }
            }
            // Kept unions, enums, scalars and inputs stay whole; members outside the
            // contract are inaccessible object types, which the API schema drops from unions.
            _ if type_kept => {}
            _ => push_type_directive(definition),
        }
    }
    if needs_definition {
        schema
            .schema_definition
            .make_mut()
            .directives
            .push(Component::new(Directive {
                name: Name::new_static_unchecked("link"),
                arguments: vec![
                    Node::new(apollo_compiler::ast::Argument {
                        name: Name::new_static_unchecked("url"),
                        value: Node::new(apollo_compiler::ast::Value::String(
                            "https://specs.apollo.dev/inaccessible/v0.2".to_owned(),
                        )),
                    }),
                    Node::new(apollo_compiler::ast::Argument {
                        name: Name::new_static_unchecked("for"),
                        value: Node::new(apollo_compiler::ast::Value::Enum(
                            Name::new_static_unchecked("SECURITY"),
                        )),
                    }),
                ],
            }));
        let definition = apollo_compiler::ast::Document::parse(INACCESSIBLE_DEFINITION, "x")
            .ok()
            .and_then(|document| {
                document
                    .definitions
                    .into_iter()
                    .find_map(|definition| match definition {
                        apollo_compiler::ast::Definition::DirectiveDefinition(directive) => {
                            Some(directive)
                        }
                        _ => None,
                    })
            });
        if let Some(definition) = definition {
            schema
                .directive_definitions
                .insert(Name::new_static_unchecked("inaccessible"), definition);
        }
    }
    schema.to_string()
}

const INACCESSIBLE_DEFINITION: &str = "directive @inaccessible on FIELD_DEFINITION | OBJECT | \
    INTERFACE | UNION | ARGUMENT_DEFINITION | SCALAR | ENUM | ENUM_VALUE | INPUT_OBJECT | \
    INPUT_FIELD_DEFINITION";

fn inaccessible() -> Node<Directive> {
    Node::new(Directive {
        name: Name::new_static_unchecked("inaccessible"),
        arguments: Vec::new(),
    })
}

/// Marks a type `@inaccessible`, unless it already is (the directive is not repeatable).
fn push_type_directive(definition: &mut ExtendedType) {
    if definition.directives().has("inaccessible") {
        return;
    }
    let directive = Component::new(Directive {
        name: Name::new_static_unchecked("inaccessible"),
        arguments: Vec::new(),
    });
    match definition {
        ExtendedType::Object(object) => object.make_mut().directives.push(directive),
        ExtendedType::Interface(interface) => interface.make_mut().directives.push(directive),
        ExtendedType::Union(union) => union.make_mut().directives.push(directive),
        ExtendedType::Enum(enumeration) => enumeration.make_mut().directives.push(directive),
        ExtendedType::InputObject(input) => input.make_mut().directives.push(directive),
        ExtendedType::Scalar(scalar) => scalar.make_mut().directives.push(directive),
    }
}

fn output_fields(
    definition: &ExtendedType,
) -> Box<dyn Iterator<Item = (&Name, &Component<apollo_compiler::ast::FieldDefinition>)> + '_> {
    match definition {
        ExtendedType::Object(object) => Box::new(object.fields.iter()),
        ExtendedType::Interface(interface) => Box::new(interface.fields.iter()),
        _ => Box::new(std::iter::empty()),
    }
}

fn has_tag<'a>(mut directives: impl Iterator<Item = &'a Node<Directive>>, tag: &str) -> bool {
    directives.any(|directive| {
        directive.name == "tag"
            && directive
                .specified_argument_by_name("name")
                .and_then(|value| value.as_str())
                == Some(tag)
    })
}

/// Federation's own types (`join__*`, `link__*`) are not the API's: left as they are.
/// Introspection types and the types of the features the supergraph links (`join__Graph`,
/// `link__Import`, `requiresScopes__Scope`, …: a linked feature's namespace, two underscores,
/// a name). A type of the API may have two underscores in its name (`Passage__Meta`): it is
/// the contract's to keep or hide.
fn is_internal(name: &str, linked: &[String]) -> bool {
    name.starts_with("__")
        || linked.iter().any(|namespace| {
            name.strip_prefix(namespace.as_str())
                .is_some_and(|rest| rest.starts_with("__"))
        })
}

/// The namespaces of the features the supergraph links: the name a `@link(as:)` gives one,
/// else its URL's name (`https://specs.apollo.dev/join/v0.3` → `join`).
fn linked_namespaces(schema: &Schema) -> Vec<String> {
    crate::compose::links(schema)
        .into_iter()
        .filter_map(|(url, alias)| {
            if alias.is_some() {
                return alias;
            }
            let mut segments = url.trim_end_matches('/').rsplit('/');
            let last = segments.next()?;
            let is_version = last.starts_with('v') && last[1..].contains('.');
            if is_version {
                segments.next().map(str::to_owned)
            } else {
                Some(last.to_owned())
            }
        })
        .collect()
}

fn is_builtin_scalar(name: &str) -> bool {
    matches!(name, "String" | "Int" | "Float" | "Boolean" | "ID")
}

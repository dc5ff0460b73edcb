//! A classified diff between two API schemas (the client-facing schema, without federation
//! internals): every change, marked breaking, dangerous or safe for client operations, with the
//! schema coordinates whose use by an operation would make a breaking change break it.
//!
//! The classification follows GraphQL Inspector (`graphql-hive/graphql-inspector`,
//! `packages/core/src/diff/**/*.ts`); the rule each function mirrors is named in its comment.
//! Where this module differs from Inspector, the comment says so:
//! - the members of something new (the fields of an added type, the arguments of an added field,
//!   the arguments and locations of an added directive, ...) are not listed separately: the one
//!   "added" change covers them (Inspector's `ignoreNestedAdditions` rule);
//! - usages of directives in the schema (`DIRECTIVE_USAGE_*`) are not reported: an API schema
//!   carries almost none, and none of them is visible to client operations;
//! - a directive argument is "required" when it is non-null *and* has no default (Inspector
//!   counts any non-null argument as required);
//! - changes are sorted by coordinate, then kind, then message.

use std::collections::BTreeSet;

use apollo_compiler::Name;
use apollo_compiler::Node;
use apollo_compiler::Schema;
use apollo_compiler::ast::DirectiveDefinition;
use apollo_compiler::ast::DirectiveList;
use apollo_compiler::ast::FieldDefinition;
use apollo_compiler::ast::InputValueDefinition;
use apollo_compiler::ast::Type;
use apollo_compiler::ast::Value;
use apollo_compiler::collections::IndexMap;
use apollo_compiler::collections::IndexSet;
use apollo_compiler::schema::Component;
use apollo_compiler::schema::ComponentName;
use apollo_compiler::schema::EnumValueDefinition;
use apollo_compiler::schema::ExtendedType;
use serde::Serialize;

/// How a change affects existing client operations (Inspector's `CriticalityLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// Existing operations that use the changed element fail.
    Breaking,
    /// Existing operations keep validating but may see different behaviour or new values.
    Dangerous,
    /// No existing operation is affected.
    Safe,
}

/// What changed. The names are Inspector's `ChangeType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangeKind {
    SchemaQueryTypeChanged,
    SchemaMutationTypeChanged,
    SchemaSubscriptionTypeChanged,
    TypeAdded,
    TypeRemoved,
    TypeKindChanged,
    TypeDescriptionAdded,
    TypeDescriptionRemoved,
    TypeDescriptionChanged,
    FieldAdded,
    FieldRemoved,
    FieldTypeChanged,
    FieldDescriptionAdded,
    FieldDescriptionRemoved,
    FieldDescriptionChanged,
    FieldDeprecationAdded,
    FieldDeprecationRemoved,
    FieldDeprecationReasonAdded,
    FieldDeprecationReasonRemoved,
    FieldDeprecationReasonChanged,
    FieldArgumentAdded,
    FieldArgumentRemoved,
    FieldArgumentTypeChanged,
    FieldArgumentDefaultChanged,
    FieldArgumentDescriptionChanged,
    FieldArgumentDeprecationAdded,
    FieldArgumentDeprecationRemoved,
    FieldArgumentDeprecationReasonAdded,
    FieldArgumentDeprecationReasonRemoved,
    FieldArgumentDeprecationReasonChanged,
    InputFieldAdded,
    InputFieldRemoved,
    InputFieldTypeChanged,
    InputFieldDefaultValueChanged,
    InputFieldDescriptionAdded,
    InputFieldDescriptionRemoved,
    InputFieldDescriptionChanged,
    InputFieldDeprecationAdded,
    InputFieldDeprecationRemoved,
    InputFieldDeprecationReasonAdded,
    InputFieldDeprecationReasonRemoved,
    InputFieldDeprecationReasonChanged,
    EnumValueAdded,
    EnumValueRemoved,
    EnumValueDescriptionChanged,
    EnumValueDeprecationReasonAdded,
    EnumValueDeprecationReasonRemoved,
    EnumValueDeprecationReasonChanged,
    UnionMemberAdded,
    UnionMemberRemoved,
    ObjectTypeInterfaceAdded,
    ObjectTypeInterfaceRemoved,
    DirectiveAdded,
    DirectiveRemoved,
    DirectiveDescriptionChanged,
    DirectiveRepeatableAdded,
    DirectiveRepeatableRemoved,
    DirectiveLocationAdded,
    DirectiveLocationRemoved,
    DirectiveArgumentAdded,
    DirectiveArgumentRemoved,
    DirectiveArgumentTypeChanged,
    DirectiveArgumentDefaultValueChanged,
    DirectiveArgumentDescriptionChanged,
    /// Ours (see [`crate::authorization`]): what selecting a field requires of its caller
    /// (`@authenticated`, `@requiresScopes` on it, its type or its return type) refuses
    /// callers it let through, or lets through more.
    FieldAuthorizationTightened,
    FieldAuthorizationLoosened,
}

/// One classified change between two schemas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub criticality: Criticality,
    pub kind: ChangeKind,
    /// The schema coordinate of the changed element: `Type`, `Type.field`, `Type.field(arg:)`,
    /// `Enum.VALUE`, `Input.field`, `@directive` or `@directive(arg:)`.
    pub coordinate: String,
    /// One readable sentence.
    pub message: String,
    /// The coordinates whose use by a client operation makes this change break it, in the form
    /// [`crate::usage`] records them. Empty unless the change is breaking.
    pub affects: Vec<String>,
}

/// Every change from `old` to `new`, sorted by coordinate, then kind, then message.
pub fn diff(old: &Schema, new: &Schema) -> Vec<Change> {
    let mut changes = Vec::new();
    root_operation_changes(old, new, &mut changes);
    type_changes(old, new, &mut changes);
    directive_changes(old, new, &mut changes);
    changes.sort_by(|a, b| {
        (&a.coordinate, a.kind, &a.message).cmp(&(&b.coordinate, b.kind, &b.message))
    });
    changes
}

fn safe(kind: ChangeKind, coordinate: &str, message: String) -> Change {
    Change {
        criticality: Criticality::Safe,
        kind,
        coordinate: coordinate.to_string(),
        message,
        affects: Vec::new(),
    }
}

fn dangerous(kind: ChangeKind, coordinate: &str, message: String) -> Change {
    Change {
        criticality: Criticality::Dangerous,
        ..safe(kind, coordinate, message)
    }
}

fn breaking(kind: ChangeKind, coordinate: &str, message: String, affects: &str) -> Change {
    Change {
        criticality: Criticality::Breaking,
        affects: vec![affects.to_string()],
        ..safe(kind, coordinate, message)
    }
}

// ---- Schema roots ------------------------------------------------------------------------------

/// Inspector `diff/schema.ts` `changesInSchema` and `changes/schema.ts`: a root compared by name,
/// an absent root counting as its default name (`Query`, `Mutation`, `Subscription`); a change
/// is breaking unless the schema had no such root before. The coordinate is the old root type
/// (the new one when there was none).
fn root_operation_changes(old: &Schema, new: &Schema, out: &mut Vec<Change>) {
    let roots = [
        (
            "query",
            "Query",
            ChangeKind::SchemaQueryTypeChanged,
            &old.schema_definition.query,
            &new.schema_definition.query,
        ),
        (
            "mutation",
            "Mutation",
            ChangeKind::SchemaMutationTypeChanged,
            &old.schema_definition.mutation,
            &new.schema_definition.mutation,
        ),
        (
            "subscription",
            "Subscription",
            ChangeKind::SchemaSubscriptionTypeChanged,
            &old.schema_definition.subscription,
            &new.schema_definition.subscription,
        ),
    ];
    for (operation, default_name, kind, old_root, new_root) in roots {
        let old_name = old_root.as_ref().map(|n| n.as_str());
        let new_name = new_root.as_ref().map(|n| n.as_str());
        if old_name.unwrap_or(default_name) == new_name.unwrap_or(default_name) {
            continue;
        }
        let message = format!(
            "Schema {operation} root has changed from '{}' to '{}'",
            old_name.unwrap_or("none"),
            new_name.unwrap_or("none")
        );
        out.push(match old_name {
            Some(old_name) => breaking(kind, old_name, message, old_name),
            None => safe(kind, new_name.unwrap_or(default_name), message),
        });
    }
}

// ---- Named types -------------------------------------------------------------------------------

/// The types a schema defines itself (not the built-in scalars and introspection types).
fn defined_types(schema: &Schema) -> impl Iterator<Item = (&Name, &ExtendedType)> {
    schema.types.iter().filter(|(_, ty)| !ty.is_built_in())
}

fn defined_type<'s>(schema: &'s Schema, name: &str) -> Option<&'s ExtendedType> {
    schema.types.get(name).filter(|ty| !ty.is_built_in())
}

/// Inspector `diff/schema.ts` `diffSchema` and `changes/type.ts`: type added (safe), removed
/// (breaking), kind changed (breaking), description added/removed/changed (safe).
fn type_changes(old: &Schema, new: &Schema, out: &mut Vec<Change>) {
    for (name, old_type) in defined_types(old) {
        match defined_type(new, name) {
            Some(new_type) => changes_in_type(name, old_type, new_type, out),
            None => out.push(breaking(
                ChangeKind::TypeRemoved,
                name,
                format!("Type '{name}' was removed"),
                name,
            )),
        }
    }
    for (name, _) in defined_types(new) {
        if defined_type(old, name).is_none() {
            out.push(safe(
                ChangeKind::TypeAdded,
                name,
                format!("Type '{name}' was added"),
            ));
        }
    }
}

fn type_noun(ty: &ExtendedType) -> &'static str {
    match ty {
        ExtendedType::Scalar(_) => "scalar",
        ExtendedType::Object(_) => "object type",
        ExtendedType::Interface(_) => "interface",
        ExtendedType::Union(_) => "union",
        ExtendedType::Enum(_) => "enum",
        ExtendedType::InputObject(_) => "input object type",
    }
}

fn changes_in_type(name: &str, old: &ExtendedType, new: &ExtendedType, out: &mut Vec<Change>) {
    let noun = type_noun(new);
    description_changes(
        DescriptionKinds::TYPE,
        noun,
        name,
        old.description(),
        new.description(),
        out,
    );
    match (old, new) {
        (ExtendedType::Object(old), ExtendedType::Object(new)) => {
            field_changes(name, noun, &old.fields, &new.fields, out);
            interface_changes(
                name,
                &old.implements_interfaces,
                &new.implements_interfaces,
                out,
            );
        }
        (ExtendedType::Interface(old), ExtendedType::Interface(new)) => {
            field_changes(name, noun, &old.fields, &new.fields, out);
            interface_changes(
                name,
                &old.implements_interfaces,
                &new.implements_interfaces,
                out,
            );
        }
        (ExtendedType::Union(old), ExtendedType::Union(new)) => {
            union_member_changes(name, &old.members, &new.members, out);
        }
        (ExtendedType::Enum(old), ExtendedType::Enum(new)) => {
            enum_value_changes(name, &old.values, &new.values, out);
        }
        (ExtendedType::InputObject(old), ExtendedType::InputObject(new)) => {
            input_field_changes(name, &old.fields, &new.fields, out);
        }
        (ExtendedType::Scalar(_), ExtendedType::Scalar(_)) => {}
        _ => out.push(breaking(
            ChangeKind::TypeKindChanged,
            name,
            format!(
                "'{name}' kind changed from '{}' to '{}'",
                type_noun(old),
                type_noun(new)
            ),
            name,
        )),
    }
}

// ---- Descriptions and deprecations -------------------------------------------------------------

/// The change kinds one kind of element uses for its description (Inspector has three kinds for
/// some elements and a single "changed" kind for others).
struct DescriptionKinds {
    added: ChangeKind,
    removed: ChangeKind,
    changed: ChangeKind,
}

impl DescriptionKinds {
    const TYPE: Self = Self {
        added: ChangeKind::TypeDescriptionAdded,
        removed: ChangeKind::TypeDescriptionRemoved,
        changed: ChangeKind::TypeDescriptionChanged,
    };
    const FIELD: Self = Self {
        added: ChangeKind::FieldDescriptionAdded,
        removed: ChangeKind::FieldDescriptionRemoved,
        changed: ChangeKind::FieldDescriptionChanged,
    };
    const ARGUMENT: Self = Self::single(ChangeKind::FieldArgumentDescriptionChanged);
    const INPUT_FIELD: Self = Self {
        added: ChangeKind::InputFieldDescriptionAdded,
        removed: ChangeKind::InputFieldDescriptionRemoved,
        changed: ChangeKind::InputFieldDescriptionChanged,
    };
    const ENUM_VALUE: Self = Self::single(ChangeKind::EnumValueDescriptionChanged);
    const DIRECTIVE: Self = Self::single(ChangeKind::DirectiveDescriptionChanged);
    const DIRECTIVE_ARGUMENT: Self = Self::single(ChangeKind::DirectiveArgumentDescriptionChanged);

    const fn single(kind: ChangeKind) -> Self {
        Self {
            added: kind,
            removed: kind,
            changed: kind,
        }
    }
}

/// Description added, removed or changed: always safe (every Inspector `*Description*` change).
fn description_changes(
    kinds: DescriptionKinds,
    noun: &str,
    coordinate: &str,
    old: Option<&Node<str>>,
    new: Option<&Node<str>>,
    out: &mut Vec<Change>,
) {
    let old = old.map(|d| d.as_ref());
    let new = new.map(|d| d.as_ref());
    let change = match (old, new) {
        (None, Some(_)) => Some((
            kinds.added,
            format!("Description was added to {noun} '{coordinate}'"),
        )),
        (Some(_), None) => Some((
            kinds.removed,
            format!("Description was removed from {noun} '{coordinate}'"),
        )),
        (Some(old), Some(new)) if old != new => Some((
            kinds.changed,
            format!("Description of {noun} '{coordinate}' changed"),
        )),
        _ => None,
    };
    if let Some((kind, message)) = change {
        out.push(safe(kind, coordinate, message));
    }
}

/// graphql-js reports this reason for `@deprecated` without one; Inspector treats it as "no
/// reason".
const DEFAULT_DEPRECATION_REASON: &str = "No longer supported";

/// `None` when not deprecated; otherwise the reason, the default one when not given.
fn deprecation_reason(directives: &DirectiveList) -> Option<&str> {
    let deprecated = directives.get("deprecated")?;
    let reason = deprecated
        .arguments
        .iter()
        .find(|argument| argument.name == "reason")
        .and_then(|argument| argument.value.as_str());
    Some(reason.unwrap_or(DEFAULT_DEPRECATION_REASON))
}

/// The change kinds one kind of element uses for its deprecation.
struct DeprecationKinds {
    added: ChangeKind,
    removed: ChangeKind,
    reason_added: ChangeKind,
    reason_removed: ChangeKind,
    reason_changed: ChangeKind,
}

impl DeprecationKinds {
    const FIELD: Self = Self {
        added: ChangeKind::FieldDeprecationAdded,
        removed: ChangeKind::FieldDeprecationRemoved,
        reason_added: ChangeKind::FieldDeprecationReasonAdded,
        reason_removed: ChangeKind::FieldDeprecationReasonRemoved,
        reason_changed: ChangeKind::FieldDeprecationReasonChanged,
    };
    const ARGUMENT: Self = Self {
        added: ChangeKind::FieldArgumentDeprecationAdded,
        removed: ChangeKind::FieldArgumentDeprecationRemoved,
        reason_added: ChangeKind::FieldArgumentDeprecationReasonAdded,
        reason_removed: ChangeKind::FieldArgumentDeprecationReasonRemoved,
        reason_changed: ChangeKind::FieldArgumentDeprecationReasonChanged,
    };
    const INPUT_FIELD: Self = Self {
        added: ChangeKind::InputFieldDeprecationAdded,
        removed: ChangeKind::InputFieldDeprecationRemoved,
        reason_added: ChangeKind::InputFieldDeprecationReasonAdded,
        reason_removed: ChangeKind::InputFieldDeprecationReasonRemoved,
        reason_changed: ChangeKind::InputFieldDeprecationReasonChanged,
    };
    /// Inspector has only reason kinds for enum values (`diff/enum.ts`): deprecating a value is
    /// "reason added", undeprecating it "reason removed".
    const ENUM_VALUE: Self = Self {
        added: ChangeKind::EnumValueDeprecationReasonAdded,
        removed: ChangeKind::EnumValueDeprecationReasonRemoved,
        reason_added: ChangeKind::EnumValueDeprecationReasonAdded,
        reason_removed: ChangeKind::EnumValueDeprecationReasonRemoved,
        reason_changed: ChangeKind::EnumValueDeprecationReasonChanged,
    };
}

/// Deprecation added, removed, or its reason added/removed/changed: always safe (Inspector
/// `diff/field.ts` and `diff/argument.ts`; the default reason counts as no reason).
fn deprecation_changes(
    kinds: DeprecationKinds,
    noun: &str,
    coordinate: &str,
    old: &DirectiveList,
    new: &DirectiveList,
    out: &mut Vec<Change>,
) {
    let change = match (deprecation_reason(old), deprecation_reason(new)) {
        (None, Some(_)) => Some((
            kinds.added,
            format!("{} '{coordinate}' is deprecated", capitalized(noun)),
        )),
        (Some(_), None) => Some((
            kinds.removed,
            format!(
                "{} '{coordinate}' is no longer deprecated",
                capitalized(noun)
            ),
        )),
        (Some(old), Some(new)) if old == new => None,
        (Some(DEFAULT_DEPRECATION_REASON), Some(new)) => Some((
            kinds.reason_added,
            format!(
                "{} '{coordinate}' has deprecation reason '{new}'",
                capitalized(noun)
            ),
        )),
        (Some(_), Some(DEFAULT_DEPRECATION_REASON)) => Some((
            kinds.reason_removed,
            format!("Deprecation reason was removed from {noun} '{coordinate}'"),
        )),
        (Some(old), Some(new)) => Some((
            kinds.reason_changed,
            format!(
                "Deprecation reason on {noun} '{coordinate}' has changed from '{old}' to '{new}'"
            ),
        )),
        (None, None) => None,
    };
    if let Some((kind, message)) = change {
        out.push(safe(kind, coordinate, message));
    }
}

fn capitalized(noun: &str) -> String {
    let mut chars = noun.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

// ---- Type references ---------------------------------------------------------------------------

/// The nullable form of a non-null type; `None` when the type is nullable already.
fn strip_non_null(ty: &Type) -> Option<Type> {
    ty.is_non_null().then(|| ty.clone().nullable())
}

/// Inspector `utils/graphql.ts` `safeChangeForField`: an output type may only become stricter
/// (gain non-null markers) around the same named type: `T`→`T!`, `[T]`→`[T]!`, `[T]`→`[T!]`.
fn is_safe_output_change(old: &Type, new: &Type) -> bool {
    if let Some(new_inner) = strip_non_null(new) {
        let old_inner = strip_non_null(old).unwrap_or_else(|| old.clone());
        return is_safe_output_change(&old_inner, &new_inner);
    }
    match (old, new) {
        (Type::Named(old), Type::Named(new)) => old == new,
        (Type::List(old), Type::List(new)) => is_safe_output_change(old, new),
        _ => false,
    }
}

/// Inspector `utils/graphql.ts` `safeChangeForInputValue`: an input type may only become looser
/// (lose non-null markers) around the same named type: `T!`→`T`, `[T!]`→`[T]`, `[T]!`→`[T]`.
fn is_safe_input_change(old: &Type, new: &Type) -> bool {
    if let Some(old_inner) = strip_non_null(old) {
        let new_inner = strip_non_null(new).unwrap_or_else(|| new.clone());
        return is_safe_input_change(&old_inner, &new_inner);
    }
    match (old, new) {
        (Type::Named(old), Type::Named(new)) => old == new,
        (Type::List(old), Type::List(new)) => is_safe_input_change(old, new),
        _ => false,
    }
}

/// Required: non-null without a default value (a client must give it).
fn is_required(input: &InputValueDefinition) -> bool {
    input.ty.is_non_null() && input.default_value.is_none()
}

fn default_value_text(input: &InputValueDefinition) -> Option<String> {
    input.default_value.as_ref().map(|value| value.to_string())
}

fn value_text(value: Option<&Node<Value>>) -> String {
    value.map_or_else(|| "none".to_string(), |value| value.to_string())
}

// ---- Fields of objects and interfaces ----------------------------------------------------------

/// Inspector `diff/object.ts`, `diff/interface.ts` and `changes/field.ts`: field added (safe),
/// removed (breaking, deprecated or not).
fn field_changes(
    type_name: &str,
    type_noun: &str,
    old: &IndexMap<Name, Component<FieldDefinition>>,
    new: &IndexMap<Name, Component<FieldDefinition>>,
    out: &mut Vec<Change>,
) {
    for (name, old_field) in old {
        let coordinate = format!("{type_name}.{name}");
        match new.get(name) {
            Some(new_field) => changes_in_field(&coordinate, old_field, new_field, out),
            None => {
                let deprecated = if deprecation_reason(&old_field.directives).is_some() {
                    "(deprecated) "
                } else {
                    ""
                };
                let message = format!(
                    "Field '{coordinate}' {deprecated}was removed from {type_noun} '{type_name}'"
                );
                out.push(breaking(
                    ChangeKind::FieldRemoved,
                    &coordinate,
                    message,
                    &coordinate,
                ));
            }
        }
    }
    for name in new.keys().filter(|name| !old.contains_key(*name)) {
        let coordinate = format!("{type_name}.{name}");
        let message = format!("Field '{coordinate}' was added to {type_noun} '{type_name}'");
        out.push(safe(ChangeKind::FieldAdded, &coordinate, message));
    }
}

/// Inspector `diff/field.ts` `changesInField`.
fn changes_in_field(
    coordinate: &str,
    old: &FieldDefinition,
    new: &FieldDefinition,
    out: &mut Vec<Change>,
) {
    description_changes(
        DescriptionKinds::FIELD,
        "field",
        coordinate,
        old.description.as_ref(),
        new.description.as_ref(),
        out,
    );
    deprecation_changes(
        DeprecationKinds::FIELD,
        "field",
        coordinate,
        &old.directives,
        &new.directives,
        out,
    );
    field_type_change(coordinate, &old.ty, &new.ty, out);
    argument_changes(coordinate, &old.arguments, &new.arguments, out);
}

/// Inspector `changes/field.ts` `fieldTypeChanged`: breaking unless covariant-safe.
fn field_type_change(coordinate: &str, old: &Type, new: &Type, out: &mut Vec<Change>) {
    if old == new {
        return;
    }
    let kind = ChangeKind::FieldTypeChanged;
    let message = format!("Field '{coordinate}' changed type from '{old}' to '{new}'");
    out.push(if is_safe_output_change(old, new) {
        safe(kind, coordinate, message)
    } else {
        breaking(kind, coordinate, message, coordinate)
    });
}

/// Inspector `changes/field.ts` `fieldArgumentAdded` / `fieldArgumentRemoved`: an argument added
/// to an existing field is breaking when non-null without a default, dangerous otherwise; a
/// removed argument is breaking.
fn argument_changes(
    field_coordinate: &str,
    old: &[Node<InputValueDefinition>],
    new: &[Node<InputValueDefinition>],
    out: &mut Vec<Change>,
) {
    for old_argument in old {
        let coordinate = format!("{field_coordinate}({}:)", old_argument.name);
        match new.iter().find(|a| a.name == old_argument.name) {
            Some(new_argument) => changes_in_argument(&coordinate, old_argument, new_argument, out),
            None => {
                let message = format!(
                    "Argument '{}: {}' was removed from field '{field_coordinate}'",
                    old_argument.name, old_argument.ty
                );
                out.push(breaking(
                    ChangeKind::FieldArgumentRemoved,
                    &coordinate,
                    message,
                    &coordinate,
                ));
            }
        }
    }
    for new_argument in new {
        if old.iter().any(|a| a.name == new_argument.name) {
            continue;
        }
        let coordinate = format!("{field_coordinate}({}:)", new_argument.name);
        let kind = ChangeKind::FieldArgumentAdded;
        let message = format!(
            "Argument '{}: {}' added to field '{field_coordinate}'",
            new_argument.name, new_argument.ty
        );
        out.push(if is_required(new_argument) {
            breaking(kind, &coordinate, message, field_coordinate)
        } else {
            dangerous(kind, &coordinate, message)
        });
    }
}

/// Inspector `diff/argument.ts` `changesInArgument` and `changes/argument.ts`: default changed
/// (dangerous), type changed (breaking unless contravariant-safe).
fn changes_in_argument(
    coordinate: &str,
    old: &InputValueDefinition,
    new: &InputValueDefinition,
    out: &mut Vec<Change>,
) {
    description_changes(
        DescriptionKinds::ARGUMENT,
        "argument",
        coordinate,
        old.description.as_ref(),
        new.description.as_ref(),
        out,
    );
    deprecation_changes(
        DeprecationKinds::ARGUMENT,
        "argument",
        coordinate,
        &old.directives,
        &new.directives,
        out,
    );
    // An argument clients could leave out that they now must give: every operation on the
    // field that leaves it out breaks, and usage records an argument only where it is given,
    // so the field itself is affected too.
    let field_coordinate = coordinate.split('(').next().unwrap_or(coordinate);
    let became_required = is_required(new) && !is_required(old);
    if default_value_text(old) != default_value_text(new) {
        let kind = ChangeKind::FieldArgumentDefaultChanged;
        let message = format!(
            "Default value for argument '{coordinate}' changed from '{}' to '{}'",
            value_text(old.default_value.as_ref()),
            value_text(new.default_value.as_ref())
        );
        // A default removed from a non-null argument (its type unchanged) makes it required.
        out.push(if became_required && old.ty == new.ty {
            let mut change = breaking(kind, coordinate, message, coordinate);
            change.affects.push(field_coordinate.to_owned());
            change
        } else {
            dangerous(kind, coordinate, message)
        });
    }
    if old.ty != new.ty {
        let kind = ChangeKind::FieldArgumentTypeChanged;
        let message = format!(
            "Type for argument '{coordinate}' changed from '{}' to '{}'",
            old.ty, new.ty
        );
        out.push(if is_safe_input_change(&old.ty, &new.ty) {
            safe(kind, coordinate, message)
        } else {
            let mut change = breaking(kind, coordinate, message, coordinate);
            if became_required {
                change.affects.push(field_coordinate.to_owned());
            }
            change
        });
    }
}

// ---- Interfaces and union members --------------------------------------------------------------

fn component_names(set: &IndexSet<ComponentName>) -> BTreeSet<&str> {
    set.iter().map(|name| name.as_str()).collect()
}

/// Inspector `changes/object.ts`: an interface added to an existing type is dangerous (a new
/// possible type for clients), removed is breaking.
fn interface_changes(
    type_name: &str,
    old: &IndexSet<ComponentName>,
    new: &IndexSet<ComponentName>,
    out: &mut Vec<Change>,
) {
    let (old, new) = (component_names(old), component_names(new));
    for removed in old.difference(&new) {
        out.push(breaking(
            ChangeKind::ObjectTypeInterfaceRemoved,
            type_name,
            format!("'{type_name}' no longer implements interface '{removed}'"),
            type_name,
        ));
    }
    for added in new.difference(&old) {
        out.push(dangerous(
            ChangeKind::ObjectTypeInterfaceAdded,
            type_name,
            format!("'{type_name}' implements interface '{added}'"),
        ));
    }
}

/// Inspector `changes/union.ts`: member added (dangerous), removed (breaking).
fn union_member_changes(
    union_name: &str,
    old: &IndexSet<ComponentName>,
    new: &IndexSet<ComponentName>,
    out: &mut Vec<Change>,
) {
    let (old, new) = (component_names(old), component_names(new));
    for removed in old.difference(&new) {
        out.push(breaking(
            ChangeKind::UnionMemberRemoved,
            union_name,
            format!("Member '{removed}' was removed from union type '{union_name}'"),
            union_name,
        ));
    }
    for added in new.difference(&old) {
        out.push(dangerous(
            ChangeKind::UnionMemberAdded,
            union_name,
            format!("Member '{added}' was added to union type '{union_name}'"),
        ));
    }
}

// ---- Enum values -------------------------------------------------------------------------------

/// Inspector `diff/enum.ts` and `changes/enum.ts`: value added to an existing enum (dangerous),
/// removed (breaking), description and deprecation reason changes (safe).
fn enum_value_changes(
    enum_name: &str,
    old: &IndexMap<Name, Component<EnumValueDefinition>>,
    new: &IndexMap<Name, Component<EnumValueDefinition>>,
    out: &mut Vec<Change>,
) {
    for (value, old_value) in old {
        let coordinate = format!("{enum_name}.{value}");
        let Some(new_value) = new.get(value) else {
            let deprecated = if deprecation_reason(&old_value.directives).is_some() {
                "(deprecated) "
            } else {
                ""
            };
            let message =
                format!("Enum value '{value}' {deprecated}was removed from enum '{enum_name}'");
            out.push(breaking(
                ChangeKind::EnumValueRemoved,
                &coordinate,
                message,
                enum_name,
            ));
            continue;
        };
        description_changes(
            DescriptionKinds::ENUM_VALUE,
            "enum value",
            &coordinate,
            old_value.description.as_ref(),
            new_value.description.as_ref(),
            out,
        );
        deprecation_changes(
            DeprecationKinds::ENUM_VALUE,
            "enum value",
            &coordinate,
            &old_value.directives,
            &new_value.directives,
            out,
        );
    }
    for value in new.keys().filter(|value| !old.contains_key(*value)) {
        out.push(dangerous(
            ChangeKind::EnumValueAdded,
            &format!("{enum_name}.{value}"),
            format!("Enum value '{value}' was added to enum '{enum_name}'"),
        ));
    }
}

// ---- Input object fields -----------------------------------------------------------------------

/// Inspector `diff/input.ts` and `changes/input.ts`: input field removed (breaking); added:
/// nullable without a default is safe, non-null without a default is breaking, any field with a
/// default is dangerous (`inputFieldAddedFromMeta`; older Inspector releases called every
/// optional addition dangerous).
fn input_field_changes(
    input_name: &str,
    old: &IndexMap<Name, Component<InputValueDefinition>>,
    new: &IndexMap<Name, Component<InputValueDefinition>>,
    out: &mut Vec<Change>,
) {
    for (name, old_field) in old {
        let coordinate = format!("{input_name}.{name}");
        match new.get(name) {
            Some(new_field) => {
                changes_in_input_field(input_name, &coordinate, old_field, new_field, out)
            }
            None => out.push(breaking(
                ChangeKind::InputFieldRemoved,
                &coordinate,
                format!("Input field '{name}' was removed from input object type '{input_name}'"),
                input_name,
            )),
        }
    }
    for (name, new_field) in new {
        if !old.contains_key(name) {
            out.push(input_field_added(input_name, new_field));
        }
    }
}

fn input_field_added(input_name: &str, field: &InputValueDefinition) -> Change {
    let coordinate = format!("{input_name}.{}", field.name);
    let kind = ChangeKind::InputFieldAdded;
    let message = format!(
        "Input field '{}' of type '{}' was added to input object type '{input_name}'",
        field.name, field.ty
    );
    if field.default_value.is_some() {
        dangerous(kind, &coordinate, message)
    } else if field.ty.is_non_null() {
        breaking(kind, &coordinate, message, input_name)
    } else {
        safe(kind, &coordinate, message)
    }
}

fn changes_in_input_field(
    input_name: &str,
    coordinate: &str,
    old: &InputValueDefinition,
    new: &InputValueDefinition,
    out: &mut Vec<Change>,
) {
    description_changes(
        DescriptionKinds::INPUT_FIELD,
        "input field",
        coordinate,
        old.description.as_ref(),
        new.description.as_ref(),
        out,
    );
    deprecation_changes(
        DeprecationKinds::INPUT_FIELD,
        "input field",
        coordinate,
        &old.directives,
        &new.directives,
        out,
    );
    if default_value_text(old) != default_value_text(new) {
        let kind = ChangeKind::InputFieldDefaultValueChanged;
        let message = format!(
            "Input field '{coordinate}' default value changed from '{}' to '{}'",
            value_text(old.default_value.as_ref()),
            value_text(new.default_value.as_ref())
        );
        // A default removed from a non-null input field (its type unchanged) makes it required:
        // every client value of the input that leaves it out breaks.
        out.push(
            if is_required(new) && !is_required(old) && old.ty == new.ty {
                breaking(kind, coordinate, message, input_name)
            } else {
                dangerous(kind, coordinate, message)
            },
        );
    }
    if old.ty != new.ty {
        let kind = ChangeKind::InputFieldTypeChanged;
        let message = format!(
            "Input field '{coordinate}' changed type from '{}' to '{}'",
            old.ty, new.ty
        );
        out.push(if is_safe_input_change(&old.ty, &new.ty) {
            safe(kind, coordinate, message)
        } else {
            breaking(kind, coordinate, message, input_name)
        });
    }
}

// ---- Directive definitions ---------------------------------------------------------------------

/// The directives a schema defines itself (not `@skip`, `@include`, `@deprecated`, ...).
fn defined_directives(schema: &Schema) -> impl Iterator<Item = &Node<DirectiveDefinition>> {
    schema
        .directive_definitions
        .values()
        .filter(|directive| !directive.is_built_in())
}

fn defined_directive<'s>(schema: &'s Schema, name: &str) -> Option<&'s Node<DirectiveDefinition>> {
    schema
        .directive_definitions
        .get(name)
        .filter(|directive| !directive.is_built_in())
}

/// Inspector `diff/schema.ts` and `changes/directive.ts`: directive added (safe), removed
/// (breaking).
fn directive_changes(old: &Schema, new: &Schema, out: &mut Vec<Change>) {
    for old_directive in defined_directives(old) {
        let coordinate = format!("@{}", old_directive.name);
        match defined_directive(new, &old_directive.name) {
            Some(new_directive) => {
                changes_in_directive(&coordinate, old_directive, new_directive, out)
            }
            None => out.push(breaking(
                ChangeKind::DirectiveRemoved,
                &coordinate,
                format!("Directive '{coordinate}' was removed"),
                &coordinate,
            )),
        }
    }
    for new_directive in defined_directives(new) {
        if defined_directive(old, &new_directive.name).is_none() {
            let coordinate = format!("@{}", new_directive.name);
            let message = format!("Directive '{coordinate}' was added");
            out.push(safe(ChangeKind::DirectiveAdded, &coordinate, message));
        }
    }
}

/// Inspector `diff/directive.ts` `changesInDirective`.
fn changes_in_directive(
    coordinate: &str,
    old: &DirectiveDefinition,
    new: &DirectiveDefinition,
    out: &mut Vec<Change>,
) {
    description_changes(
        DescriptionKinds::DIRECTIVE,
        "directive",
        coordinate,
        old.description.as_ref(),
        new.description.as_ref(),
        out,
    );
    repeatable_change(coordinate, old.repeatable, new.repeatable, out);
    location_changes(coordinate, old, new, out);
    directive_argument_changes(coordinate, &old.arguments, &new.arguments, out);
}

/// Inspector `changes/directive.ts`: `repeatable` added (safe), removed (dangerous).
fn repeatable_change(coordinate: &str, old: bool, new: bool, out: &mut Vec<Change>) {
    match (old, new) {
        (false, true) => out.push(safe(
            ChangeKind::DirectiveRepeatableAdded,
            coordinate,
            format!("Directive '{coordinate}' is now repeatable"),
        )),
        (true, false) => out.push(dangerous(
            ChangeKind::DirectiveRepeatableRemoved,
            coordinate,
            format!("Directive '{coordinate}' is no longer repeatable"),
        )),
        _ => {}
    }
}

/// Inspector `changes/directive.ts`: location added (safe), removed (breaking).
fn location_changes(
    coordinate: &str,
    old: &DirectiveDefinition,
    new: &DirectiveDefinition,
    out: &mut Vec<Change>,
) {
    let names = |directive: &DirectiveDefinition| -> BTreeSet<String> {
        directive.locations.iter().map(|l| l.to_string()).collect()
    };
    let (old, new) = (names(old), names(new));
    for removed in old.difference(&new) {
        out.push(breaking(
            ChangeKind::DirectiveLocationRemoved,
            coordinate,
            format!("Location '{removed}' was removed from directive '{coordinate}'"),
            coordinate,
        ));
    }
    for added in new.difference(&old) {
        out.push(safe(
            ChangeKind::DirectiveLocationAdded,
            coordinate,
            format!("Location '{added}' was added to directive '{coordinate}'"),
        ));
    }
}

/// Inspector `changes/directive.ts`: argument added (breaking when required, safe otherwise;
/// Inspector calls every non-null argument required, defaults or not), removed (breaking).
fn directive_argument_changes(
    directive: &str,
    old: &[Node<InputValueDefinition>],
    new: &[Node<InputValueDefinition>],
    out: &mut Vec<Change>,
) {
    for old_argument in old {
        let coordinate = format!("{directive}({}:)", old_argument.name);
        match new.iter().find(|a| a.name == old_argument.name) {
            Some(new_argument) => changes_in_directive_argument(
                directive,
                &coordinate,
                old_argument,
                new_argument,
                out,
            ),
            None => out.push(breaking(
                ChangeKind::DirectiveArgumentRemoved,
                &coordinate,
                format!(
                    "Argument '{}' was removed from directive '{directive}'",
                    old_argument.name
                ),
                directive,
            )),
        }
    }
    for new_argument in new {
        if old.iter().any(|a| a.name == new_argument.name) {
            continue;
        }
        let coordinate = format!("{directive}({}:)", new_argument.name);
        let kind = ChangeKind::DirectiveArgumentAdded;
        let message = format!(
            "Argument '{}: {}' was added to directive '{directive}'",
            new_argument.name, new_argument.ty
        );
        out.push(if is_required(new_argument) {
            breaking(kind, &coordinate, message, directive)
        } else {
            safe(kind, &coordinate, message)
        });
    }
}

/// Inspector `diff/directive.ts` `changesInDirectiveArgument`: default changed (dangerous), type
/// changed (breaking unless contravariant-safe).
fn changes_in_directive_argument(
    directive: &str,
    coordinate: &str,
    old: &InputValueDefinition,
    new: &InputValueDefinition,
    out: &mut Vec<Change>,
) {
    description_changes(
        DescriptionKinds::DIRECTIVE_ARGUMENT,
        "argument",
        coordinate,
        old.description.as_ref(),
        new.description.as_ref(),
        out,
    );
    if default_value_text(old) != default_value_text(new) {
        let kind = ChangeKind::DirectiveArgumentDefaultValueChanged;
        let message = format!(
            "Default value for argument '{coordinate}' changed from '{}' to '{}'",
            value_text(old.default_value.as_ref()),
            value_text(new.default_value.as_ref())
        );
        // A default removed from a non-null argument (its type unchanged) makes it required:
        // every use of the directive that leaves it out breaks, as for a field's argument.
        out.push(
            if is_required(new) && !is_required(old) && old.ty == new.ty {
                breaking(kind, coordinate, message, directive)
            } else {
                dangerous(kind, coordinate, message)
            },
        );
    }
    if old.ty != new.ty {
        let kind = ChangeKind::DirectiveArgumentTypeChanged;
        let message = format!(
            "Type for argument '{coordinate}' changed from '{}' to '{}'",
            old.ty, new.ty
        );
        out.push(if is_safe_input_change(&old.ty, &new.ty) {
            safe(kind, coordinate, message)
        } else {
            breaking(kind, coordinate, message, directive)
        });
    }
}

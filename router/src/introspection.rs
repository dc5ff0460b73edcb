//! Introspection of the API schema (the supergraph without join internals and `@inaccessible`
//! elements): the router answers `__schema` and `__type` itself, from a model built once per
//! supergraph, for whatever selection the client makes (GraphiQL's, code generators',
//! graphql-js `getIntrospectionQuery`).

use std::collections::BTreeMap;

use graphql_tools::parser::schema::{Definition, Document, TypeDefinition};
use graphql_tools::static_graphql::schema::{self as ast};
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::{FieldSelection, SelectionSet};
use hive_router_query_planner::ast::value::Value as AstValue;
use serde_json::{Map, Value, json};

/// A type reference: `[Int!]` is `List(NonNull(Named("Int")))`.
#[derive(Debug, Clone)]
enum TypeRef {
    Named(String),
    List(Box<TypeRef>),
    NonNull(Box<TypeRef>),
}

impl TypeRef {
    fn from_ast(ty: &ast::Type) -> Self {
        match ty {
            ast::Type::NamedType(name) => Self::Named(name.clone()),
            ast::Type::ListType(inner) => Self::List(Box::new(Self::from_ast(inner))),
            ast::Type::NonNullType(inner) => Self::NonNull(Box::new(Self::from_ast(inner))),
        }
    }
}

#[derive(Debug, Clone)]
struct InputValueDef {
    name: String,
    description: Option<String>,
    ty: TypeRef,
    default_value: Option<String>,
    deprecation: Option<String>,
}

#[derive(Debug, Clone)]
struct FieldDef {
    name: String,
    description: Option<String>,
    args: Vec<InputValueDef>,
    ty: TypeRef,
    deprecation: Option<String>,
}

#[derive(Debug, Clone)]
struct EnumValueDef {
    name: String,
    description: Option<String>,
    deprecation: Option<String>,
}

#[derive(Debug, Clone)]
struct TypeDef {
    name: String,
    kind: &'static str,
    description: Option<String>,
    fields: Vec<FieldDef>,
    interfaces: Vec<String>,
    possible_types: Vec<String>,
    enum_values: Vec<EnumValueDef>,
    input_fields: Vec<InputValueDef>,
    specified_by: Option<String>,
}

#[derive(Debug, Clone)]
struct DirectiveDef {
    name: String,
    description: Option<String>,
    locations: Vec<String>,
    args: Vec<InputValueDef>,
    repeatable: bool,
}

/// An enum of the API schema, as results are checked against it.
#[derive(Debug, Clone, Copy)]
pub struct ApiEnum<'a> {
    values: &'a [EnumValueDef],
}

impl ApiEnum<'_> {
    /// Whether `value` is one of the enum's values.
    pub fn has(&self, value: &str) -> bool {
        self.values.iter().any(|v| v.name == value)
    }
}

/// The API schema as introspection sees it.
#[derive(Debug, Clone)]
pub struct Introspection {
    types: BTreeMap<String, TypeDef>,
    query_type: String,
    mutation_type: Option<String>,
    subscription_type: Option<String>,
    directives: Vec<DirectiveDef>,
}

const BUILT_IN_SCALARS: [&str; 5] = ["String", "Int", "Float", "Boolean", "ID"];

/// `@deprecated(reason:)`: the reason, or the spec's default when the directive has none.
fn deprecation(directives: &[ast::Directive]) -> Option<String> {
    directives.iter().find(|d| d.name == "deprecated").map(|d| {
        d.arguments
            .iter()
            .find(|(name, _)| name == "reason")
            .and_then(|(_, value)| match value {
                graphql_tools::static_graphql::query::Value::String(reason) => Some(reason.clone()),
                _ => None,
            })
            .unwrap_or_else(|| "No longer supported".to_owned())
    })
}

fn input_values(values: &[ast::InputValue]) -> Vec<InputValueDef> {
    values
        .iter()
        .map(|v| InputValueDef {
            name: v.name.clone(),
            description: v.description.clone(),
            ty: TypeRef::from_ast(&v.value_type),
            default_value: v.default_value.as_ref().map(ToString::to_string),
            deprecation: deprecation(&v.directives),
        })
        .collect()
}

fn fields(fields: &[ast::Field]) -> Vec<FieldDef> {
    fields
        .iter()
        .map(|f| FieldDef {
            name: f.name.clone(),
            description: f.description.clone(),
            args: input_values(&f.arguments),
            ty: TypeRef::from_ast(&f.field_type),
            deprecation: deprecation(&f.directives),
        })
        .collect()
}

fn empty_type(name: &str, kind: &'static str, description: Option<String>) -> TypeDef {
    TypeDef {
        name: name.to_owned(),
        kind,
        description,
        fields: Vec::new(),
        interfaces: Vec::new(),
        possible_types: Vec::new(),
        enum_values: Vec::new(),
        input_fields: Vec::new(),
        specified_by: None,
    }
}

impl Introspection {
    /// Builds the model from the API schema document.
    pub fn new(document: &Document<'static, String>) -> Self {
        let mut types = BTreeMap::new();
        let mut directives = Vec::new();
        let (mut query_type, mut mutation_type, mut subscription_type) =
            ("Query".to_owned(), None, None);
        for definition in &document.definitions {
            match definition {
                Definition::SchemaDefinition(schema) => {
                    if let Some(query) = &schema.query {
                        query_type = query.clone();
                    }
                    mutation_type = schema.mutation.clone();
                    subscription_type = schema.subscription.clone();
                }
                Definition::TypeDefinition(definition) => {
                    let def = match definition {
                        TypeDefinition::Scalar(scalar) => {
                            let mut def =
                                empty_type(&scalar.name, "SCALAR", scalar.description.clone());
                            def.specified_by = scalar
                                .directives
                                .iter()
                                .find(|d| d.name == "specifiedBy")
                                .and_then(|d| d.arguments.first())
                                .map(|(_, url)| url.to_string().trim_matches('"').to_owned());
                            def
                        }
                        TypeDefinition::Object(object) => {
                            let mut def =
                                empty_type(&object.name, "OBJECT", object.description.clone());
                            def.fields = fields(&object.fields);
                            def.interfaces = object.implements_interfaces.clone();
                            def
                        }
                        TypeDefinition::Interface(interface) => {
                            let mut def = empty_type(
                                &interface.name,
                                "INTERFACE",
                                interface.description.clone(),
                            );
                            def.fields = fields(&interface.fields);
                            def.interfaces = interface.implements_interfaces.clone();
                            def
                        }
                        TypeDefinition::Union(union) => {
                            let mut def =
                                empty_type(&union.name, "UNION", union.description.clone());
                            def.possible_types = union.types.clone();
                            def
                        }
                        TypeDefinition::Enum(enumeration) => {
                            let mut def = empty_type(
                                &enumeration.name,
                                "ENUM",
                                enumeration.description.clone(),
                            );
                            def.enum_values = enumeration
                                .values
                                .iter()
                                .map(|v| EnumValueDef {
                                    name: v.name.clone(),
                                    description: v.description.clone(),
                                    deprecation: deprecation(&v.directives),
                                })
                                .collect();
                            def
                        }
                        TypeDefinition::InputObject(input) => {
                            let mut def =
                                empty_type(&input.name, "INPUT_OBJECT", input.description.clone());
                            def.input_fields = input_values(&input.fields);
                            def
                        }
                    };
                    types.insert(def.name.clone(), def);
                }
                Definition::DirectiveDefinition(directive) => directives.push(DirectiveDef {
                    name: directive.name.clone(),
                    description: directive.description.clone(),
                    locations: directive
                        .locations
                        .iter()
                        .map(|l| l.as_str().to_owned())
                        .collect(),
                    args: input_values(&directive.arguments),
                    repeatable: directive.repeatable,
                }),
                Definition::TypeExtension(_) => {}
            }
        }
        for scalar in BUILT_IN_SCALARS {
            types
                .entry(scalar.to_owned())
                .or_insert_with(|| empty_type(scalar, "SCALAR", None));
        }
        // An interface's possible types are the objects that implement it.
        let implementers: Vec<(String, String)> = types
            .values()
            .filter(|t| t.kind == "OBJECT")
            .flat_map(|t| {
                t.interfaces
                    .iter()
                    .map(move |i| (i.clone(), t.name.clone()))
            })
            .collect();
        for (interface, object) in implementers {
            if let Some(def) = types.get_mut(&interface) {
                def.possible_types.push(object);
            }
        }
        // The API schema drops `@inaccessible` types but not the references to them: a union
        // still names its inaccessible members, an object the inaccessible interfaces it
        // implements. Clients must see neither.
        let names: std::collections::BTreeSet<String> = types.keys().cloned().collect();
        for def in types.values_mut() {
            def.possible_types.retain(|t| names.contains(t));
            def.interfaces.retain(|i| names.contains(i));
        }
        Self {
            types,
            query_type,
            mutation_type,
            subscription_type,
            directives,
        }
    }

    /// The values a result of enum `name` may take: the API schema's (never an `@inaccessible`
    /// one), none when the API schema has no such enum.
    pub fn api_enum(&self, name: &str) -> ApiEnum<'_> {
        ApiEnum {
            values: self
                .types
                .get(name)
                .filter(|t| t.kind == "ENUM")
                .map_or(&[], |t| t.enum_values.as_slice()),
        }
    }

    /// Whether an object whose runtime type is `runtime` may be a value of type `declared`:
    /// `runtime` is an object type of the API schema and `declared` itself, or a union it is a
    /// member of, or an interface it implements. An `@inaccessible` type, or one the
    /// supergraph does not know, never is.
    pub fn is_possible_type(&self, declared: &str, runtime: &str) -> bool {
        let is_object = self.types.get(runtime).is_some_and(|t| t.kind == "OBJECT");
        is_object
            && (declared == runtime
                || self
                    .types
                    .get(declared)
                    .is_some_and(|d| d.possible_types.iter().any(|t| t == runtime)))
    }

    /// Whether a root field is answered here rather than planned.
    pub fn is_introspection_field(name: &str) -> bool {
        name == "__schema" || name == "__type"
    }

    /// The value of a root `__schema` or `__type` field for its selection.
    pub fn resolve_root(&self, field: &FieldSelection, variables: &Map<String, Value>) -> Value {
        let resolver = Resolver {
            model: self,
            variables,
        };
        match field.name.as_str() {
            "__schema" => resolver.schema(&field.selections),
            "__type" => match resolver.string_argument(field, "name") {
                Some(name) if self.types.contains_key(&name) => {
                    resolver.type_ref(&TypeRef::Named(name), &field.selections)
                }
                _ => Value::Null,
            },
            _ => Value::Null,
        }
    }
}

struct Resolver<'a> {
    model: &'a Introspection,
    variables: &'a Map<String, Value>,
}

impl Resolver<'_> {
    fn argument(&self, field: &FieldSelection, name: &str) -> Option<Value> {
        let value = field.arguments.as_ref()?.get_argument(name)?;
        Some(match value {
            AstValue::Variable(variable) => {
                self.variables.get(variable).cloned().unwrap_or(Value::Null)
            }
            AstValue::String(s) | AstValue::Enum(s) => Value::String(s.clone()),
            AstValue::Boolean(b) => Value::Bool(*b),
            AstValue::Int(i) => json!(i),
            _ => Value::Null,
        })
    }

    fn string_argument(&self, field: &FieldSelection, name: &str) -> Option<String> {
        self.argument(field, name)
            .and_then(|v| v.as_str().map(str::to_owned))
    }

    fn include_deprecated(&self, field: &FieldSelection) -> bool {
        self.argument(field, "includeDeprecated") == Some(Value::Bool(true))
    }

    fn skipped(&self, skip_if: &Option<String>, include_if: &Option<String>) -> bool {
        crate::projection::skipped(self.variables, skip_if, include_if)
    }

    /// Resolves `selections` on an object of introspection type `typename`, each field by
    /// `resolve`.
    fn object(
        &self,
        typename: &str,
        selections: &SelectionSet,
        resolve: &dyn Fn(&FieldSelection) -> Value,
    ) -> Value {
        let mut out = Map::new();
        self.collect(typename, selections, resolve, &mut out);
        Value::Object(out)
    }

    fn collect(
        &self,
        typename: &str,
        selections: &SelectionSet,
        resolve: &dyn Fn(&FieldSelection) -> Value,
        out: &mut Map<String, Value>,
    ) {
        for item in &selections.items {
            match item {
                SelectionItem::Field(field) => {
                    if self.skipped(&field.skip_if, &field.include_if) {
                        continue;
                    }
                    let key = field.alias.clone().unwrap_or_else(|| field.name.clone());
                    let value = if field.name == "__typename" {
                        Value::String(typename.to_owned())
                    } else {
                        resolve(field)
                    };
                    out.insert(key, value);
                }
                SelectionItem::InlineFragment(fragment) => {
                    if fragment.type_condition == typename
                        && !self.skipped(&fragment.skip_if, &fragment.include_if)
                    {
                        self.collect(typename, &fragment.selections, resolve, out);
                    }
                }
                SelectionItem::FragmentSpread(_) => {}
            }
        }
    }

    fn schema(&self, selections: &SelectionSet) -> Value {
        let model = self.model;
        self.object("__Schema", selections, &|field| match field.name.as_str() {
            "description" => Value::Null,
            "types" => Value::Array(
                model
                    .types
                    .keys()
                    .map(|name| self.type_ref(&TypeRef::Named(name.clone()), &field.selections))
                    .collect(),
            ),
            "queryType" => {
                self.type_ref(&TypeRef::Named(model.query_type.clone()), &field.selections)
            }
            "mutationType" => self.named_or_null(model.mutation_type.as_ref(), &field.selections),
            "subscriptionType" => {
                self.named_or_null(model.subscription_type.as_ref(), &field.selections)
            }
            "directives" => Value::Array(
                model
                    .directives
                    .iter()
                    .map(|d| self.directive(d, &field.selections))
                    .collect(),
            ),
            _ => Value::Null,
        })
    }

    fn named_or_null(&self, name: Option<&String>, selections: &SelectionSet) -> Value {
        name.map_or(Value::Null, |n| {
            self.type_ref(&TypeRef::Named(n.clone()), selections)
        })
    }

    fn type_ref(&self, ty: &TypeRef, selections: &SelectionSet) -> Value {
        match ty {
            TypeRef::NonNull(inner) | TypeRef::List(inner) => {
                let kind = if matches!(ty, TypeRef::NonNull(_)) {
                    "NON_NULL"
                } else {
                    "LIST"
                };
                self.object("__Type", selections, &|field| match field.name.as_str() {
                    "kind" => Value::String(kind.to_owned()),
                    "ofType" => self.type_ref(inner, &field.selections),
                    _ => Value::Null,
                })
            }
            TypeRef::Named(name) => {
                let Some(def) = self.model.types.get(name) else {
                    return Value::Null;
                };
                self.object("__Type", selections, &|field| {
                    self.named_type_field(def, field)
                })
            }
        }
    }

    fn named_type_field(&self, def: &TypeDef, field: &FieldSelection) -> Value {
        let has_fields = matches!(def.kind, "OBJECT" | "INTERFACE");
        match field.name.as_str() {
            "kind" => Value::String(def.kind.to_owned()),
            "name" => Value::String(def.name.clone()),
            "description" => json!(def.description),
            "specifiedByURL" => json!(def.specified_by),
            "isOneOf" => match def.kind {
                "INPUT_OBJECT" => Value::Bool(false),
                _ => Value::Null,
            },
            "fields" if has_fields => {
                let all = self.include_deprecated(field);
                Value::Array(
                    def.fields
                        .iter()
                        .filter(|f| all || f.deprecation.is_none())
                        .filter(|f| !f.name.starts_with("__"))
                        .map(|f| self.field_def(f, &field.selections))
                        .collect(),
                )
            }
            "interfaces" if has_fields => Value::Array(
                def.interfaces
                    .iter()
                    .map(|i| self.type_ref(&TypeRef::Named(i.clone()), &field.selections))
                    .collect(),
            ),
            "possibleTypes" if matches!(def.kind, "INTERFACE" | "UNION") => Value::Array(
                def.possible_types
                    .iter()
                    .map(|t| self.type_ref(&TypeRef::Named(t.clone()), &field.selections))
                    .collect(),
            ),
            "enumValues" if def.kind == "ENUM" => {
                let all = self.include_deprecated(field);
                Value::Array(
                    def.enum_values
                        .iter()
                        .filter(|v| all || v.deprecation.is_none())
                        .map(|v| {
                            self.object(
                                "__EnumValue",
                                &field.selections,
                                &|f| match f.name.as_str() {
                                    "name" => Value::String(v.name.clone()),
                                    "description" => json!(v.description),
                                    "isDeprecated" => Value::Bool(v.deprecation.is_some()),
                                    "deprecationReason" => json!(v.deprecation),
                                    _ => Value::Null,
                                },
                            )
                        })
                        .collect(),
                )
            }
            "inputFields" if def.kind == "INPUT_OBJECT" => {
                self.input_values(&def.input_fields, field)
            }
            _ => Value::Null,
        }
    }

    fn field_def(&self, def: &FieldDef, selections: &SelectionSet) -> Value {
        self.object("__Field", selections, &|field| match field.name.as_str() {
            "name" => Value::String(def.name.clone()),
            "description" => json!(def.description),
            "args" => self.input_values(&def.args, field),
            "type" => self.type_ref(&def.ty, &field.selections),
            "isDeprecated" => Value::Bool(def.deprecation.is_some()),
            "deprecationReason" => json!(def.deprecation),
            _ => Value::Null,
        })
    }

    /// Arguments or input fields, deprecated ones only when `includeDeprecated: true`.
    fn input_values(&self, values: &[InputValueDef], field: &FieldSelection) -> Value {
        let all = self.include_deprecated(field);
        Value::Array(
            values
                .iter()
                .filter(|v| all || v.deprecation.is_none())
                .map(|v| self.input_value(v, &field.selections))
                .collect(),
        )
    }

    fn input_value(&self, def: &InputValueDef, selections: &SelectionSet) -> Value {
        self.object(
            "__InputValue",
            selections,
            &|field| match field.name.as_str() {
                "name" => Value::String(def.name.clone()),
                "description" => json!(def.description),
                "type" => self.type_ref(&def.ty, &field.selections),
                "defaultValue" => json!(def.default_value),
                "isDeprecated" => Value::Bool(def.deprecation.is_some()),
                "deprecationReason" => json!(def.deprecation),
                _ => Value::Null,
            },
        )
    }

    fn directive(&self, def: &DirectiveDef, selections: &SelectionSet) -> Value {
        self.object(
            "__Directive",
            selections,
            &|field| match field.name.as_str() {
                "name" => Value::String(def.name.clone()),
                "description" => json!(def.description),
                "locations" => json!(def.locations),
                "args" => self.input_values(&def.args, field),
                "isRepeatable" => Value::Bool(def.repeatable),
                _ => Value::Null,
            },
        )
    }
}

//! The request's variables, coerced before execution as the GraphQL spec (October 2021) says:
//! §6.1.2 CoerceVariableValues, with the input coercion of the built-in scalars (§3.5), enums
//! (§3.9), input objects (§3.10), lists (§3.11) and non-null types (§3.12).
//!
//! Where the spec leaves wording or a detail open, this follows graphql-js, the reference
//! implementation: its messages (`Variable "$input" got invalid value 3 at "input.color"; …`), a
//! JSON number with an integral value accepted as an `Int`, and a list given a list of items
//! for `[[Int]]` wrapping each item (`[1, 2, 3]` → `[[1], [2], [3]]`, the behaviour the spec's
//! prose asks for; the October 2021 example table's "Error" on that row is an erratum, corrected
//! in graphql-spec#1057).
//!
//! [`InputTypes`] indexes the API schema's input types once per supergraph, so that coercing a
//! request's variables only walks the values it was given.
//!
//! Hostile values cost no more than their size: as graphql-js does, coercion stops after
//! [`MAX_PROBLEMS`] problems with one more that says so, and a value shown in a message is
//! written only up to the length shown (an object with 100,000 unknown fields would otherwise
//! be written out whole for each of them).

use foldhash::{HashMap, HashSet};
use graphql_tools::parser::query::{Type, Value as Literal, VariableDefinition};
use graphql_tools::parser::schema::{
    Definition, Document, EnumValue, InputValue, TypeDefinition, TypeExtension,
};
use serde_json::{Map, Number, Value};

use crate::validation::Problem;

/// The most problems reported for one request's variables (graphql-js's `maxErrors` in
/// `execute`); coercion stops there.
pub const MAX_PROBLEMS: usize = 50;

/// The problem that ends a coercion which found [`MAX_PROBLEMS`], in graphql-js's words.
pub const TOO_MANY_PROBLEMS: &str =
    "Too many errors processing variables, error limit reached. Execution aborted.";

/// The input types of an API schema, indexed once per supergraph (scalars, enums with their
/// values, input objects with their fields, types and defaults).
pub struct InputTypes {
    /// Only input types are here: a variable whose type names an object, interface or union is
    /// refused as naming no input type.
    ids_by_name: HashMap<String, usize>,
    types: Vec<NamedInputType>,
}

struct NamedInputType {
    name: String,
    kind: Kind,
}

enum Kind {
    Int,
    Float,
    String,
    Boolean,
    Id,
    /// A custom scalar accepts any JSON value: its own rules are its subgraph's to apply.
    CustomScalar,
    Enum {
        values: HashSet<String>,
    },
    InputObject {
        /// In definition order, the order defaults are added in.
        fields: Vec<InputField>,
        positions_by_name: HashMap<String, usize>,
    },
}

struct InputField {
    name: String,
    type_ref: TypeRef,
    /// Already converted to JSON and coerced, so that a request missing the field only clones it.
    default: Option<Value>,
}

/// A type as a named type inside its wrappers, so that walking it needs no allocation.
struct TypeRef {
    /// Outermost first: `[Int!]!` is `[NonNull, List, NonNull]` around `Int`.
    wrappers: Vec<Wrapper>,
    named: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrapper {
    List,
    NonNull,
}

/// One step from a variable's value down to the value a problem is about.
enum PathStep<'v> {
    Field(&'v str),
    Index(usize),
}

impl InputTypes {
    pub fn new(api_schema: &Document<'static, String>) -> Self {
        let mut input_types = InputTypes {
            ids_by_name: HashMap::default(),
            types: Vec::new(),
        };
        // The built-in scalars come first so that an SDL declaring `scalar Int` cannot turn one
        // into a custom scalar.
        for (name, kind) in [
            ("Int", Kind::Int),
            ("Float", Kind::Float),
            ("String", Kind::String),
            ("Boolean", Kind::Boolean),
            ("ID", Kind::Id),
        ] {
            input_types.declare(name, kind);
        }

        // First every input type's name, so that a field may name a type declared after it.
        let mut declared_fields: Vec<(usize, &InputValue<'static, String>)> = Vec::new();
        for definition in &api_schema.definitions {
            match definition {
                Definition::TypeDefinition(TypeDefinition::Scalar(scalar)) => {
                    input_types.declare(&scalar.name, Kind::CustomScalar);
                }
                Definition::TypeDefinition(TypeDefinition::Enum(enum_type)) => {
                    input_types.declare_enum_values(&enum_type.name, &enum_type.values);
                }
                Definition::TypeExtension(TypeExtension::Enum(extension)) => {
                    input_types.declare_enum_values(&extension.name, &extension.values);
                }
                Definition::TypeDefinition(TypeDefinition::InputObject(input_object)) => {
                    let id = input_types.declare_input_object(&input_object.name);
                    declared_fields.extend(input_object.fields.iter().map(|field| (id, field)));
                }
                Definition::TypeExtension(TypeExtension::InputObject(extension)) => {
                    let id = input_types.declare_input_object(&extension.name);
                    declared_fields.extend(extension.fields.iter().map(|field| (id, field)));
                }
                _ => {}
            }
        }

        for (object_id, field) in declared_fields {
            let type_ref = input_types.resolve_field_type(&field.value_type);
            let input_field = InputField {
                name: field.name.clone(),
                type_ref,
                default: field.default_value.as_ref().map(literal_to_json),
            };
            if let Kind::InputObject {
                fields,
                positions_by_name,
            } = &mut input_types.types[object_id].kind
            {
                positions_by_name.insert(input_field.name.clone(), fields.len());
                fields.push(input_field);
            }
        }

        input_types.coerce_field_defaults();
        input_types
    }

    /// CoerceVariableValues: the operation's variables, coerced; or every problem found.
    pub fn coerce(
        &self,
        definitions: &[VariableDefinition<'static, String>],
        provided: &Map<String, Value>,
    ) -> Result<Map<String, Value>, Vec<Problem>> {
        // Variables the operation does not define are left out: nothing can use them.
        let mut coerced = Map::with_capacity(definitions.len());
        let mut problems = Vec::new();
        for definition in definitions {
            // One problem past the limit stops coercion (see the end).
            if problems.len() > MAX_PROBLEMS {
                break;
            }
            let room = MAX_PROBLEMS.saturating_sub(problems.len());
            let name = definition.name.as_str();
            let mut report = |message: String| {
                problems.push(Problem {
                    message,
                    locations: vec![(definition.position.line, definition.position.column)],
                });
            };
            let Some(type_ref) = self.resolve_variable_type(&definition.var_type) else {
                report(format!(
                    "Variable \"${name}\" expected value of type \"{}\" which cannot be used as \
                     an input type.",
                    print_type(&definition.var_type)
                ));
                continue;
            };
            let is_non_null = type_ref.wrappers.first() == Some(&Wrapper::NonNull);

            // Declared before the coercion that borrows it, so that it outlives the coercion.
            let default_value;
            let (value, wording) = match provided.get(name) {
                Some(Value::Null) if is_non_null => {
                    report(format!(
                        "Variable \"${name}\" of non-null type \"{}\" must not be null.",
                        print_type(&definition.var_type)
                    ));
                    continue;
                }
                Some(value) => (value, "got invalid value"),
                None => match &definition.default_value {
                    Some(literal) => {
                        default_value = literal_to_json(literal);
                        (&default_value, "has invalid default value")
                    }
                    None if is_non_null => {
                        report(format!(
                            "Variable \"${name}\" of required type \"{}\" was not provided.",
                            print_type(&definition.var_type)
                        ));
                        continue;
                    }
                    // Absent and nullable without a default: absent, not null, as the spec says.
                    None => continue,
                },
            };

            let mut coercion = Coercion {
                input_types: self,
                variable: name,
                wording,
                path: Vec::new(),
                problems: Vec::new(),
                room,
                overflowed: false,
            };
            let coerced_value = coercion.coerce_value(value, &type_ref.wrappers, type_ref.named);
            if coercion.problems.is_empty() && !coercion.overflowed {
                coerced.insert(name.to_owned(), coerced_value);
            } else {
                let overflowed = coercion.overflowed;
                coercion.problems.into_iter().for_each(&mut report);
                if overflowed {
                    // Stands for the problem past the limit; replaced below.
                    report(TOO_MANY_PROBLEMS.to_owned());
                }
            }
        }
        if problems.len() > MAX_PROBLEMS {
            problems.truncate(MAX_PROBLEMS);
            problems.push(Problem {
                message: TOO_MANY_PROBLEMS.to_owned(),
                locations: Vec::new(),
            });
        }
        if problems.is_empty() {
            Ok(coerced)
        } else {
            Err(problems)
        }
    }

    /// The named type's id, declaring it with `kind` unless a type of that name already exists.
    fn declare(&mut self, name: &str, kind: Kind) -> usize {
        if let Some(&id) = self.ids_by_name.get(name) {
            return id;
        }
        let id = self.types.len();
        self.types.push(NamedInputType {
            name: name.to_owned(),
            kind,
        });
        self.ids_by_name.insert(name.to_owned(), id);
        id
    }

    fn declare_enum_values(&mut self, name: &str, values: &[EnumValue<'static, String>]) {
        let id = self.declare(
            name,
            Kind::Enum {
                values: HashSet::default(),
            },
        );
        if let Kind::Enum { values: known } = &mut self.types[id].kind {
            known.extend(values.iter().map(|value| value.name.clone()));
        }
    }

    fn declare_input_object(&mut self, name: &str) -> usize {
        self.declare(
            name,
            Kind::InputObject {
                fields: Vec::new(),
                positions_by_name: HashMap::default(),
            },
        )
    }

    fn resolve_variable_type(&self, written: &Type<'static, String>) -> Option<TypeRef> {
        let mut wrappers = Vec::new();
        let mut current = written;
        loop {
            match current {
                Type::NonNullType(inner) => {
                    wrappers.push(Wrapper::NonNull);
                    current = inner;
                }
                Type::ListType(inner) => {
                    wrappers.push(Wrapper::List);
                    current = inner;
                }
                Type::NamedType(name) => {
                    let named = *self.ids_by_name.get(name.as_str())?;
                    return Some(TypeRef { wrappers, named });
                }
            }
        }
    }

    /// A field's type; one naming no input type (an invalid schema) accepts any value, as a
    /// custom scalar would, rather than refusing every request that uses the field.
    fn resolve_field_type(&mut self, written: &Type<'static, String>) -> TypeRef {
        if let Some(type_ref) = self.resolve_variable_type(written) {
            return type_ref;
        }
        let mut wrappers = Vec::new();
        let mut current = written;
        let name = loop {
            match current {
                Type::NonNullType(inner) => {
                    wrappers.push(Wrapper::NonNull);
                    current = inner;
                }
                Type::ListType(inner) => {
                    wrappers.push(Wrapper::List);
                    current = inner;
                }
                Type::NamedType(name) => break name,
            }
        };
        // Not indexed by name: a variable may still not be declared with this type.
        let named = self.types.len();
        self.types.push(NamedInputType {
            name: name.clone(),
            kind: Kind::CustomScalar,
        });
        TypeRef { wrappers, named }
    }

    /// Coerces each field's default once here (`[Int] = 1` becomes `[1]`, `ID = 4` becomes
    /// `"4"`, an input object's own defaults are filled in), as graphql-js does when it builds a
    /// schema. A default that does not coerce (a schema validation should have refused) is kept
    /// as written. Defaults nested inside defaults are filled in as written, since this is a
    /// single pass over fields whose own defaults may not be coerced yet.
    fn coerce_field_defaults(&mut self) {
        let mut coerced_defaults = Vec::new();
        for (type_id, named_type) in self.types.iter().enumerate() {
            let Kind::InputObject { fields, .. } = &named_type.kind else {
                continue;
            };
            for (position, field) in fields.iter().enumerate() {
                let Some(default) = &field.default else {
                    continue;
                };
                let mut coercion = Coercion {
                    input_types: self,
                    variable: &field.name,
                    wording: "has invalid default value",
                    path: Vec::new(),
                    problems: Vec::new(),
                    room: MAX_PROBLEMS,
                    overflowed: false,
                };
                let coerced =
                    coercion.coerce_value(default, &field.type_ref.wrappers, field.type_ref.named);
                if coercion.problems.is_empty() && !coercion.overflowed {
                    coerced_defaults.push((type_id, position, coerced));
                }
            }
        }
        for (type_id, position, coerced) in coerced_defaults {
            if let Kind::InputObject { fields, .. } = &mut self.types[type_id].kind {
                fields[position].default = Some(coerced);
            }
        }
    }

    /// The type as the SDL writes it, for messages.
    fn print_type_ref(&self, wrappers: &[Wrapper], named: usize) -> String {
        match wrappers.split_first() {
            None => self.types[named].name.clone(),
            Some((Wrapper::NonNull, inner)) => format!("{}!", self.print_type_ref(inner, named)),
            Some((Wrapper::List, inner)) => format!("[{}]", self.print_type_ref(inner, named)),
        }
    }
}

/// One value's coercion, collecting every problem with the path where it was found.
struct Coercion<'t, 'v> {
    input_types: &'t InputTypes,
    variable: &'t str,
    /// "got invalid value" for a provided value, "has invalid default value" for a default.
    wording: &'static str,
    path: Vec<PathStep<'v>>,
    problems: Vec<String>,
    /// How many problems may be recorded; one more stops coercion.
    room: usize,
    /// Whether a problem was found past `room`.
    overflowed: bool,
}

impl<'v> Coercion<'_, 'v> {
    /// The value coerced to the type (`wrappers` around the named type), or `null` where a
    /// problem was recorded (the caller discards the value then).
    fn coerce_value(&mut self, value: &'v Value, wrappers: &[Wrapper], named: usize) -> Value {
        match (wrappers.split_first(), value) {
            (Some((Wrapper::NonNull, _)), Value::Null) => {
                let type_name = self.input_types.print_type_ref(wrappers, named);
                self.fail(
                    value,
                    format!("Expected non-nullable type \"{type_name}\" not to be null."),
                );
                Value::Null
            }
            (Some((Wrapper::NonNull, inner)), _) => self.coerce_value(value, inner, named),
            (_, Value::Null) => Value::Null,
            (Some((Wrapper::List, item_wrappers)), Value::Array(items)) => {
                let mut coerced = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    if self.stopped() {
                        break;
                    }
                    self.path.push(PathStep::Index(index));
                    coerced.push(self.coerce_value(item, item_wrappers, named));
                    self.path.pop();
                }
                Value::Array(coerced)
            }
            // §3.11: a single value where a list is expected is a list of that one value; the
            // path stays the same, as graphql-js reports it.
            (Some((Wrapper::List, item_wrappers)), _) => {
                Value::Array(vec![self.coerce_value(value, item_wrappers, named)])
            }
            (None, _) => self.coerce_named(value, named),
        }
    }

    fn coerce_named(&mut self, value: &'v Value, named: usize) -> Value {
        // Copied out of `self` so that the type outlives the `&mut self` calls below.
        let input_types = self.input_types;
        let named_type = &input_types.types[named];
        let scalar = match &named_type.kind {
            Kind::Int => coerce_int(value),
            Kind::Float => coerce_float(value),
            Kind::String => coerce_string(value),
            Kind::Boolean => coerce_boolean(value),
            Kind::Id => coerce_id(value),
            Kind::CustomScalar => Ok(value.clone()),
            Kind::Enum { values } => coerce_enum(value, &named_type.name, values),
            Kind::InputObject {
                fields,
                positions_by_name,
            } => {
                return self.coerce_input_object(
                    value,
                    &named_type.name,
                    fields,
                    positions_by_name,
                );
            }
        };
        scalar.unwrap_or_else(|message| {
            self.fail(value, message);
            Value::Null
        })
    }

    /// §3.10: known fields coerced in the order given, then the missing fields' defaults in
    /// definition order; unknown fields and missing required ones refused.
    fn coerce_input_object(
        &mut self,
        value: &'v Value,
        type_name: &str,
        fields: &[InputField],
        positions_by_name: &HashMap<String, usize>,
    ) -> Value {
        let Value::Object(provided) = value else {
            self.fail(
                value,
                format!("Expected type \"{type_name}\" to be an object."),
            );
            return Value::Null;
        };
        let mut coerced = Map::with_capacity(provided.len());
        for (field_name, field_value) in provided {
            if self.stopped() {
                break;
            }
            let Some(&position) = positions_by_name.get(field_name) else {
                self.fail(
                    value,
                    format!("Field \"{field_name}\" is not defined by type \"{type_name}\"."),
                );
                continue;
            };
            let field = &fields[position];
            self.path.push(PathStep::Field(field_name));
            let coerced_field =
                self.coerce_value(field_value, &field.type_ref.wrappers, field.type_ref.named);
            self.path.pop();
            coerced.insert(field_name.clone(), coerced_field);
        }
        // Every field given (the usual case): no default to add, nothing missing.
        if coerced.len() == fields.len() {
            return Value::Object(coerced);
        }
        for field in fields {
            if provided.contains_key(&field.name) {
                continue;
            }
            if let Some(default) = &field.default {
                coerced.insert(field.name.clone(), default.clone());
            } else if field.type_ref.wrappers.first() == Some(&Wrapper::NonNull) {
                let field_type = self
                    .input_types
                    .print_type_ref(&field.type_ref.wrappers, field.type_ref.named);
                self.fail(
                    value,
                    format!(
                        "Field \"{}\" of required type \"{field_type}\" was not provided.",
                        field.name
                    ),
                );
            }
        }
        Value::Object(coerced)
    }

    /// Whether coercion found more problems than it may report, and stops.
    fn stopped(&self) -> bool {
        self.overflowed
    }

    /// Records a problem with `value`, found at the current path; one past the room is only
    /// noted, and stops coercion.
    fn fail(&mut self, value: &Value, reason: String) {
        if self.problems.len() >= self.room {
            self.overflowed = true;
            return;
        }
        let mut message = format!(
            "Variable \"${}\" {} {}",
            self.variable,
            self.wording,
            show(value)
        );
        if !self.path.is_empty() {
            message.push_str(" at \"");
            message.push_str(self.variable);
            for step in &self.path {
                match step {
                    PathStep::Field(name) => {
                        message.push('.');
                        message.push_str(name);
                    }
                    PathStep::Index(index) => message.push_str(&format!("[{index}]")),
                }
            }
            message.push('"');
        }
        message.push_str("; ");
        message.push_str(&reason);
        self.problems.push(message);
    }
}

/// §3.5.1: a 32-bit signed integer. A JSON number with an integral value (`4.0`) is one, as in
/// graphql-js, where JSON does not tell `4.0` from `4`.
fn coerce_int(value: &Value) -> Result<Value, String> {
    let out_of_range = || {
        format!(
            "Int cannot represent non 32-bit signed integer value: {}",
            show(value)
        )
    };
    let Value::Number(number) = value else {
        return Err(format!(
            "Int cannot represent non-integer value: {}",
            show(value)
        ));
    };
    if let Some(integer) = number.as_i64() {
        return match i32::try_from(integer) {
            Ok(_) => Ok(value.clone()),
            Err(_) => Err(out_of_range()),
        };
    }
    if number.is_u64() {
        return Err(out_of_range());
    }
    let float = number.as_f64().unwrap_or(f64::NAN);
    if float.fract() != 0.0 || !float.is_finite() {
        return Err(format!(
            "Int cannot represent non-integer value: {}",
            show(value)
        ));
    }
    if float < f64::from(i32::MIN) || float > f64::from(i32::MAX) {
        return Err(out_of_range());
    }
    // In range and integral, so the conversion is exact.
    Ok(Value::from(float as i32))
}

/// §3.5.2: any number; an integer is kept as given, the same number.
fn coerce_float(value: &Value) -> Result<Value, String> {
    match value {
        Value::Number(_) => Ok(value.clone()),
        _ => Err(format!(
            "Float cannot represent non numeric value: {}",
            show(value)
        )),
    }
}

/// §3.5.3: only a string.
fn coerce_string(value: &Value) -> Result<Value, String> {
    match value {
        Value::String(_) => Ok(value.clone()),
        _ => Err(format!(
            "String cannot represent a non string value: {}",
            show(value)
        )),
    }
}

/// §3.5.4: only `true` or `false`.
fn coerce_boolean(value: &Value) -> Result<Value, String> {
    match value {
        Value::Bool(_) => Ok(value.clone()),
        _ => Err(format!(
            "Boolean cannot represent a non boolean value: {}",
            show(value)
        )),
    }
}

/// §3.5.5: a string, or an integer, which becomes its decimal string.
fn coerce_id(value: &Value) -> Result<Value, String> {
    // Integers beyond 2^53 are not exact as floats, so a float is an ID only below that.
    const LARGEST_EXACT_FLOAT_INTEGER: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::String(_) => Ok(value.clone()),
        Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                return Ok(Value::String(integer.to_string()));
            }
            if let Some(integer) = number.as_u64() {
                return Ok(Value::String(integer.to_string()));
            }
            match number.as_f64() {
                Some(float)
                    if float.fract() == 0.0 && float.abs() <= LARGEST_EXACT_FLOAT_INTEGER =>
                {
                    Ok(Value::String((float as i64).to_string()))
                }
                _ => Err(format!("ID cannot represent value: {}", show(value))),
            }
        }
        _ => Err(format!("ID cannot represent value: {}", show(value))),
    }
}

/// §3.9: a string naming one of the enum's values.
fn coerce_enum(value: &Value, enum_name: &str, values: &HashSet<String>) -> Result<Value, String> {
    match value {
        Value::String(name) if values.contains(name) => Ok(value.clone()),
        Value::String(name) => Err(format!(
            "Value \"{name}\" does not exist in \"{enum_name}\" enum."
        )),
        _ => Err(format!(
            "Enum \"{enum_name}\" cannot represent non-string value: {}.",
            show(value)
        )),
    }
}

/// A GraphQL literal (a default value, an argument) as JSON: an enum value becomes its name,
/// a list an array, an input object an object in the order written. A float that JSON cannot
/// hold (not finite) becomes `null`, and so does a variable reference, which a constant such
/// as a default value never holds.
pub fn literal_to_json(value: &Literal<'static, String>) -> Value {
    match value {
        Literal::Variable(_) | Literal::Null => Value::Null,
        Literal::Int(number) => number.as_i64().map_or(Value::Null, Value::from),
        Literal::Float(float) => Number::from_f64(*float).map_or(Value::Null, Value::Number),
        Literal::String(string) => Value::String(string.clone()),
        Literal::Boolean(boolean) => Value::Bool(*boolean),
        Literal::Enum(name) => Value::String(name.clone()),
        Literal::List(items) => Value::Array(items.iter().map(literal_to_json).collect()),
        Literal::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, field)| (name.clone(), literal_to_json(field)))
                .collect(),
        ),
    }
}

/// The type as the operation wrote it, for messages.
fn print_type(written: &Type<'static, String>) -> String {
    match written {
        Type::NamedType(name) => name.clone(),
        Type::ListType(inner) => format!("[{}]", print_type(inner)),
        Type::NonNullType(inner) => format!("{}!", print_type(inner)),
    }
}

/// A value in a message: compact JSON, cut short so that a large value does not fill the
/// response. Only what is shown is written: showing a large value costs no more than a small one.
fn show(value: &Value) -> String {
    const LONGEST: usize = 100;
    let mut written = Prefix {
        bytes: Vec::with_capacity(LONGEST + 4),
        limit: LONGEST + 1,
    };
    // Stops with an error once past the limit: the prefix is all that is wanted.
    let _ = serde_json::to_writer(&mut written, value);
    let mut text = String::from_utf8_lossy(&written.bytes).into_owned();
    if text.len() > LONGEST {
        let mut end = LONGEST;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// A writer that keeps the first `limit` bytes written to it and refuses the rest.
struct Prefix {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Prefix {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = self.limit - self.bytes.len();
        if room == 0 {
            return Err(std::io::Error::other("long enough"));
        }
        let taken = buf.len().min(room);
        self.bytes.extend_from_slice(&buf[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

//! Which schema coordinates a client operation touches, so a schema check can tell which known
//! operations a breaking change ([`crate::diff::Change::affects`]) would break.
//!
//! Each operation is validated against the schema first: an operation that no longer validates
//! is itself a failure for the check. The coordinates recorded (the format the router records
//! too):
//! - `Type` for every named type touched: the root type, every selection set's parent type
//!   (so fragment and inline-fragment type conditions), each field's return type, each variable's
//!   type, each argument's type (field and directive arguments) and each input field's type in
//!   a literal;
//! - `Parent.field` for each selected field, `Parent` being the type in scope where it is
//!   selected (the interface when selected on an interface); not `__typename`, `__schema` or
//!   `__type` (nor anything under the latter two);
//! - `Parent.field(arg:)` for each argument given to a field;
//! - `Enum.VALUE` for each literal enum value and `Input.field` for each field of a literal input
//!   object, recursively (in arguments, directive arguments and variable defaults);
//! - `@name` for every directive used (on the operation, its variables, fields and fragments,
//!   `@skip` and `@include` included).
//!
//! Fragment spreads are followed: a fragment's selections count for every operation spreading
//! it. Each document stands alone: a fragment must be defined in the file that spreads it.

use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;

use apollo_compiler::ExecutableDocument;
use apollo_compiler::Name;
use apollo_compiler::Schema;
use apollo_compiler::ast::DirectiveList;
use apollo_compiler::ast::Type;
use apollo_compiler::ast::Value;
use apollo_compiler::diagnostic::ToCliReport;
use apollo_compiler::executable::Field;
use apollo_compiler::executable::FragmentSpread;
use apollo_compiler::executable::InlineFragment;
use apollo_compiler::executable::Operation;
use apollo_compiler::executable::Selection;
use apollo_compiler::executable::SelectionSet;
use apollo_compiler::parser::SourceSpan;
use apollo_compiler::validation::DiagnosticList;
use apollo_compiler::validation::Valid;
use apollo_compiler::validation::WithErrors;
use serde::Serialize;

/// The name of an operation without one.
pub const ANONYMOUS: &str = "<anonymous>";

/// The meta-fields that are not part of the schema's own types.
const META_FIELDS: [&str; 3] = ["__typename", "__schema", "__type"];

/// The schema coordinates one operation touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperationUsage {
    /// The operation's name, or [`ANONYMOUS`].
    pub name: String,
    /// Where the operation was read from (for a directory, the path relative to it).
    pub source: String,
    pub coordinates: BTreeSet<String>,
}

/// Why operations could not be read or checked.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The document does not parse, or does not validate against the schema. Each diagnostic
    /// reads `file:line:column: message (in operation 'Name')`.
    #[error("{file} is not a valid operation document for the schema:\n{}", diagnostics.join("\n"))]
    Invalid {
        file: String,
        diagnostics: Vec<String>,
    },
}

/// The usage of every operation in `document`, in document order; `source` names the document
/// in the usages and in errors.
pub fn operation_usage(
    schema: &Valid<Schema>,
    document: &str,
    source: &str,
) -> Result<Vec<OperationUsage>, UsageError> {
    let document = ExecutableDocument::parse_and_validate(schema, document, source)
        .map_err(|errors| invalid_document(source, &errors))?;
    let usages = document
        .operations
        .iter()
        .map(|operation| OperationUsage {
            name: operation_name(operation),
            source: source.to_string(),
            coordinates: Collector::new(schema, &document).operation(operation),
        })
        .collect();
    Ok(usages)
}

/// The usage of every operation in every `*.graphql` file under `dir` (recursively), files in
/// path order; each usage's source is the file's path relative to `dir`, with `/` separators.
pub fn operations_in_dir(
    schema: &Valid<Schema>,
    dir: &Path,
) -> Result<Vec<OperationUsage>, UsageError> {
    let mut usages = Vec::new();
    for (source, text) in documents_in_dir(dir)? {
        usages.extend(operation_usage(schema, &text, &source)?);
    }
    Ok(usages)
}

/// Every `*.graphql` file under `dir` (recursively), in path order, as (its path relative to
/// `dir` with `/` separators, its text).
pub fn documents_in_dir(dir: &Path) -> Result<Vec<(String, String)>, UsageError> {
    let mut files = Vec::new();
    collect_graphql_files(dir, &mut files)?;
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).map_err(|source| UsageError::Read {
                path: file.clone(),
                source,
            })?;
            Ok((relative_source(dir, &file), text))
        })
        .collect()
}

fn collect_graphql_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), UsageError> {
    let read_error = |source| UsageError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let path = entry.path();
        if entry.file_type().map_err(read_error)?.is_dir() {
            collect_graphql_files(&path, files)?;
        } else if path.extension().is_some_and(|ext| ext == "graphql") && path.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

fn relative_source(dir: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(dir).unwrap_or(file);
    let parts: Vec<String> = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

fn operation_name(operation: &Operation) -> String {
    operation
        .name
        .as_ref()
        .map_or_else(|| ANONYMOUS.to_string(), |name| name.to_string())
}

// ---- Errors ------------------------------------------------------------------------------------

fn invalid_document(file: &str, errors: &WithErrors<ExecutableDocument>) -> UsageError {
    UsageError::Invalid {
        file: file.to_string(),
        diagnostics: diagnostic_lines(file, &errors.partial, &errors.errors),
    }
}

fn diagnostic_lines(
    file: &str,
    document: &ExecutableDocument,
    diagnostics: &DiagnosticList,
) -> Vec<String> {
    diagnostics
        .iter()
        .map(|diagnostic| {
            let position = diagnostic
                .line_column_range()
                .map(|range| format!(":{}:{}", range.start.line, range.start.column))
                .unwrap_or_default();
            let context = diagnostic
                .error
                .location()
                .and_then(|span| enclosing_definition(document, span))
                .map(|definition| format!(" (in {definition})"))
                .unwrap_or_default();
            format!("{file}{position}: {}{context}", diagnostic.error)
        })
        .collect()
}

/// The operation or fragment whose text contains `span`, described for a message.
fn enclosing_definition(document: &ExecutableDocument, span: SourceSpan) -> Option<String> {
    let contains = |outer: Option<SourceSpan>| {
        outer.is_some_and(|outer| {
            outer.file_id() == span.file_id()
                && outer.offset() <= span.offset()
                && span.offset() < outer.end_offset()
        })
    };
    let operation = document
        .operations
        .iter()
        .find(|operation| contains(operation.location()))
        .map(|operation| format!("operation '{}'", operation_name(operation)));
    operation.or_else(|| {
        document
            .fragments
            .values()
            .find(|fragment| contains(fragment.location()))
            .map(|fragment| format!("fragment '{}'", fragment.name))
    })
}

// ---- Collecting coordinates --------------------------------------------------------------------

/// Walks one operation (and the fragments it spreads), recording coordinates.
struct Collector<'a> {
    schema: &'a Schema,
    document: &'a ExecutableDocument,
    coordinates: BTreeSet<String>,
    visited_fragments: BTreeSet<Name>,
    visited_inputs: BTreeSet<Name>,
}

impl<'a> Collector<'a> {
    fn new(schema: &'a Schema, document: &'a ExecutableDocument) -> Self {
        Self {
            schema,
            document,
            coordinates: BTreeSet::new(),
            visited_fragments: BTreeSet::new(),
            visited_inputs: BTreeSet::new(),
        }
    }

    fn add(&mut self, coordinate: impl Into<String>) {
        self.coordinates.insert(coordinate.into());
    }

    fn operation(mut self, operation: &Operation) -> BTreeSet<String> {
        self.add(operation.object_type().as_str());
        for variable in &operation.variables {
            self.add(variable.ty.inner_named_type().as_str());
            self.input_types_within(variable.ty.inner_named_type());
            if let Some(default) = &variable.default_value {
                self.value(default, &variable.ty);
            }
            self.directives(&variable.directives);
        }
        self.directives(&operation.directives);
        self.selection_set(&operation.selection_set);
        self.coordinates
    }

    fn selection_set(&mut self, selection_set: &SelectionSet) {
        self.add(selection_set.ty.as_str());
        for selection in &selection_set.selections {
            match selection {
                Selection::Field(field) => self.field(&selection_set.ty, field),
                Selection::FragmentSpread(spread) => self.fragment_spread(spread),
                Selection::InlineFragment(inline) => self.inline_fragment(inline),
            }
        }
    }

    fn field(&mut self, parent: &Name, field: &Field) {
        self.directives(&field.directives);
        if META_FIELDS.contains(&field.name.as_str()) {
            return;
        }
        let coordinate = format!("{parent}.{}", field.name);
        for argument in &field.arguments {
            self.add(format!("{coordinate}({}:)", argument.name));
            if let Some(definition) = field.definition.argument_by_name(&argument.name) {
                self.add(definition.ty.inner_named_type().as_str());
                self.input_types_within(definition.ty.inner_named_type());
                self.value(&argument.value, &definition.ty);
            }
        }
        self.add(coordinate);
        self.add(field.definition.ty.inner_named_type().as_str());
        self.selection_set(&field.selection_set);
    }

    fn fragment_spread(&mut self, spread: &FragmentSpread) {
        self.directives(&spread.directives);
        if !self.visited_fragments.insert(spread.fragment_name.clone()) {
            return;
        }
        let Some(fragment) = self.document.fragments.get(&spread.fragment_name) else {
            return;
        };
        self.directives(&fragment.directives);
        self.selection_set(&fragment.selection_set);
    }

    fn inline_fragment(&mut self, inline: &InlineFragment) {
        self.directives(&inline.directives);
        if let Some(type_condition) = &inline.type_condition {
            self.add(type_condition.as_str());
        }
        self.selection_set(&inline.selection_set);
    }

    fn directives(&mut self, directives: &DirectiveList) {
        for directive in directives.iter() {
            self.add(format!("@{}", directive.name));
            let Some(definition) = self.schema.directive_definitions.get(&directive.name) else {
                continue;
            };
            for argument in &directive.arguments {
                if let Some(argument_definition) = definition.argument_by_name(&argument.name) {
                    self.add(argument_definition.ty.inner_named_type().as_str());
                    self.value(&argument.value, &argument_definition.ty);
                }
            }
        }
    }

    /// Every input object and enum nested in input type `type_name`: the values a client sends
    /// in variables may use any of them, so a breaking change to one concerns the operation.
    fn input_types_within(&mut self, type_name: &Name) {
        if !self.visited_inputs.insert(type_name.clone()) {
            return;
        }
        let schema = self.schema;
        let Some(input) = schema.get_input_object(type_name) else {
            return;
        };
        for field in input.fields.values() {
            let inner = field.ty.inner_named_type();
            self.add(inner.as_str());
            self.input_types_within(inner);
        }
    }

    /// Literal enum values and input object fields in `value`, of type `ty`.
    fn value(&mut self, value: &Value, ty: &Type) {
        let type_name = ty.inner_named_type();
        match value {
            Value::Enum(enum_value) => self.add(format!("{type_name}.{enum_value}")),
            Value::List(items) => {
                for item in items {
                    self.value(item, ty.item_type());
                }
            }
            Value::Object(fields) => self.input_object(type_name, fields),
            _ => {}
        }
    }

    fn input_object(&mut self, type_name: &Name, fields: &[(Name, apollo_compiler::Node<Value>)]) {
        let schema = self.schema;
        let Some(input) = schema.get_input_object(type_name) else {
            return;
        };
        for (name, value) in fields {
            self.add(format!("{type_name}.{name}"));
            if let Some(definition) = input.fields.get(name) {
                self.add(definition.ty.inner_named_type().as_str());
                self.value(value, &definition.ty);
            }
        }
    }
}

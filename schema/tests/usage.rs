//! The schema coordinates client operations touch, validation failures, and reading a directory
//! of operations.

use std::collections::BTreeSet;
use std::path::PathBuf;

use apollo_compiler::Schema;
use apollo_compiler::validation::Valid;
use gospelib_schema::usage::OperationUsage;
use gospelib_schema::usage::UsageError;
use gospelib_schema::usage::operation_usage;
use gospelib_schema::usage::operations_in_dir;

const SCHEMA: &str = r#"
type Query {
  passage(id: ID!): Passage
  node(id: ID!): Node
  search(filter: SearchFilter!, first: Int = 10): [SearchHit!]!
}
type Mutation { addNote(input: NoteInput!): Note }
interface Node { id: ID! }
type Passage implements Node {
  id: ID!
  text(format: TextFormat = PLAIN): String!
  book: Book!
}
type Book implements Node { id: ID! name: String! testament: Testament! }
type Note { id: ID! body: String! }
union SearchHit = Passage | Book
enum Testament { OLD NEW }
enum TextFormat { PLAIN HTML }
input SearchFilter {
  query: String!
  testaments: [Testament!]
  range: VerseRange
}
input VerseRange { from: Int! to: Int! }
input NoteInput { passageId: ID! body: String! }
"#;

fn schema() -> Valid<Schema> {
    match Schema::parse_and_validate(SCHEMA, "schema.graphql") {
        Ok(schema) => schema,
        Err(errors) => panic!("invalid test schema:\n{errors}"),
    }
}

fn set(coordinates: &[&str]) -> BTreeSet<String> {
    coordinates.iter().map(|c| c.to_string()).collect()
}

const STUDY: &str = r#"query Study($id: ID!, $filter: SearchFilter!, $show: Boolean = true) {
  first: passage(id: $id) { ...PassageParts }
  node(id: "b1") {
    __typename
    id
    ... on Book { title: name }
  }
  hits: search(filter: { query: "light", testaments: [OLD], range: { from: 1, to: 5 } }) {
    ... on Passage { text(format: HTML) @include(if: $show) }
    ...BookParts
  }
  again: search(filter: $filter) { __typename }
}

fragment PassageParts on Passage { id book { ...BookParts } }
fragment BookParts on Book { name testament }
"#;

#[test]
fn operation_usage_records_every_coordinate_touched() {
    let usages = operation_usage(&schema(), STUDY, "ops/study.graphql").expect("valid operation");
    assert_eq!(usages.len(), 1);
    let usage = &usages[0];
    assert_eq!(usage.name, "Study");
    assert_eq!(usage.source, "ops/study.graphql");
    let expected = set(&[
        "@include",
        "Book",
        "Book.name",
        "Book.testament",
        "Boolean",
        "ID",
        "Int",
        "Node",
        "Node.id",
        "Passage",
        "Passage.book",
        "Passage.id",
        "Passage.text",
        "Passage.text(format:)",
        "Query",
        "Query.node",
        "Query.node(id:)",
        "Query.passage",
        "Query.passage(id:)",
        "Query.search",
        "Query.search(filter:)",
        "SearchFilter",
        "SearchFilter.query",
        "SearchFilter.range",
        "SearchFilter.testaments",
        "SearchHit",
        "String",
        "Testament",
        "Testament.OLD",
        "TextFormat",
        "TextFormat.HTML",
        "VerseRange",
        "VerseRange.from",
        "VerseRange.to",
    ]);
    assert_eq!(usage.coordinates, expected);
}

#[test]
fn each_operation_of_a_document_is_separate_and_mutations_count() {
    let document = r#"
        query Verse { passage(id: "1") { text } }
        mutation Annotate($body: String!) {
          addNote(input: { passageId: "1", body: $body }) { id }
        }
    "#;
    let usages = operation_usage(&schema(), document, "two.graphql").expect("valid operations");
    let names: Vec<&str> = usages.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["Verse", "Annotate"]);
    assert_eq!(
        usages[0].coordinates,
        set(&[
            "ID",
            "Passage",
            "Passage.text",
            "Query",
            "Query.passage",
            "Query.passage(id:)",
            "String"
        ])
    );
    assert_eq!(
        usages[1].coordinates,
        set(&[
            "ID",
            "Mutation",
            "Mutation.addNote",
            "Mutation.addNote(input:)",
            "Note",
            "Note.id",
            "NoteInput",
            "NoteInput.body",
            "NoteInput.passageId",
            "String",
        ])
    );
}

#[test]
fn anonymous_operation_is_named_so() {
    let usages = operation_usage(&schema(), "{ node(id: \"1\") { id } }", "anon.graphql")
        .expect("valid operation");
    assert_eq!(
        usages,
        [OperationUsage {
            name: "<anonymous>".to_string(),
            source: "anon.graphql".to_string(),
            coordinates: set(&[
                "ID",
                "Node",
                "Node.id",
                "Query",
                "Query.node",
                "Query.node(id:)"
            ]),
        }]
    );
}

#[test]
fn introspection_fields_are_not_recorded() {
    let document = "query Types { __schema { types { name } } __type(name: \"Book\") { name } }";
    let usages = operation_usage(&schema(), document, "intro.graphql").expect("valid operation");
    assert_eq!(usages[0].coordinates, set(&["Query"]));
}

#[test]
fn an_operation_that_does_not_validate_names_the_file_operation_and_position() {
    let document = "query Bad {\n  passage(id: \"1\") {\n    nope\n  }\n}\n";
    let error = operation_usage(&schema(), document, "ops/bad.graphql").expect_err("invalid");
    assert!(matches!(error, UsageError::Invalid { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("ops/bad.graphql:3:5: "), "{message}");
    assert!(message.contains("nope"), "{message}");
    assert!(message.contains("(in operation 'Bad')"), "{message}");
}

#[test]
fn a_document_that_does_not_parse_names_the_file_and_position() {
    let document = "query Broken {\n  passage(id: \"1\") { id \n";
    let error = operation_usage(&schema(), document, "broken.graphql").expect_err("invalid");
    let message = error.to_string();
    assert!(message.contains("broken.graphql:"), "{message}");
    assert!(message.contains("syntax error"), "{message}");
}

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "gospelib-schema-usage-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.0.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(path, text).expect("write file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn operations_in_dir_reads_every_graphql_file_in_path_order() {
    let dir = TempDir::new("ok");
    dir.write(
        "web/verse.graphql",
        "query Verse { passage(id: \"1\") { id } }",
    );
    dir.write(
        "app.graphql",
        "query Books { search(filter: { query: \"x\" }) { __typename } }",
    );
    dir.write("web/notes.txt", "not an operation");
    dir.write("mobile/deep/node.graphql", "{ node(id: \"2\") { id } }");
    let usages = operations_in_dir(&schema(), &dir.0).expect("valid operations");
    let found: Vec<(&str, &str)> = usages
        .iter()
        .map(|u| (u.source.as_str(), u.name.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("app.graphql", "Books"),
            ("mobile/deep/node.graphql", "<anonymous>"),
            ("web/verse.graphql", "Verse"),
        ]
    );
    assert!(usages[0].coordinates.contains("SearchFilter.query"));
}

#[test]
fn operations_in_dir_fails_on_an_invalid_file_naming_it() {
    let dir = TempDir::new("invalid");
    dir.write("good.graphql", "query Verse { passage(id: \"1\") { id } }");
    dir.write(
        "sub/stale.graphql",
        "query Stale {\n  passage(id: \"1\") { verse }\n}\n",
    );
    let error = operations_in_dir(&schema(), &dir.0).expect_err("invalid file");
    let message = error.to_string();
    assert!(message.contains("sub/stale.graphql:2:22: "), "{message}");
    assert!(message.contains("(in operation 'Stale')"), "{message}");
}

#[test]
fn operations_in_dir_fails_on_a_missing_directory() {
    let missing = std::env::temp_dir().join("gospelib-schema-usage-does-not-exist");
    let error = operations_in_dir(&schema(), &missing).expect_err("missing dir");
    assert!(matches!(error, UsageError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains("does-not-exist"), "{error}");
}

#[test]
fn usages_serialize() {
    let usages = operation_usage(
        &schema(),
        "query V { passage(id: \"1\") { id } }",
        "v.graphql",
    )
    .expect("valid operation");
    let json = serde_json::to_value(&usages[0]).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "name": "V",
            "source": "v.graphql",
            "coordinates": ["ID", "Passage", "Passage.id", "Query", "Query.passage", "Query.passage(id:)"],
        })
    );
}

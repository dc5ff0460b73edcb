//! The registry's composition errors, the partner contract and the usage-aware check, on
//! small purpose-built subgraphs and on the committed GospeLib supergraph.

use std::collections::BTreeSet;

use gospelib_schema::check::{Baseline, ClientDocument, KnownOperation, check};
use gospelib_schema::compose::{SubgraphSdl, api_schema, compose};
use gospelib_schema::contracts::contract_supergraph;

const LINK: &str = r#"extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key", "@requires", "@external", "@tag", "@shareable"])"#;

fn subgraph(name: &str, body: &str) -> SubgraphSdl {
    SubgraphSdl {
        name: name.to_owned(),
        url: format!("http://{name}.test/graphql"),
        sdl: format!("{LINK}\n{body}"),
    }
}

fn books(extra_field: &str) -> Vec<SubgraphSdl> {
    vec![
        subgraph(
            "books",
            &format!(
                "type Query {{ book(id: ID!): Book bookCount: Int! }}\n\
                 type Book @key(fields: \"id\") {{ id: ID! title: String! {extra_field} }}"
            ),
        ),
        subgraph(
            "reviews",
            "type Book @key(fields: \"id\") { id: ID! reviews: [String!]! }",
        ),
    ]
}

// ---- composition errors ----

#[test]
fn a_key_on_a_missing_field_names_the_subgraph_type_and_line() {
    let failure = compose(&[subgraph(
        "books",
        "type Query { book: Book }\ntype Book @key(fields: \"isbn\") { id: ID! }",
    )])
    .unwrap_err();
    let issue = &failure.issues[0];
    assert_eq!(issue.code, "KEY_INVALID_FIELDS");
    assert!(issue.message.contains("isbn"), "{issue}");
    assert!(issue.message.contains("Book"), "{issue}");
    let location = &issue.locations[0];
    assert_eq!(location.subgraph, "books");
    assert_eq!(location.line, 3);
    assert!(location.excerpt.contains("@key(fields: \"isbn\")"));
    assert!(failure.to_string().contains("at books line 3"), "{failure}");
}

#[test]
fn conflicting_field_types_name_both_subgraphs() {
    let failure = compose(&[
        subgraph(
            "a",
            "type Query { a: Thing }\ntype Thing @shareable { size: Int }",
        ),
        subgraph(
            "b",
            "type Query { b: Thing }\ntype Thing @shareable { size: String }",
        ),
    ])
    .unwrap_err();
    let issue = failure
        .issues
        .iter()
        .find(|issue| issue.code == "FIELD_TYPE_MISMATCH")
        .unwrap_or_else(|| panic!("{failure}"));
    assert!(issue.message.contains("Thing.size"), "{issue}");
    let subgraphs: BTreeSet<&str> = issue
        .locations
        .iter()
        .map(|l| l.subgraph.as_str())
        .collect();
    assert_eq!(subgraphs, BTreeSet::from(["a", "b"]), "{issue}");
    assert!(
        issue
            .locations
            .iter()
            .all(|l| l.line == 3 && l.excerpt.contains("size")),
        "{issue}"
    );
}

#[test]
fn an_unsatisfiable_requires_is_refused() {
    let failure = compose(&[
        subgraph(
            "products",
            "type Query { product: Product }\ntype Product @key(fields: \"id\") { id: ID! }",
        ),
        subgraph(
            "shipping",
            "type Product @key(fields: \"id\") { id: ID! weight: Int @external \
             cost: Int @requires(fields: \"weight\") }",
        ),
    ])
    .unwrap_err();
    // `weight` is required but no subgraph can resolve it.
    let text = failure.to_string();
    assert!(text.contains("EXTERNAL_MISSING_ON_BASE"), "{text}");
    assert!(text.contains("\"Product.weight\""), "{text}");
    let issue = &failure.issues[0];
    assert_eq!(issue.locations[0].subgraph, "shipping", "{text}");
    assert!(
        issue.locations[0].excerpt.contains("weight: Int @external"),
        "{text}"
    );
}

// ---- the partner contract ----

#[test]
fn the_partner_contract_keeps_tagged_fields_and_what_they_reach() {
    let supergraph = compose(&[subgraph(
        "library",
        r#"type Query {
             book(id: ID!): Book @tag(name: "partner")
             secret: Note
           }
           type Book @key(fields: "id") {
             id: ID! @tag(name: "partner")
             title: String! @tag(name: "partner")
             shelf: Shelf @tag(name: "partner")
             notes: [Note!]!
           }
           type Shelf { label: String! }
           type Note { text: String! }"#,
    )])
    .unwrap();
    let contract = contract_supergraph(&supergraph, "partner", "partner").unwrap();
    let api = api_schema(&contract).unwrap();
    assert!(api.contains("book(id: ID!): Book"), "{api}");
    assert!(!api.contains("secret"), "{api}");
    assert!(!api.contains("notes"), "{api}");
    // Untagged plumbing reached by a kept field stays whole; unreachable types go.
    assert!(api.contains("type Shelf"), "{api}");
    assert!(!api.contains("type Note"), "{api}");
    // The whole API is untouched.
    let whole = api_schema(&supergraph).unwrap();
    assert!(whole.contains("secret: Note") && whole.contains("notes: [Note!]!"));
}

#[test]
fn a_contract_without_tagged_root_fields_is_refused() {
    let supergraph = compose(&books("")).unwrap();
    let error = contract_supergraph(&supergraph, "partner", "partner").unwrap_err();
    assert!(error.to_string().contains("keeps no root field"), "{error}");
}

#[test]
fn the_committed_supergraphs_partner_contract_shows_reading_not_study_tools() {
    let supergraph = include_str!("../supergraph.graphql");
    let contract = contract_supergraph(supergraph, "partner", "partner").unwrap();
    let api = api_schema(&contract).unwrap();
    for kept in [
        "passage(id: ID!): Passage",
        "search(",
        "chapter(bookId: ID!, number: Int!): Chapter",
        "crossReferences(",
        "type PassageSearchConnection",
    ] {
        assert!(api.contains(kept), "{kept} missing from\n{api}");
    }
    for hidden in [
        "lexiconEntry(",
        "topic(",
        "connections(",
        "words:",
        "type LexiconEntry",
        "type Topic ",
        "type GraphNode",
    ] {
        assert!(!api.contains(hidden), "{hidden} leaked into\n{api}");
    }
}

// ---- the check: breaking changes × known operations ----

fn baseline_with_isbn() -> Baseline {
    Baseline {
        label: "version 1".to_owned(),
        supergraph: compose(&books("isbn: String")).unwrap(),
    }
}

fn document(source: &str, text: &str) -> ClientDocument {
    ClientDocument {
        source: source.to_owned(),
        text: text.to_owned(),
    }
}

#[test]
fn a_removed_field_no_operation_uses_passes_and_is_listed() {
    let report = check(
        &books(""),
        Some(&baseline_with_isbn()),
        &[document(
            "web/Book.graphql",
            "query Book { book(id: 1) { title } }",
        )],
        Vec::new(),
    )
    .unwrap();
    assert!(report.passed, "{}", report.to_text());
    let removed = &report.changes[0];
    assert_eq!(removed.change.coordinate, "Book.isbn");
    assert!(removed.breaks.is_empty());
    assert!(report.to_text().contains("no known operation uses it"));
}

#[test]
fn a_removed_field_a_client_document_uses_fails_and_names_it() {
    let report = check(
        &books(""),
        Some(&baseline_with_isbn()),
        &[
            document(
                "web/Book.graphql",
                "query Book { book(id: 1) { title isbn } }",
            ),
            document("mobile/Count.graphql", "query Count { bookCount }"),
        ],
        Vec::new(),
    )
    .unwrap();
    assert!(!report.passed);
    assert_eq!(report.changes[0].breaks, vec!["Book (web/Book.graphql)"]);
    assert_eq!(report.invalid_documents.len(), 1);
    assert_eq!(report.invalid_documents[0].source, "web/Book.graphql");
    let text = report.to_text();
    assert!(text.contains("breaks Book (web/Book.graphql)"), "{text}");
    assert!(text.contains("FAILED"), "{text}");
}

#[test]
fn an_operation_only_the_router_recorded_also_protects_a_field() {
    let recorded = KnownOperation {
        source: "router:0123456789ab".to_owned(),
        name: "PartnerBooks".to_owned(),
        count: Some(42),
        coordinates: BTreeSet::from([
            "Query".to_owned(),
            "Query.book".to_owned(),
            "Book".to_owned(),
            "Book.isbn".to_owned(),
        ]),
    };
    let report = check(&books(""), Some(&baseline_with_isbn()), &[], vec![recorded]).unwrap();
    assert!(!report.passed);
    assert_eq!(
        report.changes[0].breaks,
        vec!["PartnerBooks (router:0123456789ab, seen 42 times)"]
    );
}

#[test]
fn dangerous_and_safe_changes_never_fail() {
    let report = check(
        &books("isbn: String subtitle: String"),
        Some(&baseline_with_isbn()),
        &[document(
            "web/Book.graphql",
            "query Book { book(id: 1) { title isbn } }",
        )],
        Vec::new(),
    )
    .unwrap();
    assert!(report.passed, "{}", report.to_text());
    assert_eq!(report.changes.len(), 1);
    assert_eq!(report.changes[0].change.coordinate, "Book.subtitle");
}

#[test]
fn a_composition_failure_fails_the_check_with_its_errors() {
    let mut broken = books("");
    broken[1].sdl = broken[1].sdl.replace("reviews: [String!]!", "title: Int");
    let report = check(&broken, Some(&baseline_with_isbn()), &[], Vec::new()).unwrap();
    assert!(!report.passed);
    assert!(!report.composition_errors.is_empty());
    assert!(report.to_text().contains("composition failed"));
}

//! The registry's composition errors, the partner contract and the usage-aware check (of the
//! whole API and of the partner contract), on small purpose-built subgraphs and on the committed
//! GospeLib supergraph with the committed client operations.

use std::collections::BTreeSet;
use std::path::Path;

use gospelib_schema::check::{
    Baseline, ClientDocument, KnownOperation, check, check_supergraph, client_documents,
};
use gospelib_schema::compose::{SubgraphSdl, api_schema, compose};
use gospelib_schema::contracts::contract_supergraph;
use gospelib_schema::diff::Criticality;

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

/// The router checks `@authenticated` and `@requiresScopes` on the object types and fields a
/// plan selects; on an interface (or its fields) they would not be applied to a concrete
/// type selected through a fragment. Composition refuses them there, so no supergraph the
/// router loads carries them.
#[test]
fn access_requirements_on_an_interface_are_refused() {
    let link = LINK.replacen(
        r#""@shareable"]"#,
        r#""@shareable", "@authenticated", "@requiresScopes"]"#,
        1,
    );
    for (directive, on_type, on_field) in [
        ("@authenticated", "@authenticated", ""),
        ("@authenticated", "", "@authenticated"),
        (
            "@requiresScopes",
            r#"@requiresScopes(scopes: [["study:read"]])"#,
            "",
        ),
        (
            "@requiresScopes",
            "",
            r#"@requiresScopes(scopes: [["study:read"]])"#,
        ),
    ] {
        let sdl = format!(
            "{link}\ntype Query {{ items: [Item!]! }}\n\
             interface Item {on_type} {{ id: ID! secret: String {on_field} }}\n\
             type Note implements Item {{ id: ID! secret: String }}"
        );
        let failure = compose(&[SubgraphSdl {
            name: "study".to_owned(),
            url: "http://study.test/graphql".to_owned(),
            sdl,
        }])
        .expect_err(directive);
        let text = failure.to_string();
        assert!(
            text.contains("AUTH_REQUIREMENTS_APPLIED_ON_INTERFACE"),
            "{directive}: {text}"
        );
    }
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
           type Note { text: String! }
           type Note__Meta { author: String! }
           extend type Query { meta: Note__Meta }"#,
    )])
    .unwrap();
    let contract = contract_supergraph(&supergraph, "partner", "partner").unwrap();
    let api = api_schema(&contract).unwrap();
    assert!(api.contains("book(id: ID!): Book"), "{api}");
    assert!(!api.contains("secret"), "{api}");
    assert!(!api.contains("notes"), "{api}");
    // Two underscores in a name do not make a type the federation's own.
    assert!(!api.contains("Note__Meta"), "{api}");
    // Untagged plumbing reached by a kept field stays whole; unreachable types go.
    assert!(api.contains("type Shelf"), "{api}");
    assert!(!api.contains("type Note"), "{api}");
    // The whole API is untouched.
    let whole = api_schema(&supergraph).unwrap();
    assert!(whole.contains("secret: Note") && whole.contains("notes: [Note!]!"));
}

/// An untagged type is kept for a kept field whose type it is, not as one of the possible
/// types of a kept interface or union: those that carry the tag stay, the others go.
#[test]
fn untagged_implementations_and_members_stay_out_of_the_contract() {
    let supergraph = compose(&[subgraph(
        "library",
        r#"type Query {
             node(id: ID!): Node @tag(name: "partner")
             cited(id: ID!): Citation @tag(name: "partner")
             audit: [AuditEntry!]!
           }
           interface Node { id: ID! @tag(name: "partner") }
           type Book implements Node @key(fields: "id") {
             id: ID! @tag(name: "partner")
             title: String! @tag(name: "partner")
           }
           type AuditEntry implements Node { id: ID! actorEmail: String }
           union Citation = Book | Memo
           type Memo { body: String! }"#,
    )])
    .unwrap();
    let contract = contract_supergraph(&supergraph, "partner", "partner").unwrap();
    let api = api_schema(&contract).unwrap();
    assert!(api.contains("type Book implements Node"), "{api}");
    assert!(api.contains("union Citation = Book\n"), "{api}");
    assert!(!api.contains("AuditEntry"), "{api}");
    assert!(!api.contains("actorEmail"), "{api}");
    assert!(!api.contains("Memo"), "{api}");
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
    Baseline::of_supergraph("version 1", compose(&books("isbn: String")).unwrap())
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
    // No partner tag and no partner document anywhere: no contract section.
    assert!(report.contracts.is_empty());
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
fn a_document_using_a_field_this_change_adds_still_protects_the_fields_it_used_before() {
    // The document is edited in the same change that adds `subtitle`: it is invalid against
    // the baseline, valid against the new schema, and the change of `isbn`'s type breaks it.
    let report = check(
        &books("isbn: [String] subtitle: String"),
        Some(&baseline_with_isbn()),
        &[document(
            "web/Book.graphql",
            "query Book { book(id: 1) { title isbn subtitle } }",
        )],
        Vec::new(),
    )
    .unwrap();
    let text = report.to_text();
    assert!(!report.passed, "{text}");
    assert!(report.invalid_documents.is_empty(), "{text}");
    let changed = report
        .changes
        .iter()
        .find(|c| c.change.coordinate == "Book.isbn")
        .expect("isbn's type change is listed");
    assert_eq!(changed.breaks, vec!["Book (web/Book.graphql)"], "{text}");
}

#[test]
fn an_operation_only_the_router_recorded_also_protects_a_field() {
    let recorded = KnownOperation {
        source: "router:0123456789ab".to_owned(),
        name: "PartnerBooks".to_owned(),
        count: Some(42),
        partner: false,
        callers: Some(5),
        protects: true,
        coordinates: BTreeSet::from([
            "Query".to_owned(),
            "Query.book".to_owned(),
            "Book".to_owned(),
            "Book.isbn".to_owned(),
        ]),
    };
    let report = check(
        &books(""),
        Some(&baseline_with_isbn()),
        &[],
        vec![recorded.clone()],
    )
    .unwrap();
    assert!(!report.passed);
    assert_eq!(
        report.changes[0].breaks,
        vec!["PartnerBooks (router:0123456789ab, seen 42 times by 5 callers)"]
    );

    // Sent by too few callers to protect what it uses (one account could pin any field):
    // listed under the change, and the check passes.
    let pinned = KnownOperation {
        name: "Pinned".to_owned(),
        count: Some(900),
        callers: Some(1),
        protects: false,
        ..recorded
    };
    let report = check(&books(""), Some(&baseline_with_isbn()), &[], vec![pinned]).unwrap();
    let text = report.to_text();
    assert!(report.passed, "{text}");
    assert!(report.changes[0].breaks.is_empty());
    assert_eq!(
        report.changes[0].also_used_by,
        vec!["Pinned (router:0123456789ab, seen 900 times by 1 caller)"]
    );
    assert!(
        text.contains(
            "also used by Pinned (router:0123456789ab, seen 900 times by 1 caller): too few callers to protect it"
        ),
        "{text}"
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

// ---- the check of the partner contract ----

/// A reading subgraph: partners see passages with their text; the lexicon is the apps'.
/// `text_tags` are the directives on `Passage.text`.
fn reading(text_tags: &str) -> Vec<SubgraphSdl> {
    vec![subgraph(
        "reading",
        &format!(
            r#"type Query {{
                 passage(id: ID!): Passage @tag(name: "partner")
                 lexiconEntry(id: ID!): Entry
               }}
               type Passage @key(fields: "id") {{
                 id: ID! @tag(name: "partner")
                 reference: String! @tag(name: "partner")
                 text: String! {text_tags}
                 words: [Entry!]!
               }}
               type Entry {{ id: ID! gloss: String! }}"#
        ),
    )]
}

const PARTNER_TAG: &str = r#"@tag(name: "partner")"#;

fn reading_baseline() -> Baseline {
    Baseline::of_supergraph("version 1", compose(&reading(PARTNER_TAG)).unwrap())
}

fn partner_reading() -> ClientDocument {
    document(
        "partner/Reading.graphql",
        "query Reading { passage(id: \"john.3.16\") { id reference text } }",
    )
}

#[test]
fn untagging_a_field_a_partner_operation_uses_fails_in_the_partner_contract() {
    let report = check(
        &reading(""),
        Some(&reading_baseline()),
        &[partner_reading()],
        Vec::new(),
    )
    .unwrap();
    assert!(!report.passed, "{}", report.to_text());
    // The whole API did not change: only the contract did.
    assert!(report.changes.is_empty(), "{:?}", report.changes);
    assert!(report.invalid_documents.is_empty());
    let partner = &report.contracts["partner"];
    assert!(!partner.passed);
    assert_eq!(
        partner.against.as_deref(),
        Some("version 1's partner contract")
    );
    assert_eq!(partner.changes.len(), 1, "{:?}", partner.changes);
    let removed = &partner.changes[0];
    assert_eq!(removed.change.coordinate, "Passage.text");
    assert_eq!(removed.change.criticality, Criticality::Breaking);
    assert_eq!(removed.breaks, vec!["Reading (partner/Reading.graphql)"]);
    assert_eq!(partner.invalid_documents.len(), 1);
    assert_eq!(
        partner.invalid_documents[0].source,
        "partner/Reading.graphql"
    );

    let text = report.to_text();
    assert!(
        text.contains(
            "partner contract (what partner clients see), against version 1's partner contract"
        ),
        "{text}"
    );
    assert!(
        text.contains("    breaks Reading (partner/Reading.graphql)"),
        "{text}"
    );
    assert!(
        text.contains("partner/Reading.graphql no longer validates against the partner contract"),
        "{text}"
    );
    assert!(text.contains("partner contract FAILED"), "{text}");

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(json["changes"], serde_json::json!([]));
    let contract = &json["contracts"]["partner"];
    assert_eq!(contract["passed"], false);
    assert_eq!(contract["changes"][0]["coordinate"], "Passage.text");
    assert_eq!(contract["changes"][0]["criticality"], "breaking");
    assert_eq!(
        contract["changes"][0]["breaks"][0],
        "Reading (partner/Reading.graphql)"
    );
}

#[test]
fn only_partner_operations_protect_the_partner_contract() {
    // The apps read `Passage.text` too, but they do not go through the contract.
    let web_reading = document(
        "web/Reading.graphql",
        "query Reading { passage(id: \"john.3.16\") { text words { gloss } } }",
    );
    let partner_reference = document(
        "partner/Reference.graphql",
        "query Reference { passage(id: \"john.3.16\") { id reference } }",
    );
    let report = check(
        &reading(""),
        Some(&reading_baseline()),
        &[web_reading, partner_reference],
        Vec::new(),
    )
    .unwrap();
    assert!(report.passed, "{}", report.to_text());
    let partner = &report.contracts["partner"];
    assert!(partner.passed);
    assert_eq!(partner.known_operations, 1);
    assert_eq!(partner.changes[0].change.coordinate, "Passage.text");
    assert!(partner.changes[0].breaks.is_empty());
    assert!(report.to_text().contains("  no known operation uses it"));
}

/// Partners write their own operations: one the routers recorded from a partner's key
/// protects what it uses in the contract as a committed partner document does; an app's
/// recorded operation does not (the apps do not go through the contract).
#[test]
fn an_operation_recorded_from_a_partner_protects_the_partner_contract() {
    let recorded = |partner: bool| KnownOperation {
        source: "router:0123456789ab".to_owned(),
        name: "PartnerText".to_owned(),
        count: Some(12),
        partner,
        callers: None,
        protects: true,
        coordinates: BTreeSet::from([
            "Query".to_owned(),
            "Query.passage".to_owned(),
            "Passage".to_owned(),
            "Passage.text".to_owned(),
        ]),
    };
    let by_partner = check(
        &reading(""),
        Some(&reading_baseline()),
        &[],
        vec![recorded(true)],
    )
    .unwrap();
    assert!(!by_partner.passed, "{}", by_partner.to_text());
    let contract = &by_partner.contracts["partner"];
    assert!(!contract.passed);
    assert_eq!(contract.changes[0].change.coordinate, "Passage.text");
    assert_eq!(
        contract.changes[0].breaks,
        ["PartnerText (router:0123456789ab, seen 12 times)"]
    );

    let by_app = check(
        &reading(""),
        Some(&reading_baseline()),
        &[],
        vec![recorded(false)],
    )
    .unwrap();
    assert!(by_app.passed, "{}", by_app.to_text());
}

#[test]
fn tagging_a_field_for_partners_is_a_safe_change_to_the_contract() {
    let baseline = Baseline::of_supergraph("version 1", compose(&reading("")).unwrap());
    let report = check(
        &reading(PARTNER_TAG),
        Some(&baseline),
        &[partner_reading()],
        Vec::new(),
    )
    .unwrap();
    assert!(report.passed, "{}", report.to_text());
    let partner = &report.contracts["partner"];
    assert_eq!(partner.changes.len(), 1);
    assert_eq!(partner.changes[0].change.coordinate, "Passage.text");
    assert_eq!(partner.changes[0].change.criticality, Criticality::Safe);
}

#[test]
fn the_contract_published_with_the_baseline_is_what_the_proposal_is_compared_with() {
    // The version as published kept `Passage.text` for partners, although its supergraph, by
    // today's rules, would not: the published contract is what partners saw.
    let mut baseline = Baseline::of_supergraph("version 1", compose(&reading("")).unwrap());
    let published = compose(&reading(PARTNER_TAG)).unwrap();
    baseline.contracts.insert(
        "partner".to_owned(),
        contract_supergraph(&published, "partner", "partner").unwrap(),
    );
    let report = check(
        &reading(""),
        Some(&baseline),
        &[partner_reading()],
        Vec::new(),
    )
    .unwrap();
    assert!(report.changes.is_empty());
    let partner = &report.contracts["partner"];
    assert_eq!(partner.changes[0].change.coordinate, "Passage.text");
    assert_eq!(
        partner.changes[0].breaks,
        vec!["Reading (partner/Reading.graphql)"]
    );
    assert!(!report.passed);
}

#[test]
fn a_proposal_that_loses_the_partner_contract_fails() {
    // No partner tag left at all: the contract cannot be built, and partners lose everything.
    let untagged = reading("").into_iter().map(|mut subgraph| {
        subgraph.sdl = subgraph.sdl.replace(PARTNER_TAG, "");
        subgraph
    });
    let report = check(
        &untagged.collect::<Vec<_>>(),
        Some(&reading_baseline()),
        &[],
        Vec::new(),
    )
    .unwrap();
    assert!(!report.passed);
    let partner = &report.contracts["partner"];
    let error = partner.error.as_deref().unwrap();
    assert!(error.contains("keeps no root field"), "{error}");
    assert!(
        report
            .to_text()
            .contains("the partner contract cannot be built"),
        "{}",
        report.to_text()
    );
}

#[test]
fn the_committed_supergraph_passes_against_the_baseline_with_every_client_operation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let documents = client_documents(&root.join("client-tests/operations")).unwrap();
    let partner_documents = documents
        .iter()
        .filter(|document| document.source.starts_with("partner/"))
        .count();
    assert!(partner_documents >= 3, "{partner_documents}");
    let baseline = Baseline::of_supergraph(
        "schema/baseline.graphql",
        include_str!("../baseline.graphql"),
    );
    let report = check_supergraph(
        include_str!("../supergraph.graphql"),
        Some(&baseline),
        &documents,
        Vec::new(),
    )
    .unwrap();
    assert!(report.passed, "{}", report.to_text());
    let partner = &report.contracts["partner"];
    assert!(partner.passed && partner.invalid_documents.is_empty());
    assert_eq!(partner.known_operations, partner_documents);
}

// ---- callers' requirements ----

/// The reading subgraph with `text_directives` on `Passage.text` (tagged for partners), its
/// link importing the authorization directives.
fn guarded_reading(text_directives: &str) -> Vec<SubgraphSdl> {
    let mut subgraphs = reading(&format!("{PARTNER_TAG} {text_directives}"));
    subgraphs[0].sdl = subgraphs[0].sdl.replacen(
        r#""@shareable"]"#,
        r#""@shareable", "@authenticated", "@requiresScopes"]"#,
        1,
    );
    subgraphs
}

/// The API schema carries neither `@authenticated` nor `@requiresScopes`: the check reads them
/// from the supergraphs. A requirement that refuses callers it let through is breaking for the
/// operations that select the field, in the whole API and in the contract; one that lets
/// more callers through is safe.
#[test]
fn a_field_that_requires_more_of_its_callers_breaks_the_operations_that_select_it() {
    let app_reading = document(
        "apps/Reading.graphql",
        "query AppReading { passage(id: \"john.3.16\") { text } }",
    );
    let baseline = Baseline::of_supergraph("version 1", compose(&guarded_reading("")).unwrap());
    let scoped = r#"@requiresScopes(scopes: [["interlinear"]])"#;
    let report = check(
        &guarded_reading(scoped),
        Some(&baseline),
        &[app_reading.clone(), partner_reading()],
        Vec::new(),
    )
    .unwrap();
    assert!(!report.passed, "{}", report.to_text());
    assert_eq!(report.changes.len(), 1, "{:?}", report.changes);
    let tightened = &report.changes[0];
    assert_eq!(tightened.change.coordinate, "Passage.text");
    assert_eq!(tightened.change.criticality, Criticality::Breaking);
    assert_eq!(
        tightened.change.message,
        "Field 'Passage.text' requires a signed-in caller with all the scopes of one of \
         [interlinear] of its caller (it required nothing)"
    );
    assert_eq!(
        tightened.breaks,
        [
            "AppReading (apps/Reading.graphql)",
            "Reading (partner/Reading.graphql)"
        ]
    );
    let partner = &report.contracts["partner"];
    assert!(!partner.passed);
    assert_eq!(
        partner.changes[0].breaks,
        vec!["Reading (partner/Reading.graphql)"]
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["changes"][0]["kind"], "FIELD_AUTHORIZATION_TIGHTENED");

    // Asking for one of two scope sets where one was asked: safe.
    let scoped_baseline =
        Baseline::of_supergraph("version 2", compose(&guarded_reading(scoped)).unwrap());
    let either = r#"@requiresScopes(scopes: [["interlinear"], ["reading"]])"#;
    let report = check(
        &guarded_reading(either),
        Some(&scoped_baseline),
        std::slice::from_ref(&app_reading),
        Vec::new(),
    )
    .unwrap();
    assert!(report.passed, "{}", report.to_text());
    assert_eq!(report.changes.len(), 1, "{:?}", report.changes);
    assert_eq!(report.changes[0].change.criticality, Criticality::Safe);
    // Only signed-in callers where anyone was let through: breaking.
    let report = check(
        &guarded_reading("@authenticated"),
        Some(&baseline),
        std::slice::from_ref(&app_reading),
        Vec::new(),
    )
    .unwrap();
    assert!(!report.passed, "{}", report.to_text());
    // The same scopes written in another order: no change.
    let reordered = r#"@requiresScopes(scopes: [["reading"], ["interlinear"]])"#;
    let either_baseline =
        Baseline::of_supergraph("version 3", compose(&guarded_reading(either)).unwrap());
    let report = check(
        &guarded_reading(reordered),
        Some(&either_baseline),
        std::slice::from_ref(&app_reading),
        Vec::new(),
    )
    .unwrap();
    assert!(
        report.passed && report.changes.is_empty(),
        "{}",
        report.to_text()
    );
}

/// A rule on a type holds for every field returning it and every field of it: put on
/// `Passage`, it breaks the operations that select `Query.passage`; moved from the type onto
/// each of its fields and the field returning it, it changes nothing anyone may select.
#[test]
fn a_rule_on_a_type_counts_for_the_fields_that_return_it_and_moving_it_changes_nothing() {
    let with_passage = |passage_directives: &str, field_directives: &str| {
        // `text` has them from `guarded_reading`; the other fields of `Passage`, and the
        // field returning it, here.
        let mut subgraphs = guarded_reading(field_directives);
        let passage = r#"type Passage @key(fields: "id")"#;
        let mut sdl =
            subgraphs[0]
                .sdl
                .replacen(passage, &format!("{passage} {passage_directives}"), 1);
        for field in [
            r#"passage(id: ID!): Passage @tag(name: "partner")"#,
            r#"id: ID! @tag(name: "partner")"#,
            r#"reference: String! @tag(name: "partner")"#,
            "words: [Entry!]!",
        ] {
            sdl = sdl.replacen(field, &format!("{field} {field_directives}"), 1);
        }
        subgraphs[0].sdl = sdl;
        subgraphs
    };
    let app_reading = document(
        "apps/Reading.graphql",
        "query AppReading { passage(id: \"john.3.16\") { id } }",
    );
    let open = Baseline::of_supergraph("version 1", compose(&with_passage("", "")).unwrap());
    let report = check(
        &with_passage("@authenticated", ""),
        Some(&open),
        std::slice::from_ref(&app_reading),
        Vec::new(),
    )
    .unwrap();
    assert!(!report.passed, "{}", report.to_text());
    let coordinates: Vec<&str> = report
        .changes
        .iter()
        .map(|c| c.change.coordinate.as_str())
        .collect();
    assert!(coordinates.contains(&"Query.passage"), "{coordinates:?}");
    let on_type = Baseline::of_supergraph(
        "version 2",
        compose(&with_passage("@authenticated", "")).unwrap(),
    );
    let report = check(
        &with_passage("", "@authenticated"),
        Some(&on_type),
        &[app_reading],
        Vec::new(),
    )
    .unwrap();
    assert!(report.passed, "{}", report.to_text());
    assert!(report.changes.is_empty(), "{}", report.to_text());
}

//! The classified schema diff: one schema pair per rule (GraphQL Inspector's classification),
//! identical schemas, and a mixed pair checked as a whole.

use apollo_compiler::Schema;
use apollo_compiler::validation::Valid;
use gospelib_schema::diff::Change;
use gospelib_schema::diff::ChangeKind;
use gospelib_schema::diff::Criticality;
use gospelib_schema::diff::diff;

use ChangeKind::*;
use Criticality::*;

fn parse(sdl: &str) -> Valid<Schema> {
    match Schema::parse_and_validate(sdl, "schema.graphql") {
        Ok(schema) => schema,
        Err(errors) => panic!("invalid test schema:\n{errors}\n{sdl}"),
    }
}

fn changes(old: &str, new: &str) -> Vec<Change> {
    diff(&parse(old), &parse(new))
}

/// The one change of `kind` between the two schemas (there must be exactly one).
fn change_of_kind(old: &str, new: &str, kind: ChangeKind) -> Change {
    let all = changes(old, new);
    let mut matching = all.iter().filter(|change| change.kind == kind);
    match (matching.next(), matching.next()) {
        (Some(change), None) => change.clone(),
        _ => panic!("expected exactly one {kind:?} change, got {all:#?}"),
    }
}

/// The diff is exactly one change, with this classification, kind, coordinate and `affects`.
fn assert_only(
    old: &str,
    new: &str,
    criticality: Criticality,
    kind: ChangeKind,
    coordinate: &str,
    affects: &[&str],
) -> Change {
    let all = changes(old, new);
    assert_eq!(all.len(), 1, "expected one change, got {all:#?}");
    let change = all[0].clone();
    assert_eq!(
        (change.criticality, change.kind, change.coordinate.as_str()),
        (criticality, kind, coordinate),
        "{change:#?}"
    );
    assert_eq!(change.affects, affects, "{change:#?}");
    change
}

const QUERY: &str = "type Query { passage(id: ID!): Passage }\n";

fn with_query(sdl: &str) -> String {
    format!("{QUERY}{sdl}")
}

// ---- Identical schemas -------------------------------------------------------------------------

#[test]
fn identical_schemas_have_no_changes() {
    let sdl = with_query(
        r#"
        "A passage" type Passage { id: ID! text(format: Format = PLAIN): String @deprecated }
        enum Format { PLAIN HTML }
        input Filter { book: String = "Genesis" }
        union Hit = Passage
        directive @cached(ttl: Int = 60) repeatable on FIELD | QUERY
        "#,
    );
    assert_eq!(changes(&sdl, &sdl), Vec::new());
}

#[test]
fn reordered_definitions_have_no_changes() {
    let old = with_query("type Passage { id: ID! text: String }\nenum Format { PLAIN HTML }");
    let new =
        format!("enum Format {{ PLAIN HTML }}\ntype Passage {{ id: ID! text: String }}\n{QUERY}");
    assert_eq!(changes(&old, &new), Vec::new());
}

// ---- Types -------------------------------------------------------------------------------------

#[test]
fn type_added_is_safe() {
    let old = with_query("type Passage { id: ID! }");
    let new = with_query("type Passage { id: ID! }\ntype Book { id: ID! }");
    let change = assert_only(&old, &new, Safe, TypeAdded, "Book", &[]);
    assert_eq!(change.message, "Type 'Book' was added");
}

#[test]
fn type_removed_is_breaking() {
    let old = with_query("type Passage { id: ID! }\ntype Book { id: ID! }");
    let new = with_query("type Passage { id: ID! }");
    let change = assert_only(&old, &new, Breaking, TypeRemoved, "Book", &["Book"]);
    assert_eq!(change.message, "Type 'Book' was removed");
}

#[test]
fn type_kind_changed_is_breaking() {
    let old = with_query("type Passage { id: ID! }\ntype Book { id: ID! }");
    let new = with_query("type Passage { id: ID! }\ninterface Book { id: ID! }");
    let change = assert_only(&old, &new, Breaking, TypeKindChanged, "Book", &["Book"]);
    assert_eq!(
        change.message,
        "'Book' kind changed from 'object type' to 'interface'"
    );
}

#[test]
fn type_description_changes_are_safe() {
    let none = with_query("type Passage { id: ID! }");
    let one = with_query("\"A verse\" type Passage { id: ID! }");
    let other = with_query("\"A verse or more\" type Passage { id: ID! }");
    assert_only(&none, &one, Safe, TypeDescriptionAdded, "Passage", &[]);
    assert_only(&one, &other, Safe, TypeDescriptionChanged, "Passage", &[]);
    assert_only(&one, &none, Safe, TypeDescriptionRemoved, "Passage", &[]);
}

// ---- Fields ------------------------------------------------------------------------------------

#[test]
fn field_added_is_safe() {
    let old = with_query("type Passage { id: ID! }");
    let new = with_query("type Passage { id: ID! text: String }");
    let change = assert_only(&old, &new, Safe, FieldAdded, "Passage.text", &[]);
    assert_eq!(
        change.message,
        "Field 'Passage.text' was added to object type 'Passage'"
    );
}

#[test]
fn field_removed_is_breaking() {
    let old = with_query("type Passage { id: ID! text: String }");
    let new = with_query("type Passage { id: ID! }");
    let change = assert_only(
        &old,
        &new,
        Breaking,
        FieldRemoved,
        "Passage.text",
        &["Passage.text"],
    );
    assert_eq!(
        change.message,
        "Field 'Passage.text' was removed from object type 'Passage'"
    );
}

#[test]
fn deprecated_field_removed_is_still_breaking() {
    let old = with_query("type Passage { id: ID! text: String @deprecated(reason: \"Use body\") }");
    let new = with_query("type Passage { id: ID! }");
    let change = assert_only(
        &old,
        &new,
        Breaking,
        FieldRemoved,
        "Passage.text",
        &["Passage.text"],
    );
    assert_eq!(
        change.message,
        "Field 'Passage.text' (deprecated) was removed from object type 'Passage'"
    );
}

#[test]
fn interface_field_removed_is_breaking() {
    let old = with_query("type Passage { id: ID! }\ninterface Node { id: ID! name: String }");
    let new = with_query("type Passage { id: ID! }\ninterface Node { id: ID! }");
    let change = assert_only(
        &old,
        &new,
        Breaking,
        FieldRemoved,
        "Node.name",
        &["Node.name"],
    );
    assert_eq!(
        change.message,
        "Field 'Node.name' was removed from interface 'Node'"
    );
}

fn passage_text(ty: &str) -> String {
    with_query(&format!("type Passage {{ id: ID! text: {ty} }}"))
}

#[test]
fn output_field_type_made_stricter_is_safe() {
    for (old, new) in [
        ("String", "String!"),
        ("[String]", "[String]!"),
        ("[String]", "[String!]"),
        ("[String]", "[String!]!"),
    ] {
        let change = assert_only(
            &passage_text(old),
            &passage_text(new),
            Safe,
            FieldTypeChanged,
            "Passage.text",
            &[],
        );
        assert_eq!(
            change.message,
            format!("Field 'Passage.text' changed type from '{old}' to '{new}'")
        );
    }
}

#[test]
fn output_field_type_otherwise_changed_is_breaking() {
    for (old, new) in [
        ("String!", "String"),
        ("[String]!", "[String]"),
        ("String", "Int"),
        ("String", "[String]"),
        ("[String]", "String"),
        ("String", "ID!"),
    ] {
        assert_only(
            &passage_text(old),
            &passage_text(new),
            Breaking,
            FieldTypeChanged,
            "Passage.text",
            &["Passage.text"],
        );
    }
}

#[test]
fn field_deprecation_changes_are_safe() {
    let plain = passage_text("String");
    let deprecated = passage_text("String @deprecated");
    let reason = passage_text("String @deprecated(reason: \"Use body\")");
    let other_reason = passage_text("String @deprecated(reason: \"Use html\")");
    let change = assert_only(
        &plain,
        &deprecated,
        Safe,
        FieldDeprecationAdded,
        "Passage.text",
        &[],
    );
    assert_eq!(change.message, "Field 'Passage.text' is deprecated");
    assert_only(
        &reason,
        &plain,
        Safe,
        FieldDeprecationRemoved,
        "Passage.text",
        &[],
    );
    let change = assert_only(
        &reason,
        &other_reason,
        Safe,
        FieldDeprecationReasonChanged,
        "Passage.text",
        &[],
    );
    assert_eq!(
        change.message,
        "Deprecation reason on field 'Passage.text' has changed from 'Use body' to 'Use html'"
    );
    assert_only(
        &deprecated,
        &reason,
        Safe,
        FieldDeprecationReasonAdded,
        "Passage.text",
        &[],
    );
    assert_only(
        &reason,
        &deprecated,
        Safe,
        FieldDeprecationReasonRemoved,
        "Passage.text",
        &[],
    );
}

#[test]
fn field_description_changes_are_safe() {
    let none = passage_text("String");
    let one = with_query("type Passage { id: ID! \"The verse\" text: String }");
    let other = with_query("type Passage { id: ID! \"The verse text\" text: String }");
    assert_only(
        &none,
        &one,
        Safe,
        FieldDescriptionAdded,
        "Passage.text",
        &[],
    );
    assert_only(
        &one,
        &other,
        Safe,
        FieldDescriptionChanged,
        "Passage.text",
        &[],
    );
    assert_only(
        &one,
        &none,
        Safe,
        FieldDescriptionRemoved,
        "Passage.text",
        &[],
    );
}

// ---- Field arguments ---------------------------------------------------------------------------

fn passage_args(args: &str) -> String {
    format!("type Query {{ passage({args}): Passage }}\ntype Passage {{ id: ID! }}")
}

#[test]
fn required_argument_added_is_breaking() {
    let change = assert_only(
        &passage_args("id: ID!"),
        &passage_args("id: ID!, version: String!"),
        Breaking,
        FieldArgumentAdded,
        "Query.passage(version:)",
        &["Query.passage"],
    );
    assert_eq!(
        change.message,
        "Argument 'version: String!' added to field 'Query.passage'"
    );
}

#[test]
fn optional_argument_added_is_dangerous() {
    // Inspector changes/field.ts fieldArgumentAdded: breaking only when non-null without default.
    for added in [
        "version: String",
        "version: String! = \"KJV\"",
        "version: String = \"KJV\"",
    ] {
        assert_only(
            &passage_args("id: ID!"),
            &passage_args(&format!("id: ID!, {added}")),
            Dangerous,
            FieldArgumentAdded,
            "Query.passage(version:)",
            &[],
        );
    }
}

#[test]
fn argument_removed_is_breaking() {
    let change = assert_only(
        &passage_args("id: ID!, version: String"),
        &passage_args("id: ID!"),
        Breaking,
        FieldArgumentRemoved,
        "Query.passage(version:)",
        &["Query.passage(version:)"],
    );
    assert_eq!(
        change.message,
        "Argument 'version: String' was removed from field 'Query.passage'"
    );
}

#[test]
fn argument_type_made_looser_is_safe() {
    for (old, new) in [
        ("ID!", "ID"),
        ("[ID!]", "[ID]"),
        ("[ID]!", "[ID]"),
        ("[ID!]!", "[ID]"),
    ] {
        assert_only(
            &passage_args(&format!("id: {old}")),
            &passage_args(&format!("id: {new}")),
            Safe,
            FieldArgumentTypeChanged,
            "Query.passage(id:)",
            &[],
        );
    }
}

#[test]
fn argument_type_otherwise_changed_is_breaking() {
    // Made required: operations that leave it out break too, and usage records an argument
    // only where it is given, so the field is affected as well.
    assert_only(
        &passage_args("id: ID"),
        &passage_args("id: ID!"),
        Breaking,
        FieldArgumentTypeChanged,
        "Query.passage(id:)",
        &["Query.passage(id:)", "Query.passage"],
    );
    for (old, new) in [("ID", "String"), ("ID", "[ID]"), ("[ID]", "[ID!]")] {
        assert_only(
            &passage_args(&format!("id: {old}")),
            &passage_args(&format!("id: {new}")),
            Breaking,
            FieldArgumentTypeChanged,
            "Query.passage(id:)",
            &["Query.passage(id:)"],
        );
    }
}

#[test]
fn argument_default_changed_is_dangerous() {
    let change = assert_only(
        &passage_args("id: ID!, version: String = \"KJV\""),
        &passage_args("id: ID!, version: String = \"ASV\""),
        Dangerous,
        FieldArgumentDefaultChanged,
        "Query.passage(version:)",
        &[],
    );
    assert_eq!(
        change.message,
        "Default value for argument 'Query.passage(version:)' changed from '\"KJV\"' to '\"ASV\"'"
    );
    assert_only(
        &passage_args("id: ID!, version: String"),
        &passage_args("id: ID!, version: String = \"ASV\""),
        Dangerous,
        FieldArgumentDefaultChanged,
        "Query.passage(version:)",
        &[],
    );
}

#[test]
fn a_default_removed_from_a_non_null_argument_is_breaking_for_the_field() {
    let change = assert_only(
        &passage_args("id: ID!, first: Int! = 20"),
        &passage_args("id: ID!, first: Int!"),
        Breaking,
        FieldArgumentDefaultChanged,
        "Query.passage(first:)",
        &["Query.passage(first:)", "Query.passage"],
    );
    assert_eq!(
        change.message,
        "Default value for argument 'Query.passage(first:)' changed from '20' to 'none'"
    );
    // Still optional (nullable): only dangerous.
    assert_only(
        &passage_args("id: ID!, first: Int = 20"),
        &passage_args("id: ID!, first: Int"),
        Dangerous,
        FieldArgumentDefaultChanged,
        "Query.passage(first:)",
        &[],
    );
}

#[test]
fn argument_description_and_deprecation_changes_are_safe() {
    assert_only(
        &passage_args("id: ID!, version: String"),
        &passage_args("id: ID!, \"Bible version\" version: String"),
        Safe,
        FieldArgumentDescriptionChanged,
        "Query.passage(version:)",
        &[],
    );
    assert_only(
        &passage_args("id: ID!, version: String"),
        &passage_args("id: ID!, version: String @deprecated"),
        Safe,
        FieldArgumentDeprecationAdded,
        "Query.passage(version:)",
        &[],
    );
    assert_only(
        &passage_args("id: ID!, version: String @deprecated"),
        &passage_args("id: ID!, version: String"),
        Safe,
        FieldArgumentDeprecationRemoved,
        "Query.passage(version:)",
        &[],
    );
    assert_only(
        &passage_args("id: ID!, version: String @deprecated(reason: \"a\")"),
        &passage_args("id: ID!, version: String @deprecated(reason: \"b\")"),
        Safe,
        FieldArgumentDeprecationReasonChanged,
        "Query.passage(version:)",
        &[],
    );
}

// ---- Input object fields -----------------------------------------------------------------------

fn filter(fields: &str) -> String {
    format!(
        "type Query {{ search(filter: Filter): [Passage] }}\ntype Passage {{ id: ID! }}\ninput Filter {{ {fields} }}"
    )
}

#[test]
fn required_input_field_added_is_breaking() {
    let change = assert_only(
        &filter("text: String"),
        &filter("text: String book: String!"),
        Breaking,
        InputFieldAdded,
        "Filter.book",
        &["Filter"],
    );
    assert_eq!(
        change.message,
        "Input field 'book' of type 'String!' was added to input object type 'Filter'"
    );
}

#[test]
fn optional_input_field_added_is_safe_without_default_and_dangerous_with_one() {
    // Inspector changes/input.ts inputFieldAddedFromMeta.
    assert_only(
        &filter("text: String"),
        &filter("text: String book: String"),
        Safe,
        InputFieldAdded,
        "Filter.book",
        &[],
    );
    for added in ["book: String = \"Genesis\"", "book: String! = \"Genesis\""] {
        assert_only(
            &filter("text: String"),
            &filter(&format!("text: String {added}")),
            Dangerous,
            InputFieldAdded,
            "Filter.book",
            &[],
        );
    }
}

#[test]
fn input_field_removed_is_breaking() {
    let change = assert_only(
        &filter("text: String book: String"),
        &filter("text: String"),
        Breaking,
        InputFieldRemoved,
        "Filter.book",
        &["Filter"],
    );
    assert_eq!(
        change.message,
        "Input field 'book' was removed from input object type 'Filter'"
    );
}

#[test]
fn input_field_type_changes_follow_input_variance() {
    assert_only(
        &filter("text: String!"),
        &filter("text: String"),
        Safe,
        InputFieldTypeChanged,
        "Filter.text",
        &[],
    );
    for (old, new) in [
        ("String", "String!"),
        ("String", "Int"),
        ("[String]", "String"),
    ] {
        assert_only(
            &filter(&format!("text: {old}")),
            &filter(&format!("text: {new}")),
            Breaking,
            InputFieldTypeChanged,
            "Filter.text",
            &["Filter"],
        );
    }
}

#[test]
fn input_field_default_changed_is_dangerous() {
    assert_only(
        &filter("limit: Int = 10"),
        &filter("limit: Int = 20"),
        Dangerous,
        InputFieldDefaultValueChanged,
        "Filter.limit",
        &[],
    );
}

#[test]
fn a_default_removed_from_a_non_null_input_field_is_breaking() {
    assert_only(
        &filter("limit: Int! = 10"),
        &filter("limit: Int!"),
        Breaking,
        InputFieldDefaultValueChanged,
        "Filter.limit",
        &["Filter"],
    );
}

#[test]
fn input_field_description_and_deprecation_changes_are_safe() {
    assert_only(
        &filter("text: String"),
        &filter("\"Words to find\" text: String"),
        Safe,
        InputFieldDescriptionAdded,
        "Filter.text",
        &[],
    );
    assert_only(
        &filter("text: String"),
        &filter("text: String @deprecated"),
        Safe,
        InputFieldDeprecationAdded,
        "Filter.text",
        &[],
    );
}

// ---- Enums -------------------------------------------------------------------------------------

fn testament(values: &str) -> String {
    with_query(&format!(
        "type Passage {{ id: ID! testament: Testament }}\nenum Testament {{ {values} }}"
    ))
}

#[test]
fn enum_value_added_is_dangerous() {
    let change = assert_only(
        &testament("OLD NEW"),
        &testament("OLD NEW APOCRYPHA"),
        Dangerous,
        EnumValueAdded,
        "Testament.APOCRYPHA",
        &[],
    );
    assert_eq!(
        change.message,
        "Enum value 'APOCRYPHA' was added to enum 'Testament'"
    );
}

#[test]
fn enum_value_removed_is_breaking() {
    let change = assert_only(
        &testament("OLD NEW APOCRYPHA"),
        &testament("OLD NEW"),
        Breaking,
        EnumValueRemoved,
        "Testament.APOCRYPHA",
        &["Testament"],
    );
    assert_eq!(
        change.message,
        "Enum value 'APOCRYPHA' was removed from enum 'Testament'"
    );
}

#[test]
fn enum_value_deprecation_and_description_changes_are_safe() {
    let plain = testament("OLD NEW APOCRYPHA");
    let deprecated = testament("OLD NEW APOCRYPHA @deprecated(reason: \"Not canon here\")");
    let other = testament("OLD NEW APOCRYPHA @deprecated(reason: \"Use BOOKS\")");
    assert_only(
        &plain,
        &deprecated,
        Safe,
        EnumValueDeprecationReasonAdded,
        "Testament.APOCRYPHA",
        &[],
    );
    assert_only(
        &deprecated,
        &other,
        Safe,
        EnumValueDeprecationReasonChanged,
        "Testament.APOCRYPHA",
        &[],
    );
    assert_only(
        &deprecated,
        &plain,
        Safe,
        EnumValueDeprecationReasonRemoved,
        "Testament.APOCRYPHA",
        &[],
    );
    assert_only(
        &plain,
        &testament("OLD NEW \"Deuterocanon\" APOCRYPHA"),
        Safe,
        EnumValueDescriptionChanged,
        "Testament.APOCRYPHA",
        &[],
    );
}

// ---- Unions and interfaces ---------------------------------------------------------------------

fn hits(members: &str) -> String {
    with_query(&format!(
        "type Passage {{ id: ID! }}\ntype Book {{ id: ID! }}\nunion Hit = {members}"
    ))
}

#[test]
fn union_member_added_is_dangerous() {
    let change = assert_only(
        &hits("Passage"),
        &hits("Passage | Book"),
        Dangerous,
        UnionMemberAdded,
        "Hit",
        &[],
    );
    assert_eq!(
        change.message,
        "Member 'Book' was added to union type 'Hit'"
    );
}

#[test]
fn union_member_removed_is_breaking() {
    let change = assert_only(
        &hits("Passage | Book"),
        &hits("Passage"),
        Breaking,
        UnionMemberRemoved,
        "Hit",
        &["Hit"],
    );
    assert_eq!(
        change.message,
        "Member 'Book' was removed from union type 'Hit'"
    );
}

fn passage_implements(interfaces: &str) -> String {
    with_query(&format!(
        "interface Node {{ id: ID! }}\ntype Passage {interfaces} {{ id: ID! }}"
    ))
}

#[test]
fn interface_added_to_object_is_dangerous() {
    let change = assert_only(
        &passage_implements(""),
        &passage_implements("implements Node"),
        Dangerous,
        ObjectTypeInterfaceAdded,
        "Passage",
        &[],
    );
    assert_eq!(change.message, "'Passage' implements interface 'Node'");
}

#[test]
fn interface_removed_from_object_is_breaking() {
    let change = assert_only(
        &passage_implements("implements Node"),
        &passage_implements(""),
        Breaking,
        ObjectTypeInterfaceRemoved,
        "Passage",
        &["Passage"],
    );
    assert_eq!(
        change.message,
        "'Passage' no longer implements interface 'Node'"
    );
}

// ---- Directives --------------------------------------------------------------------------------

fn directive(definition: &str) -> String {
    with_query(&format!("type Passage {{ id: ID! }}\n{definition}"))
}

#[test]
fn directive_added_is_safe() {
    let change = assert_only(
        &directive(""),
        &directive("directive @cached(ttl: Int!) on FIELD"),
        Safe,
        DirectiveAdded,
        "@cached",
        &[],
    );
    assert_eq!(change.message, "Directive '@cached' was added");
}

#[test]
fn directive_removed_is_breaking() {
    assert_only(
        &directive("directive @cached on FIELD"),
        &directive(""),
        Breaking,
        DirectiveRemoved,
        "@cached",
        &["@cached"],
    );
}

#[test]
fn directive_location_removed_is_breaking_and_added_is_safe() {
    let change = assert_only(
        &directive("directive @cached on FIELD | QUERY"),
        &directive("directive @cached on FIELD"),
        Breaking,
        DirectiveLocationRemoved,
        "@cached",
        &["@cached"],
    );
    assert_eq!(
        change.message,
        "Location 'QUERY' was removed from directive '@cached'"
    );
    assert_only(
        &directive("directive @cached on FIELD"),
        &directive("directive @cached on FIELD | QUERY"),
        Safe,
        DirectiveLocationAdded,
        "@cached",
        &[],
    );
}

#[test]
fn directive_required_argument_added_is_breaking() {
    assert_only(
        &directive("directive @cached on FIELD"),
        &directive("directive @cached(ttl: Int!) on FIELD"),
        Breaking,
        DirectiveArgumentAdded,
        "@cached(ttl:)",
        &["@cached"],
    );
}

#[test]
fn directive_optional_argument_added_is_safe() {
    for added in ["ttl: Int", "ttl: Int! = 60"] {
        assert_only(
            &directive("directive @cached on FIELD"),
            &directive(&format!("directive @cached({added}) on FIELD")),
            Safe,
            DirectiveArgumentAdded,
            "@cached(ttl:)",
            &[],
        );
    }
}

#[test]
fn directive_argument_removed_or_retyped_is_breaking() {
    assert_only(
        &directive("directive @cached(ttl: Int) on FIELD"),
        &directive("directive @cached on FIELD"),
        Breaking,
        DirectiveArgumentRemoved,
        "@cached(ttl:)",
        &["@cached"],
    );
    assert_only(
        &directive("directive @cached(ttl: Int) on FIELD"),
        &directive("directive @cached(ttl: String) on FIELD"),
        Breaking,
        DirectiveArgumentTypeChanged,
        "@cached(ttl:)",
        &["@cached"],
    );
    assert_only(
        &directive("directive @cached(ttl: Int!) on FIELD"),
        &directive("directive @cached(ttl: Int) on FIELD"),
        Safe,
        DirectiveArgumentTypeChanged,
        "@cached(ttl:)",
        &[],
    );
}

#[test]
fn directive_argument_default_changed_is_dangerous_unless_the_argument_becomes_required() {
    assert_only(
        &directive("directive @cached(ttl: Int = 60) on FIELD"),
        &directive("directive @cached(ttl: Int = 30) on FIELD"),
        Dangerous,
        DirectiveArgumentDefaultValueChanged,
        "@cached(ttl:)",
        &[],
    );
    // Removed from a non-null argument: each use that left it out now fails validation.
    assert_only(
        &directive("directive @cached(ttl: Int! = 60) on FIELD"),
        &directive("directive @cached(ttl: Int!) on FIELD"),
        Breaking,
        DirectiveArgumentDefaultValueChanged,
        "@cached(ttl:)",
        &["@cached"],
    );
    // Removed from a nullable one: still optional.
    assert_only(
        &directive("directive @cached(ttl: Int = 60) on FIELD"),
        &directive("directive @cached(ttl: Int) on FIELD"),
        Dangerous,
        DirectiveArgumentDefaultValueChanged,
        "@cached(ttl:)",
        &[],
    );
}

#[test]
fn directive_repeatable_and_description_changes() {
    assert_only(
        &directive("directive @cached on FIELD"),
        &directive("directive @cached repeatable on FIELD"),
        Safe,
        DirectiveRepeatableAdded,
        "@cached",
        &[],
    );
    assert_only(
        &directive("directive @cached repeatable on FIELD"),
        &directive("directive @cached on FIELD"),
        Dangerous,
        DirectiveRepeatableRemoved,
        "@cached",
        &[],
    );
    assert_only(
        &directive("directive @cached on FIELD"),
        &directive("\"Cache the field\" directive @cached on FIELD"),
        Safe,
        DirectiveDescriptionChanged,
        "@cached",
        &[],
    );
}

#[test]
fn built_in_directives_are_not_reported() {
    // @deprecated is built in on both sides; using it is a field change, not a directive one.
    let changes = changes(&passage_text("String"), &passage_text("String @deprecated"));
    assert!(
        changes.iter().all(|c| !c.coordinate.starts_with('@')),
        "{changes:#?}"
    );
}

// ---- Schema roots ------------------------------------------------------------------------------

#[test]
fn query_root_changed_is_breaking() {
    let old = "type Query { passage: Passage }\ntype Passage { id: ID! }";
    let new = "schema { query: Root }\ntype Root { passage: Passage }\ntype Passage { id: ID! }";
    let change = change_of_kind(old, new, SchemaQueryTypeChanged);
    assert_eq!(
        (
            change.criticality,
            change.coordinate.as_str(),
            change.affects
        ),
        (Breaking, "Query", vec!["Query".to_string()])
    );
    assert_eq!(
        change.message,
        "Schema query root has changed from 'Query' to 'Root'"
    );
}

#[test]
fn mutation_root_given_where_there_was_none_is_safe() {
    let old = "type Query { passage: Passage }\ntype Passage { id: ID! }";
    let new = "schema { query: Query mutation: Write }\ntype Query { passage: Passage }\ntype Passage { id: ID! }\ntype Write { note: ID }";
    let change = change_of_kind(old, new, SchemaMutationTypeChanged);
    assert_eq!(
        (
            change.criticality,
            change.coordinate.as_str(),
            change.affects
        ),
        (Safe, "Write", Vec::<String>::new())
    );
}

#[test]
fn root_with_its_default_name_added_is_only_a_type_addition() {
    let old = "type Query { passage: Passage }\ntype Passage { id: ID! }";
    let new =
        "type Query { passage: Passage }\ntype Passage { id: ID! }\ntype Mutation { note: ID }";
    assert_only(old, new, Safe, TypeAdded, "Mutation", &[]);
}

// ---- A mixed pair, as a whole ------------------------------------------------------------------

const MIXED_OLD: &str = r#"
type Query {
  passage(id: ID!): Passage
  search(filter: Filter, first: Int = 10): [Hit!]!
}
interface Node { id: ID! }
"A verse"
type Passage implements Node {
  id: ID!
  text: String
  book: String @deprecated
}
type Book implements Node { id: ID! name: String! }
union Hit = Passage | Book
enum Testament { OLD NEW }
input Filter { text: String! testament: Testament }
directive @cached(ttl: Int) on FIELD | QUERY
"#;

const MIXED_NEW: &str = r#"
type Query {
  passage(id: ID!, version: String!): Passage
  search(filter: Filter, first: Int = 20): [Hit!]!
}
interface Node { id: ID! }
"A verse of scripture"
type Passage implements Node {
  id: ID!
  text: String!
}
type Book { id: ID! name: String! }
type Chapter implements Node { id: ID! }
union Hit = Passage | Book | Chapter
enum Testament { OLD NEW DEUTEROCANON }
input Filter { text: String testament: Testament book: String! }
directive @cached(ttl: Int) on FIELD
"#;

fn expected(
    criticality: Criticality,
    kind: ChangeKind,
    coordinate: &str,
    message: &str,
    affects: &[&str],
) -> Change {
    Change {
        criticality,
        kind,
        coordinate: coordinate.to_string(),
        message: message.to_string(),
        affects: affects.iter().map(|a| a.to_string()).collect(),
    }
}

#[test]
fn mixed_changes_are_classified_and_sorted() {
    let expected = vec![
        expected(
            Breaking,
            DirectiveLocationRemoved,
            "@cached",
            "Location 'QUERY' was removed from directive '@cached'",
            &["@cached"],
        ),
        expected(
            Breaking,
            ObjectTypeInterfaceRemoved,
            "Book",
            "'Book' no longer implements interface 'Node'",
            &["Book"],
        ),
        expected(Safe, TypeAdded, "Chapter", "Type 'Chapter' was added", &[]),
        expected(
            Breaking,
            InputFieldAdded,
            "Filter.book",
            "Input field 'book' of type 'String!' was added to input object type 'Filter'",
            &["Filter"],
        ),
        expected(
            Safe,
            InputFieldTypeChanged,
            "Filter.text",
            "Input field 'Filter.text' changed type from 'String!' to 'String'",
            &[],
        ),
        expected(
            Dangerous,
            UnionMemberAdded,
            "Hit",
            "Member 'Chapter' was added to union type 'Hit'",
            &[],
        ),
        expected(
            Safe,
            TypeDescriptionChanged,
            "Passage",
            "Description of object type 'Passage' changed",
            &[],
        ),
        expected(
            Breaking,
            FieldRemoved,
            "Passage.book",
            "Field 'Passage.book' (deprecated) was removed from object type 'Passage'",
            &["Passage.book"],
        ),
        expected(
            Safe,
            FieldTypeChanged,
            "Passage.text",
            "Field 'Passage.text' changed type from 'String' to 'String!'",
            &[],
        ),
        expected(
            Breaking,
            FieldArgumentAdded,
            "Query.passage(version:)",
            "Argument 'version: String!' added to field 'Query.passage'",
            &["Query.passage"],
        ),
        expected(
            Dangerous,
            FieldArgumentDefaultChanged,
            "Query.search(first:)",
            "Default value for argument 'Query.search(first:)' changed from '10' to '20'",
            &[],
        ),
        expected(
            Dangerous,
            EnumValueAdded,
            "Testament.DEUTEROCANON",
            "Enum value 'DEUTEROCANON' was added to enum 'Testament'",
            &[],
        ),
    ];
    assert_eq!(changes(MIXED_OLD, MIXED_NEW), expected);
}

#[test]
fn changes_serialize_with_lowercase_criticality_and_screaming_kind() {
    let change = expected(
        Breaking,
        FieldRemoved,
        "Passage.text",
        "Field 'Passage.text' was removed from object type 'Passage'",
        &["Passage.text"],
    );
    let json = serde_json::to_value(&change).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({
            "criticality": "breaking",
            "kind": "FIELD_REMOVED",
            "coordinate": "Passage.text",
            "message": "Field 'Passage.text' was removed from object type 'Passage'",
            "affects": ["Passage.text"],
        })
    );
}

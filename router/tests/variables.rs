//! Variable coercion (GraphQL spec October 2021, §6.1.2 CoerceVariableValues with the input
//! coercion of §3.5 scalars, §3.9 enums, §3.10 input objects, §3.11 lists, §3.12 non-null),
//! checked against the spec's own example tables and graphql-js's messages.

use gospelib_router::validation::Problem;
use gospelib_router::variables::{InputTypes, MAX_PROBLEMS, TOO_MANY_PROBLEMS, literal_to_json};
use graphql_tools::parser::query::{Definition, OperationDefinition, VariableDefinition};
use graphql_tools::parser::{parse_query, parse_schema};
use serde_json::{Map, Value, json};

const SDL: &str = r#"
type Query {
  echo: String
}

scalar JSON

enum HighlightColor {
  RED
  GREEN
  BLUE
}

extend enum HighlightColor {
  YELLOW
}

input ExampleInputObject {
  a: String
  b: Int!
}

input Highlight {
  color: HighlightColor!
  text: String = ""
  weight: Int = 1
}

input Page {
  title: String
  items: [Highlight!]!
}

input Tagged {
  ids: [ID] = 4
  highlight: Highlight = { color: GREEN }
}
"#;

fn input_types() -> InputTypes {
    InputTypes::new(&parse_schema::<String>(SDL).unwrap().into_static())
}

/// The variable definitions of `query Q<signature> { echo }`, e.g. `($x: Int)`.
fn definitions(signature: &str) -> Vec<VariableDefinition<'static, String>> {
    let source = format!("query Q{signature} {{ echo }}");
    let document = parse_query::<String>(&source).unwrap().into_static();
    match document.definitions.into_iter().next() {
        Some(Definition::Operation(OperationDefinition::Query(query))) => {
            query.variable_definitions
        }
        _ => panic!("not a query: {source}"),
    }
}

fn coerce_with_locations(signature: &str, provided: Value) -> Result<Value, Vec<Problem>> {
    let Value::Object(provided) = provided else {
        panic!("variables are an object");
    };
    input_types()
        .coerce(&definitions(signature), &provided)
        .map(Value::Object)
}

/// The coerced variables, or the problems' messages.
fn coerce(signature: &str, provided: Value) -> Result<Value, Vec<String>> {
    coerce_with_locations(signature, provided).map_err(|problems| {
        problems
            .into_iter()
            .map(|problem| problem.message)
            .collect()
    })
}

/// One variable `$v` of the given type, coerced from `value`.
fn coerce_one(variable_type: &str, value: Value) -> Result<Value, Vec<String>> {
    coerce(
        &format!("($v: {variable_type})"),
        Value::Object(Map::from_iter([("v".to_owned(), value)])),
    )
    .map(|mut variables| variables["v"].take())
}

fn refusal(message: &str) -> Result<Value, Vec<String>> {
    Err(vec![message.to_owned()])
}

#[test]
fn list_input_coercion_table_for_int_list() {
    assert_eq!(coerce_one("[Int]", json!([1, 2, 3])), Ok(json!([1, 2, 3])));
    assert_eq!(
        coerce_one("[Int]", json!([1, "b", true])),
        Err(vec![
            r#"Variable "$v" got invalid value "b" at "v[1]"; Int cannot represent non-integer value: "b""#
                .to_owned(),
            r#"Variable "$v" got invalid value true at "v[2]"; Int cannot represent non-integer value: true"#
                .to_owned(),
        ])
    );
    assert_eq!(coerce_one("[Int]", json!(1)), Ok(json!([1])));
    assert_eq!(coerce_one("[Int]", json!(null)), Ok(json!(null)));
}

#[test]
fn list_input_coercion_table_for_nested_int_list() {
    assert_eq!(
        coerce_one("[[Int]]", json!([[1], [2, 3]])),
        Ok(json!([[1], [2, 3]]))
    );
    // The October 2021 table says "Error" here, against its own prose ("this may apply
    // recursively for nested lists"); graphql-js wraps each item, and graphql-spec#1057
    // corrected the table to this.
    assert_eq!(
        coerce_one("[[Int]]", json!([1, 2, 3])),
        Ok(json!([[1], [2], [3]]))
    );
    assert_eq!(
        coerce_one("[[Int]]", json!([1, null, 3])),
        Ok(json!([[1], null, [3]]))
    );
    assert_eq!(
        coerce_one("[[Int]]", json!([[1], ["b"]])),
        refusal(
            r#"Variable "$v" got invalid value "b" at "v[1][0]"; Int cannot represent non-integer value: "b""#
        )
    );
    assert_eq!(coerce_one("[[Int]]", json!(1)), Ok(json!([[1]])));
    assert_eq!(coerce_one("[[Int]]", json!(null)), Ok(json!(null)));
}

#[test]
fn a_single_value_is_a_list_of_one_after_its_own_coercion() {
    assert_eq!(coerce_one("[ID!]!", json!(5)), Ok(json!(["5"])));
    assert_eq!(
        coerce_one("[Int!]", json!([1, null])),
        refusal(
            r#"Variable "$v" got invalid value null at "v[1]"; Expected non-nullable type "Int!" not to be null."#
        )
    );
}

#[test]
fn input_object_coercion_table() {
    let example = "ExampleInputObject";
    assert_eq!(
        coerce_one(example, json!({ "a": "abc", "b": 123 })),
        Ok(json!({ "a": "abc", "b": 123 }))
    );
    assert_eq!(
        coerce_one(example, json!({ "a": null, "b": 123 })),
        Ok(json!({ "a": null, "b": 123 }))
    );
    assert_eq!(
        coerce_one(example, json!({ "b": 123 })),
        Ok(json!({ "b": 123 }))
    );
    assert_eq!(
        coerce_one(example, json!("abc123")),
        refusal(
            r#"Variable "$v" got invalid value "abc123"; Expected type "ExampleInputObject" to be an object."#
        )
    );
    assert_eq!(
        coerce_one(example, json!({ "a": "abc", "b": "123" })),
        refusal(
            r#"Variable "$v" got invalid value "123" at "v.b"; Int cannot represent non-integer value: "123""#
        )
    );
    assert_eq!(
        coerce_one(example, json!({ "a": "abc" })),
        refusal(
            r#"Variable "$v" got invalid value {"a":"abc"}; Field "b" of required type "Int!" was not provided."#
        )
    );
    assert_eq!(
        coerce_one(example, json!({ "a": "abc", "b": null })),
        refusal(
            r#"Variable "$v" got invalid value null at "v.b"; Expected non-nullable type "Int!" not to be null."#
        )
    );
    assert_eq!(
        coerce_one(example, json!({ "b": 123, "c": "xyz" })),
        refusal(
            r#"Variable "$v" got invalid value {"b":123,"c":"xyz"}; Field "c" is not defined by type "ExampleInputObject"."#
        )
    );
}

#[test]
fn int_is_a_32_bit_signed_integer() {
    assert_eq!(coerce_one("Int", json!(2147483647)), Ok(json!(2147483647)));
    assert_eq!(
        coerce_one("Int", json!(-2147483648)),
        Ok(json!(-2147483648))
    );
    assert_eq!(
        coerce_one("Int", json!(2147483648_i64)),
        refusal(
            r#"Variable "$v" got invalid value 2147483648; Int cannot represent non 32-bit signed integer value: 2147483648"#
        )
    );
    assert_eq!(
        coerce_one("Int", json!(-2147483649_i64)),
        refusal(
            r#"Variable "$v" got invalid value -2147483649; Int cannot represent non 32-bit signed integer value: -2147483649"#
        )
    );
    assert_eq!(
        coerce_one("Int", json!(1.5)),
        refusal(
            r#"Variable "$v" got invalid value 1.5; Int cannot represent non-integer value: 1.5"#
        )
    );
    // As in graphql-js: JSON does not tell 4.0 from 4, so an integral number is an Int.
    assert_eq!(coerce_one("Int", json!(4.0)), Ok(json!(4)));
    assert_eq!(
        coerce_one("Int", json!(true)),
        refusal(
            r#"Variable "$v" got invalid value true; Int cannot represent non-integer value: true"#
        )
    );
}

#[test]
fn float_string_and_boolean() {
    assert_eq!(coerce_one("Float", json!(1)), Ok(json!(1)));
    assert_eq!(coerce_one("Float", json!(1.5)), Ok(json!(1.5)));
    assert_eq!(
        coerce_one("Float", json!("1.5")),
        refusal(
            r#"Variable "$v" got invalid value "1.5"; Float cannot represent non numeric value: "1.5""#
        )
    );
    assert_eq!(coerce_one("String", json!("abc")), Ok(json!("abc")));
    assert_eq!(
        coerce_one("String", json!(1)),
        refusal(
            r#"Variable "$v" got invalid value 1; String cannot represent a non string value: 1"#
        )
    );
    assert_eq!(coerce_one("Boolean", json!(false)), Ok(json!(false)));
    assert_eq!(
        coerce_one("Boolean", json!("true")),
        refusal(
            r#"Variable "$v" got invalid value "true"; Boolean cannot represent a non boolean value: "true""#
        )
    );
}

#[test]
fn id_accepts_strings_and_integers() {
    assert_eq!(coerce_one("ID", json!("abc")), Ok(json!("abc")));
    assert_eq!(coerce_one("ID", json!(4)), Ok(json!("4")));
    assert_eq!(coerce_one("ID", json!(-12)), Ok(json!("-12")));
    assert_eq!(
        coerce_one("ID", json!(4.5)),
        refusal(r#"Variable "$v" got invalid value 4.5; ID cannot represent value: 4.5"#)
    );
    assert_eq!(
        coerce_one("ID", json!(true)),
        refusal(r#"Variable "$v" got invalid value true; ID cannot represent value: true"#)
    );
}

#[test]
fn custom_scalars_accept_any_value() {
    let value = json!({ "any": [1, "two", { "three": null }] });
    assert_eq!(coerce_one("JSON", value.clone()), Ok(value));
    assert_eq!(coerce_one("JSON!", json!(false)), Ok(json!(false)));
}

#[test]
fn enums_accept_the_name_of_one_of_their_values() {
    assert_eq!(coerce_one("HighlightColor", json!("RED")), Ok(json!("RED")));
    // A value added by `extend enum`.
    assert_eq!(
        coerce_one("HighlightColor", json!("YELLOW")),
        Ok(json!("YELLOW"))
    );
    assert_eq!(
        coerce_one("HighlightColor", json!("PURPLE")),
        refusal(
            r#"Variable "$v" got invalid value "PURPLE"; Value "PURPLE" does not exist in "HighlightColor" enum."#
        )
    );
    assert_eq!(
        coerce("($input: Highlight)", json!({ "input": { "color": 3 } })),
        refusal(
            r#"Variable "$input" got invalid value 3 at "input.color"; Enum "HighlightColor" cannot represent non-string value: 3."#
        )
    );
}

#[test]
fn a_required_variable_must_be_provided_and_not_null() {
    assert_eq!(
        coerce_with_locations("($x: Int!)", json!({})),
        Err(vec![Problem {
            message: r#"Variable "$x" of required type "Int!" was not provided."#.to_owned(),
            locations: vec![(1, 9)],
        }])
    );
    assert_eq!(
        coerce_with_locations("($x: [Int]!)", json!({ "x": null })),
        Err(vec![Problem {
            message: r#"Variable "$x" of non-null type "[Int]!" must not be null."#.to_owned(),
            locations: vec![(1, 9)],
        }])
    );
    // A default does not make an explicit null acceptable for a non-null variable.
    assert_eq!(
        coerce("($x: Int! = 3)", json!({ "x": null })),
        refusal(r#"Variable "$x" of non-null type "Int!" must not be null."#)
    );
    assert_eq!(coerce("($x: Int! = 3)", json!({})), Ok(json!({ "x": 3 })));
}

#[test]
fn defaults_apply_only_when_the_variable_is_absent() {
    assert_eq!(
        coerce(
            "($x: Int = 3, $color: HighlightColor = GREEN, $ids: [ID] = 7, $h: Highlight = { color: RED })",
            json!({})
        ),
        Ok(json!({
            "x": 3,
            "color": "GREEN",
            "ids": ["7"],
            "h": { "color": "RED", "text": "", "weight": 1 },
        }))
    );
    // An explicit null for a nullable variable stays null; the default is not used.
    assert_eq!(
        coerce("($x: Int = 3)", json!({ "x": null })),
        Ok(json!({ "x": null }))
    );
    // Absent, nullable and without a default: absent, not null.
    assert_eq!(
        coerce("($x: Int, $y: Int)", json!({ "y": 1 })),
        Ok(json!({ "y": 1 }))
    );
}

#[test]
fn an_invalid_default_is_reported_as_such() {
    assert_eq!(
        coerce("($x: Int = \"three\")", json!({})),
        refusal(
            r#"Variable "$x" has invalid default value "three"; Int cannot represent non-integer value: "three""#
        )
    );
}

#[test]
fn input_field_defaults_follow_the_provided_fields_in_definition_order() {
    let coerced = coerce(
        "($h: Highlight)",
        json!({ "h": { "weight": 2, "color": "BLUE" } }),
    )
    .unwrap();
    // Compared as text: the order of the object's keys is part of what is checked.
    assert_eq!(
        coerced.to_string(),
        r#"{"h":{"weight":2,"color":"BLUE","text":""}}"#
    );
    // An explicit null for a nullable field with a default stays null.
    assert_eq!(
        coerce(
            "($h: Highlight)",
            json!({ "h": { "color": "RED", "text": null } })
        )
        .unwrap()
        .to_string(),
        r#"{"h":{"color":"RED","text":null,"weight":1}}"#
    );
}

#[test]
fn input_field_defaults_are_themselves_coerced() {
    // `ids: [ID] = 4` is `["4"]`, and `{ color: GREEN }` gains Highlight's own defaults.
    assert_eq!(
        coerce("($t: Tagged)", json!({ "t": {} }))
            .unwrap()
            .to_string(),
        r#"{"t":{"ids":["4"],"highlight":{"color":"GREEN","text":"","weight":1}}}"#
    );
}

#[test]
fn unknown_and_missing_input_fields_are_refused() {
    assert_eq!(
        coerce(
            "($h: Highlight)",
            json!({ "h": { "color": "RED", "colour": "RED" } })
        ),
        refusal(
            r#"Variable "$h" got invalid value {"color":"RED","colour":"RED"}; Field "colour" is not defined by type "Highlight"."#
        )
    );
    assert_eq!(
        coerce("($h: Highlight)", json!({ "h": { "text": "hi" } })),
        refusal(
            r#"Variable "$h" got invalid value {"text":"hi"}; Field "color" of required type "HighlightColor!" was not provided."#
        )
    );
}

#[test]
fn problems_deep_in_a_list_of_input_objects_name_their_path() {
    assert_eq!(
        coerce(
            "($input: Page!)",
            json!({ "input": { "items": [{ "color": "RED" }, { "color": 3 }] } })
        ),
        refusal(
            r#"Variable "$input" got invalid value 3 at "input.items[1].color"; Enum "HighlightColor" cannot represent non-string value: 3."#
        )
    );
    // A single input object where a list of them is expected is a list of one.
    assert_eq!(
        coerce(
            "($input: Page!)",
            json!({ "input": { "title": "t", "items": { "color": "RED" } } })
        ),
        Ok(json!({
            "input": {
                "title": "t",
                "items": [{ "color": "RED", "text": "", "weight": 1 }],
            },
        }))
    );
}

#[test]
fn variables_the_operation_does_not_define_are_dropped() {
    assert_eq!(
        coerce("($x: Int)", json!({ "x": 1, "extra": { "any": "thing" } })),
        Ok(json!({ "x": 1 }))
    );
}

#[test]
fn a_variable_type_must_name_an_input_type() {
    assert_eq!(
        coerce("($x: Nope, $q: [Query])", json!({})),
        Err(vec![
            r#"Variable "$x" expected value of type "Nope" which cannot be used as an input type."#
                .to_owned(),
            r#"Variable "$q" expected value of type "[Query]" which cannot be used as an input type."#
                .to_owned(),
        ])
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let problems = coerce_with_locations(
        "(\n  $a: Int!,\n  $b: [Highlight],\n  $c: ID\n)",
        json!({
            "b": [{ "color": "PINK", "weight": "heavy" }, { "text": 1 }],
            "c": false,
        }),
    )
    .unwrap_err();
    assert_eq!(
        problems,
        vec![
            Problem {
                message: r#"Variable "$a" of required type "Int!" was not provided."#.to_owned(),
                locations: vec![(2, 3)],
            },
            Problem {
                message: r#"Variable "$b" got invalid value "PINK" at "b[0].color"; Value "PINK" does not exist in "HighlightColor" enum."#
                    .to_owned(),
                locations: vec![(3, 3)],
            },
            Problem {
                message: r#"Variable "$b" got invalid value "heavy" at "b[0].weight"; Int cannot represent non-integer value: "heavy""#
                    .to_owned(),
                locations: vec![(3, 3)],
            },
            Problem {
                message: r#"Variable "$b" got invalid value 1 at "b[1].text"; String cannot represent a non string value: 1"#
                    .to_owned(),
                locations: vec![(3, 3)],
            },
            Problem {
                message: r#"Variable "$b" got invalid value {"text":1} at "b[1]"; Field "color" of required type "HighlightColor!" was not provided."#
                    .to_owned(),
                locations: vec![(3, 3)],
            },
            Problem {
                message: r#"Variable "$c" got invalid value false; ID cannot represent value: false"#
                    .to_owned(),
                locations: vec![(4, 3)],
            },
        ]
    );
}

#[test]
fn long_values_are_cut_short_in_messages() {
    let long = "x".repeat(200);
    let Err(messages) = coerce_one("Int", json!(long)) else {
        panic!("a string is no Int");
    };
    let shown = format!("\"{}…", "x".repeat(99));
    assert_eq!(
        messages,
        vec![format!(
            "Variable \"$v\" got invalid value {shown}; Int cannot represent non-integer value: {shown}"
        )]
    );
}

/// A hostile value costs no more than its size: an object with 100,000 unknown fields (each
/// problem once showed the whole object) or a list of 100,000 wrong items stops at graphql-js's
/// limit of 50 problems, with one more that says so.
#[test]
fn coercion_stops_at_fifty_problems() {
    let unknown: Map<String, Value> = (0..100_000)
        .map(|index| (format!("k{index}"), json!(0)))
        .collect();
    let mut highlight = unknown.clone();
    highlight.insert("color".to_owned(), json!("RED"));
    for (variable_type, value) in [
        ("Highlight", Value::Object(highlight)),
        ("[Int]", json!(vec!["x"; 100_000])),
    ] {
        let Err(messages) = coerce_one(variable_type, value) else {
            panic!("{variable_type}: refused");
        };
        assert_eq!(messages.len(), MAX_PROBLEMS + 1, "{variable_type}");
        assert_eq!(messages.last().map(String::as_str), Some(TOO_MANY_PROBLEMS));
        for message in &messages[..MAX_PROBLEMS] {
            assert!(
                message.starts_with("Variable \"$v\" got invalid value"),
                "{message}"
            );
            assert!(
                message.len() < 400,
                "a message shows a prefix only: {message}"
            );
        }
    }

    // Across variables too: 60 wrong variables, 50 problems and the last word.
    let signature = format!(
        "({})",
        (0..60)
            .map(|index| format!("$v{index}: Int"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let provided: Map<String, Value> = (0..60)
        .map(|index| (format!("v{index}"), json!("x")))
        .collect();
    let Err(messages) = coerce(&signature, Value::Object(provided)) else {
        panic!("strings are no Ints");
    };
    assert_eq!(messages.len(), MAX_PROBLEMS + 1);
    assert_eq!(
        messages[MAX_PROBLEMS - 1],
        r#"Variable "$v49" got invalid value "x"; Int cannot represent non-integer value: "x""#
    );
    assert_eq!(messages[MAX_PROBLEMS], TOO_MANY_PROBLEMS);
}

#[test]
fn literals_convert_to_json() {
    let definitions = definitions(
        r#"($v: JSON = { list: [1, 2.5, "s", true, null, RED], nested: { deep: [] } })"#,
    );
    let literal = definitions[0].default_value.as_ref().unwrap();
    assert_eq!(
        literal_to_json(literal).to_string(),
        r#"{"list":[1,2.5,"s",true,null,"RED"],"nested":{"deep":[]}}"#
    );
}

//! Why a JSON document could not be read, said without quoting any of its values: a document
//! may hold a private key (a service-account file) or personal data (a webhook's payload), and
//! the reason is logged or answered. serde's data errors quote the mistyped value
//! (`invalid type: string "…"`, `unknown variant "…"`); only a missing field's name is kept.

/// `error`'s reason without the document's values: a missing field by name, a mistyped or
/// unknown value only as such; syntax errors by position (they quote nothing). The position
/// is left out when there is none (a document read from a `serde_json::Value`).
pub fn without_values(error: &serde_json::Error) -> String {
    let position = match error.line() {
        0 => String::new(),
        line => format!(" (line {line}, column {})", error.column()),
    };
    match error.classify() {
        serde_json::error::Category::Data => {
            // serde's own message for a missing field begins the message; any other data
            // error may quote a value (which may itself hold these words).
            let message = error.to_string();
            if message.starts_with("missing field `") {
                // (Its own position, if any, is written again below.)
                let field = message.split(" at line ").next().unwrap_or("");
                format!("{field}{position}")
            } else {
                format!("a field has the wrong type or value{position}")
            }
        }
        _ => format!("not JSON{position}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Shape {
        id: u64,
        kind: Kind,
    }

    #[derive(Debug, serde::Deserialize)]
    enum Kind {
        A,
    }

    fn reason(text: &str) -> String {
        without_values(&serde_json::from_str::<Shape>(text).unwrap_err())
    }

    #[test]
    fn no_value_of_the_document_is_quoted() {
        let mistyped = reason(r#"{"id": "alice@example.com", "kind": "A"}"#);
        assert_eq!(
            mistyped,
            "a field has the wrong type or value (line 1, column 26)"
        );
        let unknown = reason(r#"{"id": 1, "kind": "alice@example.com"}"#);
        assert!(!unknown.contains("alice"), "{unknown}");
        let posing = reason(r#"{"id": "missing field alice@example.com", "kind": "A"}"#);
        assert!(!posing.contains("alice"), "{posing}");
        assert_eq!(
            reason(r#"{"kind": "A"}"#),
            "missing field `id` (line 1, column 13)"
        );
        assert_eq!(reason(r#"{"id": 1,"#), "not JSON (line 1, column 9)");
        let from_value = serde_json::from_value::<Shape>(serde_json::json!({"kind": "A"}));
        assert_eq!(
            without_values(&from_value.unwrap_err()),
            "missing field `id`"
        );
    }
}

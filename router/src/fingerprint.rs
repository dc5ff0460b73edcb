//! Fingerprints of JSON values, computed by walking them (no serialisation, no allocation):
//! how the executor spots identical representations and the transport identical in-flight
//! requests, both on the hot path of every request.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::LazyLock;

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::value::{Object, Value};

/// Feeds `value` to `state`: equal values (same key order) give equal hashes.
pub fn hash_value<H: Hasher>(value: &Value, state: &mut H) {
    match value {
        Value::Null => state.write_u8(0),
        Value::Bool(flag) => {
            state.write_u8(1);
            flag.hash(state);
        }
        Value::Number(number) => {
            state.write_u8(2);
            number.hash(state);
        }
        Value::String(text) => {
            state.write_u8(3);
            text.as_str().hash(state);
        }
        Value::Array(items) => {
            state.write_u8(4);
            state.write_usize(items.len());
            for item in items {
                hash_value(item, state);
            }
        }
        Value::Object(fields) => {
            state.write_u8(5);
            state.write_usize(fields.len());
            for (key, item) in fields.iter() {
                key.as_str().hash(state);
                hash_value(item, state);
            }
        }
    }
}

/// A 64-bit fingerprint, for lookups that confirm a match with `==` (so a fast hash, foldhash,
/// does: a collision costs a comparison, never a wrong answer).
pub fn fingerprint64(value: &Value) -> u64 {
    static KEYS: LazyLock<foldhash::fast::RandomState> =
        LazyLock::new(foldhash::fast::RandomState::default);
    let mut hasher = KEYS.build_hasher();
    hash_value(value, &mut hasher);
    hasher.finish()
}

/// The next step of a response's lineage (see [`crate::derived::Lineage`]): the keyed hash of
/// the lineage so far, a fetch and the answer it merged.
pub fn lineage_step(previous: u128, fetch: u64, answer: u64) -> u128 {
    let mut hasher = keyed_hasher();
    hasher.write_u128(previous);
    hasher.write_u64(fetch);
    hasher.write_u64(answer);
    hasher.finish128().into()
}

/// A keyed 128-bit hasher: SipHash-1-3 with its 128-bit output, under a key drawn at random
/// once per process, so nobody outside can craft two inputs that share a fingerprint.
fn keyed_hasher() -> SipHasher13 {
    static KEY: LazyLock<(u64, u64)> = LazyLock::new(|| {
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).expect("the operating system's random numbers");
        let (first, second) = key.split_at(8);
        (
            u64::from_le_bytes(first.try_into().expect("8 bytes")),
            u64::from_le_bytes(second.try_into().expect("8 bytes")),
        )
    });
    SipHasher13::new_with_keys(KEY.0, KEY.1)
}

/// A 128-bit fingerprint of a subgraph request (keyed SipHash-1-3-128, one pass over the
/// subgraph name, the caller's count of mutations, the query, the variables and the headers):
/// used as the identity of the request itself, where comparing whole requests would cost as
/// much as sending them. Two different requests share a fingerprint with a probability of
/// about 2^-128.
pub fn request_fingerprint(
    subgraph: &str,
    query: &str,
    variables: &Object,
    headers: &[(String, String)],
    writes_seen: u64,
) -> u128 {
    let mut hasher = keyed_hasher();
    subgraph.hash(&mut hasher);
    hasher.write_u64(writes_seen);
    query.hash(&mut hasher);
    hasher.write_usize(variables.len());
    for (name, value) in variables.iter() {
        name.as_str().hash(&mut hasher);
        hash_value(value, &mut hasher);
    }
    hasher.write_usize(headers.len());
    for (name, value) in headers {
        name.hash(&mut hasher);
        value.hash(&mut hasher);
    }
    hasher.finish128().into()
}

/// What makes two client operations the same for inbound sharing: they are answered alike only
/// when all of it is equal.
pub struct OperationIdentity<'a> {
    /// The supergraph version that answers.
    pub supergraph_version: &'a str,
    /// The operation's hash (of its normalized document and selected operation).
    pub operation_hash: &'a str,
    pub operation_name: Option<&'a str>,
    /// The variables as the client sent them.
    pub variables: &'a serde_json::Map<String, serde_json::Value>,
    /// The caller with its plan and scopes (its serialised form, the one subgraphs are told).
    pub caller: &'a gospelib_kit::caller::Caller,
    /// The caller's count of mutations when the operation was sent (see [`crate::writes`]).
    pub writes_seen: u64,
    /// Headers sent with every subgraph fetch.
    pub subgraph_headers: &'a [(String, String)],
    /// Whether it is a deferred operation's full half, projected with defer boundaries (a
    /// client may not send that text itself: its names are the router's).
    pub defer_boundaries: bool,
}

/// A 128-bit fingerprint of a client operation (keyed SipHash-1-3-128, as
/// [`request_fingerprint`]): the key under which identical operations in flight share one run.
pub fn operation_fingerprint(operation: &OperationIdentity<'_>) -> u128 {
    let mut hasher = keyed_hasher();
    operation.supergraph_version.hash(&mut hasher);
    operation.operation_hash.hash(&mut hasher);
    operation.operation_name.hash(&mut hasher);
    hasher.write_u64(operation.writes_seen);
    hasher.write_u8(u8::from(operation.defer_boundaries));
    // The variables and the caller are fed as their JSON text, written straight into the
    // hasher (no buffer): equal values in equal order give equal text.
    let mut writer = HashWriter(&mut hasher);
    serde_json::to_writer(&mut writer, operation.variables)
        .expect("writing into a hasher cannot fail");
    serde_json::to_writer(&mut writer, operation.caller)
        .expect("writing into a hasher cannot fail");
    hasher.write_usize(operation.subgraph_headers.len());
    for (name, value) in operation.subgraph_headers {
        name.hash(&mut hasher);
        value.hash(&mut hasher);
    }
    hasher.finish128().into()
}

/// Bytes written into a hasher.
struct HashWriter<'a, H: Hasher>(&'a mut H);

impl<H: Hasher> std::io::Write for HashWriter<'_, H> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.write(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(value: serde_json::Value) -> Value {
        value.into()
    }

    fn object(value: serde_json::Value) -> Object {
        match json(value) {
            Value::Object(object) => object,
            _ => Object::new(),
        }
    }

    #[test]
    fn equal_values_share_a_fingerprint_and_different_ones_do_not() {
        let a = json(
            serde_json::json!({"__typename": "Product", "upc": "1", "dims": [1, 2.5, null, true]}),
        );
        let b = json(
            serde_json::json!({"__typename": "Product", "upc": "1", "dims": [1, 2.5, null, true]}),
        );
        assert_eq!(fingerprint64(&a), fingerprint64(&b));
        for other in [
            json(
                serde_json::json!({"__typename": "Product", "upc": "2", "dims": [1, 2.5, null, true]}),
            ),
            json(
                serde_json::json!({"__typename": "Product", "upc": 1, "dims": [1, 2.5, null, true]}),
            ),
            json(
                serde_json::json!({"__typename": "Product", "upc": "1", "dims": [[1, 2.5], null, true]}),
            ),
            json(serde_json::json!({"__typename": "Product", "upc": "1"})),
        ] {
            assert_ne!(fingerprint64(&a), fingerprint64(&other), "{other:?}");
        }
    }

    #[test]
    fn a_request_fingerprint_covers_subgraph_writes_query_variables_and_headers() {
        let variables = object(serde_json::json!({"n": 1}));
        let none: &[(String, String)] = &[];
        let base = request_fingerprint("a", "{ x }", &variables, none, 0);
        assert_eq!(base, request_fingerprint("a", "{ x }", &variables, none, 0));
        assert_ne!(base, request_fingerprint("b", "{ x }", &variables, none, 0));
        assert_ne!(base, request_fingerprint("a", "{ y }", &variables, none, 0));
        let other = object(serde_json::json!({"n": 2}));
        assert_ne!(base, request_fingerprint("a", "{ x }", &other, none, 0));
        assert_ne!(base, request_fingerprint("a", "{ x }", &variables, none, 1));
        let caller = |id: &str| vec![("x-caller".to_owned(), id.to_owned())];
        let alice = request_fingerprint("a", "{ x }", &variables, &caller("alice"), 0);
        assert_ne!(base, alice);
        assert_ne!(
            alice,
            request_fingerprint("a", "{ x }", &variables, &caller("bob"), 0)
        );
    }

    #[test]
    fn an_operation_fingerprint_covers_variables_caller_writes_version_and_boundaries() {
        let variables = |v: serde_json::Value| match v {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        let ada = gospelib_kit::caller::Caller::user(uuid::Uuid::from_u128(1));
        let bob = gospelib_kit::caller::Caller::user(uuid::Uuid::from_u128(2));
        let one = variables(serde_json::json!({"id": "gen.1.1"}));
        let two = variables(serde_json::json!({"id": "gen.1.2"}));
        let identity = |version, variables, caller| OperationIdentity {
            supergraph_version: version,
            operation_hash: "h",
            operation_name: None,
            variables,
            caller,
            writes_seen: 0,
            subgraph_headers: &[],
            defer_boundaries: false,
        };
        let base = operation_fingerprint(&identity("1", &one, &ada));
        assert_eq!(base, operation_fingerprint(&identity("1", &one, &ada)));
        assert_ne!(base, operation_fingerprint(&identity("1", &two, &ada)));
        assert_ne!(base, operation_fingerprint(&identity("1", &one, &bob)));
        assert_ne!(base, operation_fingerprint(&identity("2", &one, &ada)));
        let after_a_mutation = OperationIdentity {
            writes_seen: 2,
            ..identity("1", &one, &ada)
        };
        assert_ne!(base, operation_fingerprint(&after_a_mutation));
        let full_half = OperationIdentity {
            defer_boundaries: true,
            ..identity("1", &one, &ada)
        };
        assert_ne!(base, operation_fingerprint(&full_half));
        let mut premium = ada.clone();
        premium.scopes.push("ai_features".to_owned());
        assert_ne!(base, operation_fingerprint(&identity("1", &one, &premium)));
    }
}

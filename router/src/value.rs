//! The JSON the executor works on: subgraph answers are parsed into it, merged, projected and
//! serialised from it. It differs from `serde_json::Value` where a router's hot path feels it:
//! objects are small vectors kept in insertion order (a GraphQL response lists fields in the
//! order they were selected; lookups in objects of a few fields are a short scan), and strings
//! up to 24 bytes (most keys and many values) live inline, so parsing, copying and freeing a
//! subgraph's answer allocates little.

use std::fmt;

use compact_str::CompactString;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A JSON string or object key.
pub type Str = CompactString;

/// A JSON value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(Str),
    Array(Vec<Value>),
    Object(Object),
}

/// A JSON object: its fields in insertion order, keys unique.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object(Vec<(Str, Value)>);

impl Object {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Self(Vec::with_capacity(capacity))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Where `key` is among the fields.
    pub fn position(&self, key: &str) -> Option<usize> {
        self.0.iter().position(|(k, _)| k == key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `key`'s position and value, trying `hint` first (where the caller expects it).
    pub fn find_from(&self, hint: usize, key: &str) -> Option<(usize, &Value)> {
        if let Some((k, value)) = self.0.get(hint)
            && k == key
        {
            return Some((hint, value));
        }
        let position = self.position(key)?;
        Some((position, &self.0[position].1))
    }

    /// The field at `position`.
    pub fn entry_at(&self, position: usize) -> Option<(&Str, &Value)> {
        self.0.get(position).map(|(k, v)| (k, v))
    }

    pub fn value_at_mut(&mut self, position: usize) -> Option<&mut Value> {
        self.0.get_mut(position).map(|(_, v)| v)
    }

    /// Sets `key` to `value`: in place when the key is there, else as the last field.
    pub fn insert(&mut self, key: impl Into<Str> + AsRef<str>, value: Value) {
        match self.get_mut(key.as_ref()) {
            Some(slot) => *slot = value,
            None => self.0.push((key.into(), value)),
        }
    }

    /// Adds a field known not to be there yet (a fresh object's distinct keys).
    pub fn push_unique(&mut self, key: impl Into<Str>, value: Value) {
        self.0.push((key.into(), value));
    }

    /// Makes room for `additional` more fields. A full object is moved into a new allocation
    /// rather than grown in place: the allocator's `realloc` of these sizes costs about four
    /// times a fresh allocation, a copy and a free (measured with callgrind on merges, where
    /// every entity an entity fetch resolves grows by the fields it brings).
    pub fn reserve(&mut self, additional: usize) {
        if self.0.capacity() - self.0.len() >= additional {
            return;
        }
        let mut grown = Vec::with_capacity(self.0.len() + additional);
        grown.append(&mut self.0);
        self.0 = grown;
    }

    /// Removes `key`, keeping the other fields' order.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let position = self.position(key)?;
        Some(self.0.remove(position).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Str, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl IntoIterator for Object {
    type Item = (Str, Value);
    type IntoIter = std::vec::IntoIter<(Str, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(Str, Value)> for Object {
    fn from_iter<I: IntoIterator<Item = (Str, Value)>>(iter: I) -> Self {
        let mut object = Object::new();
        for (key, value) in iter {
            object.insert(key, value);
        }
        object
    }
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    /// An object's field.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        match self {
            Value::Object(object) => object.get_mut(key),
            _ => None,
        }
    }

    /// Moves the value out, leaving null.
    pub fn take(&mut self) -> Value {
        std::mem::take(self)
    }
}

impl From<serde_json::Value> for Value {
    fn from(value: serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(flag) => Value::Bool(flag),
            serde_json::Value::Number(number) => Value::Number(number),
            serde_json::Value::String(text) => Value::String(text.into()),
            serde_json::Value::Array(items) => {
                Value::Array(items.into_iter().map(Value::from).collect())
            }
            serde_json::Value::Object(fields) => Value::Object(Object::from(fields)),
        }
    }
}

/// A value as async-graphql holds one (an in-process subgraph's request variables), built
/// straight from ours: the same tree JSON would give, without the JSON.
impl From<&Value> for async_graphql::Value {
    fn from(value: &Value) -> Self {
        match value {
            Value::Null => async_graphql::Value::Null,
            Value::Bool(flag) => async_graphql::Value::Boolean(*flag),
            Value::Number(number) => async_graphql::Value::Number(number.clone()),
            Value::String(text) => async_graphql::Value::String(text.to_string()),
            Value::Array(items) => {
                async_graphql::Value::List(items.iter().map(async_graphql::Value::from).collect())
            }
            Value::Object(object) => async_graphql::Value::Object(
                object
                    .iter()
                    .map(|(key, value)| (async_graphql::Name::new(key), value.into()))
                    .collect(),
            ),
        }
    }
}

/// A value async-graphql produced (an in-process subgraph's response data), as ours: what
/// serialising it to JSON and reading that back would give, without the JSON. An enum is its
/// name; bytes are what their JSON would be (a list of numbers).
impl From<async_graphql::Value> for Value {
    fn from(value: async_graphql::Value) -> Self {
        match value {
            async_graphql::Value::Null => Value::Null,
            async_graphql::Value::Boolean(flag) => Value::Bool(flag),
            async_graphql::Value::Number(number) => Value::Number(number),
            async_graphql::Value::String(text) => Value::String(text.into()),
            async_graphql::Value::Enum(name) => Value::String(name.as_str().into()),
            async_graphql::Value::List(items) => {
                Value::Array(items.into_iter().map(Value::from).collect())
            }
            async_graphql::Value::Object(fields) => Value::Object(Object(
                fields
                    .into_iter()
                    .map(|(key, value)| (key.as_str().into(), value.into()))
                    .collect(),
            )),
            binary @ async_graphql::Value::Binary(_) => serde_json::to_value(binary)
                .map(Value::from)
                .unwrap_or(Value::Null),
        }
    }
}

impl From<serde_json::Map<String, serde_json::Value>> for Object {
    fn from(fields: serde_json::Map<String, serde_json::Value>) -> Self {
        Object(
            fields
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        )
    }
}

impl From<Value> for serde_json::Value {
    fn from(value: Value) -> Self {
        match value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(flag) => serde_json::Value::Bool(flag),
            Value::Number(number) => serde_json::Value::Number(number),
            Value::String(text) => serde_json::Value::String(text.into()),
            Value::Array(items) => {
                serde_json::Value::Array(items.into_iter().map(Into::into).collect())
            }
            Value::Object(fields) => serde_json::Value::Object(
                fields
                    .into_iter()
                    .map(|(key, value)| (key.into(), value.into()))
                    .collect(),
            ),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(flag) => serializer.serialize_bool(*flag),
            Value::Number(number) => number.serialize(serializer),
            Value::String(text) => serializer.serialize_str(text),
            Value::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(object) => object.serialize(serializer),
        }
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (key, value) in self.iter() {
            map.serialize_entry(key.as_str(), value)?;
        }
        map.end()
    }
}

/// Appends `value` as JSON text (what `Serialize` writes, without a serializer in between).
pub fn write_json(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_json_number(out, number),
        Value::String(text) => write_json_str(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        Value::Object(object) => {
            out.push(b'{');
            for (index, (key, item)) in object.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_json_str(out, key);
                out.push(b':');
                write_json(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Appends `number` as serde_json writes it: integers (most numbers in answers) by `itoa`
/// without a serializer and an `io::Write` in between, floats by serde_json itself (its
/// exponent format, `1e+300`, is its own).
fn write_json_number(out: &mut Vec<u8>, number: &serde_json::Number) {
    if let Some(unsigned) = number.as_u64() {
        out.extend_from_slice(itoa::Buffer::new().format(unsigned).as_bytes());
    } else if let Some(signed) = number.as_i64() {
        out.extend_from_slice(itoa::Buffer::new().format(signed).as_bytes());
    } else {
        serde_json::to_writer(&mut *out, number).expect("writing to a Vec cannot fail");
    }
}

/// Appends `text` as a JSON string, escaped as serde_json escapes it.
pub fn write_json_str(out: &mut Vec<u8>, text: &str) {
    fn needs_escape(byte: u8) -> bool {
        byte < 0x20 || byte == b'"' || byte == b'\\'
    }
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut clean_from = 0;
    // Most text needs no escape at all: whole 8-byte words are skipped while none of their
    // bytes does, then the rest is looked at byte by byte.
    let mut start = 0;
    while start + 8 <= bytes.len() {
        let word = u64::from_le_bytes(bytes[start..start + 8].try_into().expect("8 bytes"));
        if word_needs_escape(word) {
            break;
        }
        start += 8;
    }
    for (index, &byte) in bytes.iter().enumerate().skip(start) {
        if !needs_escape(byte) {
            continue;
        }
        out.extend_from_slice(&bytes[clean_from..index]);
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            control => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(control >> 4)]);
                out.push(HEX[usize::from(control & 0xf)]);
            }
        }
        clean_from = index + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

/// Whether any of a word's eight bytes is below 0x20, `"` or `\\` (exact, from the classic
/// bit tricks: a byte below n, a byte equal to b).
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |n: u64| word.wrapping_sub(ONES * n) & !word & HIGHS;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    below(0x20) | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\')))
        != 0
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Deserialize::deserialize(deserializer)
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Value, E> {
        Ok(Value::Bool(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Value, E> {
        Ok(Value::Number(number.into()))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Value, E> {
        Ok(Value::Number(number.into()))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(number)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that JSON cannot hold"))
    }

    fn visit_str<E>(self, text: &str) -> Result<Value, E> {
        Ok(Value::String(text.into()))
    }

    fn visit_string<E>(self, text: String) -> Result<Value, E> {
        Ok(Value::String(text.into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        // JSON gives no size; room for a few fields, and for those an entity merge adds later.
        let mut object = Object::with_capacity(map.size_hint().unwrap_or(8).min(256));
        // A repeated key keeps its last value, as serde_json does. Finding it is a scan of the
        // keys so far, which is quadratic in an object's width: past a few dozen keys (a
        // user's `JSON` value can have thousands) they are found through an index instead.
        let mut index: Option<std::collections::HashMap<Str, usize>> = None;
        while let Some(key) = map.next_key::<KeyString>()? {
            let value = map.next_value()?;
            let key = key.0;
            if let Some(index) = index.as_mut() {
                match index.get(&key) {
                    Some(&position) => object.0[position].1 = value,
                    None => {
                        index.insert(key.clone(), object.0.len());
                        object.push_unique(key, value);
                    }
                }
                continue;
            }
            object.insert(key, value);
            if object.len() > INDEXED_WIDTH {
                index = Some(
                    object
                        .0
                        .iter()
                        .enumerate()
                        .map(|(position, (key, _))| (key.clone(), position))
                        .collect(),
                );
            }
        }
        Ok(Value::Object(object))
    }
}

/// The width past which reading an object finds repeated keys through an index.
const INDEXED_WIDTH: usize = 32;

/// An object key, read without an intermediate `String`.
struct KeyString(Str);

impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyString;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an object key")
            }
            fn visit_str<E>(self, key: &str) -> Result<KeyString, E> {
                Ok(KeyString(key.into()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every escaped byte at every position of strings around the word size, beside plain
    /// ASCII and multi-byte UTF-8, written as serde_json writes them.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them_wherever_the_byte_is() {
        let specials = [
            '"', '\\', '\n', '\r', '\t', '\u{8}', '\u{c}', '\u{0}', '\u{1f}',
        ];
        let plain = ['a', ' ', '~', '\u{7f}', 'é', '✝', '\u{1F54A}'];
        for length in 0..=33 {
            for filler in plain {
                let base: Vec<char> = std::iter::repeat_n(filler, length).collect();
                let mut cases = vec![base.iter().collect::<String>()];
                for position in 0..=length {
                    for special in specials {
                        let mut chars = base.clone();
                        chars.insert(position, special);
                        cases.push(chars.into_iter().collect());
                    }
                }
                for text in cases {
                    let mut ours = Vec::new();
                    write_json_str(&mut ours, &text);
                    assert_eq!(
                        String::from_utf8(ours).unwrap(),
                        serde_json::to_string(&text).unwrap(),
                        "{text:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn parsing_and_printing_round_trip_in_order() {
        let text =
            r#"{"z":1,"a":[true,null,-2,2.5,"x"],"m":{"long key that is over 24 bytes":"v"}}"#;
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
        let through_serde_json: serde_json::Value = value.clone().into();
        assert_eq!(Value::from(through_serde_json), value);
    }

    #[test]
    fn insert_replaces_in_place_and_remove_keeps_order() {
        let mut object = Object::new();
        object.insert("b", Value::Bool(true));
        object.insert("a", Value::Null);
        object.insert("b", Value::Bool(false));
        object.insert("c", Value::Null);
        assert_eq!(object.remove("a"), Some(Value::Null));
        let keys: Vec<&str> = object.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(object.get("b"), Some(&Value::Bool(false)));
        assert_eq!(
            serde_json::Value::from(Value::Object(object)),
            json!({"b": false, "c": null})
        );
    }

    #[test]
    fn the_writer_writes_what_serde_json_writes() {
        let value = json!({
            "plain": "text", "escapes": "quote \" backslash \\ newline \n tab \t \u{1} \u{1f} bell \u{8} \u{c} é ✓ /",
            "numbers": [0, -7, 18446744073709551615u64, -9223372036854775808i64, 2.5, 1e300,
                -0.0, 0.1, 1e-7, 1e21, 123456789.0, 1.7976931348623157e308, 5e-324],
            "nested": {"a": [true, false, null, {}, []]}
        });
        let mut written = Vec::new();
        write_json(&mut written, &Value::from(value.clone()));
        assert_eq!(
            String::from_utf8(written).unwrap(),
            serde_json::to_string(&value).unwrap()
        );
    }

    #[test]
    fn reserving_room_keeps_the_fields_in_order() {
        let mut object = Object::new();
        object.push_unique("a", Value::Bool(true));
        object.push_unique("b", Value::Null);
        object.reserve(3);
        object.push_unique("c", Value::String("x".into()));
        assert_eq!(
            serde_json::Value::from(Value::Object(object)),
            json!({"a": true, "b": null, "c": "x"})
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_last_value() {
        let value: Value = serde_json::from_str(r#"{"a":1,"a":2}"#).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), r#"{"a":2}"#);
    }

    /// Wide objects (read through an index past `INDEXED_WIDTH` keys) keep serde_json's
    /// answer: every key in its first place, each with its last value.
    #[test]
    fn a_wide_object_reads_as_serde_json_reads_it() {
        let mut text = String::from("{");
        for i in 0..5_000 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        // Repeats of keys before and after the index began, and a last new key.
        text.push_str(r#""k3":"early","k4000":"late","k3":"again","last":true}"#);
        let ours: Value = serde_json::from_str(&text).unwrap();
        let theirs: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::Value::from(ours.clone()), theirs);
        let object = ours.as_object().unwrap();
        assert_eq!(object.len(), 5_001);
        assert_eq!(object.get("k3"), Some(&Value::String("again".into())));
        assert_eq!(object.get("k4000"), Some(&Value::String("late".into())));
    }
}

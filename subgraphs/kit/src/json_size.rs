//! How many values a request's JSON holds, counted before it is parsed. A parsed JSON value
//! takes ~80 bytes whatever its text (`0,` is two), and a request's variables are copied a few
//! times before the operation's limits are known: a 2 MiB body of `[0,0,0,…]` (a million
//! values) would cost hundreds of MB. Bodies and WebSocket messages with more than
//! [`MAX_VALUES`] are refused unread ([`values_in`] scans the bytes once, allocating nothing).

/// The most JSON values one request (or WebSocket message) may hold: far more than any
/// operation's variables need (a note's 100 KiB rich-text body is a few thousand), far fewer
/// than a body of the size limit can spell.
pub const MAX_VALUES: usize = 100_000;

/// The message of a refusal.
pub fn too_many_values() -> String {
    format!("the request holds more than {MAX_VALUES} JSON values")
}

/// An upper bound of the values in the JSON text `json` (scalars, arrays and objects; object
/// keys are not values): one, plus one per `,`, `[` and `{` outside strings. Text that is not
/// JSON gets a number too; the parser then refuses it.
pub fn values_in(json: &[u8]) -> usize {
    let (mut count, mut in_string, mut escaped) = (1usize, false, false);
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b',' | b'[' | b'{' => count += 1,
            _ => {}
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_outside_strings() {
        assert_eq!(values_in(b"7"), 1);
        assert_eq!(values_in(b"[1,2,3]"), 4);
        assert_eq!(values_in(br#"{"a":1,"b":[2]}"#), 4);
        // Structural characters inside strings, escaped quotes included, are text.
        assert_eq!(values_in(br#"{"q":"{ a, b [c] \" , { }"}"#), 2);
        assert_eq!(values_in(br#"["\\",1]"#), 3);
        let zeros = format!("[{}0]", "0,".repeat(200_000));
        assert!(values_in(zeros.as_bytes()) > MAX_VALUES);
    }
}

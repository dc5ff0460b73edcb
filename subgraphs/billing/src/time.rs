//! Unix seconds, and their RFC 3339 form: the kit's ([`gospelib_kit::time`]), which every
//! GospeLib timestamp is written with.

pub use gospelib_kit::time::{now_secs, rfc3339};

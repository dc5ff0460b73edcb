//! The mutations' inputs and their validation: names and device fields are checked (and
//! trimmed) before anything is written.

use async_graphql::{InputObject, Result};
use gospelib_kit::text::has_layout_controls;

use super::errors::validation;
use crate::store::Platform;

/// The longest first name, last name or device name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// The longest push token, in characters (printable ASCII, so also in bytes).
pub const MAX_TOKEN_CHARS: usize = 4096;

/// Changes to the caller's own profile. An absent field is left as it is; an empty one (after
/// trimming) is cleared.
#[derive(InputObject, Debug, Clone, Default)]
pub struct UpdateMeInput {
    /// At most 100 characters, trimmed.
    pub first_name: Option<String>,
    /// At most 100 characters, trimmed.
    pub last_name: Option<String>,
}

/// A device to send push notifications to.
#[derive(InputObject, Debug, Clone)]
pub struct RegisterDeviceInput {
    pub platform: Platform,
    /// The push token (APNs, FCM or Web Push): 1 to 4096 printable ASCII characters, no
    /// spaces. Never readable back.
    pub token: String,
    /// A label the user recognises ("Ada's iPhone"): at most 100 characters, trimmed. Left
    /// out or null, a device registered again keeps its name (the app registers at start-up
    /// without one); an empty name clears it.
    pub name: Option<String>,
}

/// A name field, trimmed: `None` when it is empty, an error when it is too long or holds
/// control characters or bidirectional overrides ([`has_layout_controls`]).
pub fn name(field: &str, value: &str) -> Result<Option<String>> {
    let trimmed = value.trim();
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(validation(format!(
            "`{field}` must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    if has_layout_controls(trimmed) {
        return Err(validation(format!(
            "`{field}` must not contain control characters or bidirectional overrides"
        )));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// A push token: as given, 1 to [`MAX_TOKEN_CHARS`] printable ASCII characters with no
/// spaces. The providers' tokens are all of that shape (APNs' hex, FCM's base64url with `:`),
/// and it keeps each `device.registered` event, which carries the token, to a few KB.
pub fn token(value: &str) -> Result<&str> {
    if value.is_empty() {
        return Err(validation("`token` must not be empty"));
    }
    if value.len() > MAX_TOKEN_CHARS {
        return Err(validation(format!(
            "`token` must be at most {MAX_TOKEN_CHARS} characters"
        )));
    }
    if !value.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(validation(
            "`token` must be printable ASCII characters without spaces",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_cleared_when_empty() {
        assert_eq!(name("firstName", "  Ada ").unwrap(), Some("Ada".into()));
        assert_eq!(name("firstName", "   ").unwrap(), None);
        assert_eq!(name("firstName", "").unwrap(), None);
        let longest = "é".repeat(MAX_NAME_CHARS);
        assert_eq!(name("firstName", &longest).unwrap(), Some(longest.clone()));
        assert!(name("firstName", &format!("{longest}x")).is_err());
        assert!(name("lastName", "a\0b").is_err());
        assert!(name("lastName", "a\nb").is_err());
        assert!(name("name", "\u{202E}enohPi s'adA").is_err());
        assert_eq!(
            name("lastName", "כהן\u{200F}").unwrap(),
            Some("כהן\u{200F}".into())
        );
    }

    #[test]
    fn tokens_are_bounded_and_never_blank() {
        assert_eq!(token("abc:def").unwrap(), "abc:def");
        assert!(token("").is_err());
        assert!(token("   ").is_err());
        assert!(token(&"t".repeat(MAX_TOKEN_CHARS)).is_ok());
        assert!(token(&"t".repeat(MAX_TOKEN_CHARS + 1)).is_err());
        assert!(token("a\0b").is_err());
        assert!(token("a b").is_err());
        assert!(token(" abc").is_err());
        assert!(token(&"é".repeat(MAX_TOKEN_CHARS / 2)).is_err());
    }
}

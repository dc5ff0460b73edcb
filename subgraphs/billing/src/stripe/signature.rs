//! Stripe's webhook signatures (`Stripe-Signature`), checked over the raw body before anything
//! of it is parsed.
//!
//! The header is a comma-separated list of `key=value` items:
//! `t=1492774577,v1=5257a869…,v0=6ffbb59b…`. `t` is the Unix time Stripe signed at; each `v1`
//! is a hex HMAC-SHA256, with the endpoint's signing secret (`whsec_…`, used as is, as bytes),
//! of `"{t}.{raw body}"`. There may be several `v1` (Stripe sends one per active secret while a
//! secret is being rolled): any one that matches is enough. Other schemes (`v0`, Stripe's test
//! scheme) are ignored. Each candidate is compared in constant time (`hmac`'s `verify_slice`),
//! and `t` must be within [`TOLERANCE`] of now, either way, so an old delivery cannot be
//! replayed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header Stripe signs with.
pub const HEADER: &str = "stripe-signature";

/// How far a signature's timestamp may be from now, either way.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// A signing secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the Stripe webhook signing secret is empty")]
    Empty,
    #[error("the Stripe webhook signing secret contains whitespace or control characters")]
    NotPrintable,
}

/// Why a delivery's signature was refused. The messages never contain the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed (expected `t=<unix time>,v1=<hex>`)")]
    Malformed,
    #[error("the Stripe-Signature header carries no v1 signature")]
    NoSignature,
    #[error("the signature's timestamp is more than {} seconds from now", TOLERANCE.as_secs())]
    OutsideTolerance,
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// Checks Stripe signatures with one endpoint's signing secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct StripeVerifier {
    secret: Vec<u8>,
    tolerance: Duration,
}

impl std::fmt::Debug for StripeVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeVerifier")
            .field("secret", &"[redacted]")
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl StripeVerifier {
    /// A verifier for the endpoint secret `secret` (`whsec_…`, surrounding whitespace trimmed).
    pub fn new(secret: &str) -> Result<Self, SecretError> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SecretError::NotPrintable);
        }
        Ok(Self {
            secret: secret.as_bytes().to_vec(),
            tolerance: TOLERANCE,
        })
    }

    /// Verifies `header` (the `Stripe-Signature` value, if any) for `body` now.
    pub fn verify(&self, header: Option<&str>, body: &[u8]) -> Result<(), VerifyError> {
        self.verify_at(header, body, unix_now())
    }

    /// Verifies `header` for `body` as of the Unix time `now`.
    pub fn verify_at(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let header = header.ok_or(VerifyError::Missing)?;
        let parsed = parse_header(header)?;
        if parsed.signatures.is_empty() {
            return Err(VerifyError::NoSignature);
        }
        let tolerance = i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX);
        if now.abs_diff(parsed.timestamp) > tolerance.unsigned_abs() {
            return Err(VerifyError::OutsideTolerance);
        }
        let mac = self.mac(parsed.timestamp_text, body);
        let matched = parsed
            .signatures
            .iter()
            .any(|signature| mac.clone().verify_slice(signature).is_ok());
        if matched {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    /// The `v1` signature of `body` at `timestamp`, as a hex string (what Stripe would send).
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        hex(&self
            .mac(&timestamp.to_string(), body)
            .finalize()
            .into_bytes())
    }

    fn mac(&self, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC accepts keys of any length");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

struct ParsedHeader<'a> {
    /// `t` as sent: the signed payload uses the text itself.
    timestamp_text: &'a str,
    timestamp: i64,
    /// The `v1` signatures that decode as 32 bytes of hex.
    signatures: Vec<Vec<u8>>,
}

fn parse_header(header: &str) -> Result<ParsedHeader<'_>, VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key.trim() {
            "t" if timestamp.is_none() => {
                let value = value.trim();
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(VerifyError::Malformed);
                }
                let parsed: i64 = value.parse().map_err(|_| VerifyError::Malformed)?;
                timestamp = Some((value, parsed));
            }
            "v1" => {
                if let Some(bytes) = unhex(value.trim()).filter(|bytes| bytes.len() == 32) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let (timestamp_text, timestamp) = timestamp.ok_or(VerifyError::Malformed)?;
    Ok(ParsedHeader {
        timestamp_text,
        timestamp,
        signatures,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// Hex (either case) to bytes; `None` when it is not hex.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"customer.created"}"#;
    const NOW: i64 = 1_492_774_577;

    fn verifier() -> StripeVerifier {
        StripeVerifier::new(SECRET).unwrap()
    }

    /// The reference computation, independent of the verifier: HMAC-SHA256 over "t.body".
    fn reference_signature(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex(&mac.finalize().into_bytes())
    }

    #[test]
    fn a_header_in_stripes_documented_format_verifies() {
        // The shape of Stripe's documentation example: `t`, then `v1`, then a `v0` (ignored).
        let v1 = reference_signature(SECRET, NOW, BODY);
        let header = format!(
            "t={NOW},v1={v1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
        );
        assert_eq!(verifier().verify_at(Some(&header), BODY, NOW), Ok(()));
        assert_eq!(verifier().sign(NOW, BODY), v1);
        // Upper-case hex and spaces after the commas are fine too.
        let loose = format!("t={NOW}, v1={}", v1.to_uppercase());
        assert_eq!(verifier().verify_at(Some(&loose), BODY, NOW), Ok(()));
    }

    #[test]
    fn a_known_vector_matches() {
        // HMAC-SHA256 with the key "whsec_test_secret" of "1492774577.{}", computed outside
        // Rust: printf '1492774577.{}' | openssl dgst -sha256 -hmac whsec_test_secret
        let expected = "53140ab8fa70c511cc40d5c9198af7dde7bbaee877038c056d8250c3bd3b2e11";
        assert_eq!(verifier().sign(NOW, b"{}"), expected);
        let header = format!("t={NOW},v1={expected}");
        assert_eq!(verifier().verify_at(Some(&header), b"{}", NOW), Ok(()));
    }

    #[test]
    fn any_one_matching_v1_among_several_is_enough() {
        let good = reference_signature(SECRET, NOW, BODY);
        let other = reference_signature("whsec_other", NOW, BODY);
        let header = format!("t={NOW},v1={other},v1=zz,v1={good}");
        assert_eq!(verifier().verify_at(Some(&header), BODY, NOW), Ok(()));
        let header = format!("t={NOW},v1={other}");
        assert_eq!(
            verifier().verify_at(Some(&header), BODY, NOW),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn bad_missing_and_stale_signatures_are_refused() {
        let good = reference_signature(SECRET, NOW, BODY);
        let v = verifier();
        assert_eq!(v.verify_at(None, BODY, NOW), Err(VerifyError::Missing));
        for malformed in [
            "",
            "garbage",
            "v1=abc",
            "t=,v1=00",
            "t=12a,v1=00",
            "t=-5,v1=00",
        ] {
            assert_eq!(
                v.verify_at(Some(malformed), BODY, NOW),
                Err(VerifyError::Malformed),
                "{malformed:?}"
            );
        }
        // Only v0 (Stripe's test scheme), or a v1 that is not a SHA-256 in hex.
        let only_v0 = format!("t={NOW},v0={good}");
        assert_eq!(
            v.verify_at(Some(&only_v0), BODY, NOW),
            Err(VerifyError::NoSignature)
        );
        let short = format!("t={NOW},v1={}", &good[..62]);
        assert_eq!(
            v.verify_at(Some(&short), BODY, NOW),
            Err(VerifyError::NoSignature)
        );
        // The body changed, or the timestamp changed, after signing.
        let header = format!("t={NOW},v1={good}");
        assert_eq!(
            v.verify_at(Some(&header), b"{\"id\":\"evt_2\"}", NOW),
            Err(VerifyError::Mismatch)
        );
        let moved = format!("t={},v1={good}", NOW + 1);
        assert_eq!(
            v.verify_at(Some(&moved), BODY, NOW),
            Err(VerifyError::Mismatch)
        );
        // Five minutes either way is the limit.
        assert_eq!(v.verify_at(Some(&header), BODY, NOW + 300), Ok(()));
        assert_eq!(v.verify_at(Some(&header), BODY, NOW - 300), Ok(()));
        assert_eq!(
            v.verify_at(Some(&header), BODY, NOW + 301),
            Err(VerifyError::OutsideTolerance)
        );
        assert_eq!(
            v.verify_at(Some(&header), BODY, NOW - 301),
            Err(VerifyError::OutsideTolerance)
        );
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert_eq!(StripeVerifier::new("  ").unwrap_err(), SecretError::Empty);
        assert_eq!(
            StripeVerifier::new("whsec_a b").unwrap_err(),
            SecretError::NotPrintable
        );
        let shown = format!("{:?}", verifier());
        assert!(!shown.contains("test_secret"), "{shown}");
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00abFF"), Some(vec![0x00, 0xab, 0xff]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("0g"), None);
    }
}

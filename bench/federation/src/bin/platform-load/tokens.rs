//! Clerk session tokens for the seeded users: RS256, signed with the router tests' first test
//! key under the kid `bench-key`, which `bench-identity` serves as the JWKS (test keys only:
//! nothing here is a secret). Minted once into a file (one line per user, by index) and reused
//! by every run while they are valid.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use jsonwebtoken::{Algorithm, EncodingKey, Header, get_current_timestamp};
use serde_json::json;

use crate::seed::user;

const KEY_PEM: &[u8] = include_bytes!("../../../../../router/tests/fixtures/jwt/key1.pem");
/// The kid `bench-identity`'s JWKS names.
const KID: &str = "bench-key";

/// Mints `users` tokens valid for `minutes`, into `out`, on two threads.
pub fn mint(
    users: u32,
    seed: u64,
    issuer: &str,
    audience: &str,
    minutes: u64,
    out: &Path,
) -> anyhow::Result<()> {
    let signing = EncodingKey::from_rsa_pem(KEY_PEM).context("the test key")?;
    let now = get_current_timestamp();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.to_owned());
    let mint_range = |range: std::ops::Range<u32>| -> anyhow::Result<Vec<String>> {
        range
            .map(|index| {
                let claims = json!({
                    "sub": user(seed, index).clerk_id,
                    "sid": format!("sess_bench_{index}"),
                    "iss": issuer,
                    "azp": audience,
                    "iat": now,
                    "nbf": now - 5,
                    "exp": now + minutes * 60,
                });
                jsonwebtoken::encode(&header, &claims, &signing).context("signing")
            })
            .collect()
    };
    let half = users / 2;
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| mint_range(0..half));
        let second = mint_range(half..users);
        (first.join(), second)
    });
    let first = first.map_err(|_| anyhow::anyhow!("a minting thread panicked"))??;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    for token in first.iter().chain(second?.iter()) {
        writeln!(file, "{token}")?;
    }
    file.flush()?;
    Ok(())
}

/// The tokens of a file [`mint`] wrote, by user index.
pub fn read(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (run `tokens` first)", path.display()))?;
    Ok(text.lines().map(str::to_owned).collect())
}

//! The identity the router benchmark signs in with: serves a JWKS (`GET /jwks.json`) holding
//! the router tests' first test key, and writes a Clerk-style session token signed with it
//! (valid for an hour, the longest the router accepts) to `--token-file`, for
//! `loadgen --header "authorization: Bearer …"`.
//! Test keys only: nothing here is a secret.

use anyhow::Context;
use clap::Parser;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header, get_current_timestamp};
use serde_json::json;

const KEY_PEM: &[u8] = include_bytes!("../../../../router/tests/fixtures/jwt/key1.pem");
const KID: &str = "bench-key";

#[derive(Debug, Parser)]
#[command(
    name = "bench-identity",
    about = "A JWKS and a session token for the router benchmark."
)]
struct Cli {
    #[arg(long)]
    port: u16,
    /// The token's `iss` (the router's GOSPELIB_AUTH_ISSUER).
    #[arg(long)]
    issuer: String,
    /// The token's `azp` (the router's GOSPELIB_AUTH_AUDIENCE).
    #[arg(long)]
    audience: String,
    /// Where the token is written.
    #[arg(long)]
    token_file: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let signing = EncodingKey::from_rsa_pem(KEY_PEM).context("the test key")?;
    let jwk = Jwk::from_encoding_key(&signing, Algorithm::RS256).context("its JWK")?;
    let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
        anyhow::bail!("an RSA key gives an RSA JWK");
    };
    let jwks = json!({"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256", "n": rsa.n, "e": rsa.e}]});
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.to_owned());
    let now = get_current_timestamp();
    let claims = json!({"sub": "user_bench", "sid": "sess_bench", "iss": cli.issuer,
                        "azp": cli.audience, "iat": now, "nbf": now, "exp": now + 3_600});
    let token = jsonwebtoken::encode(&header, &claims, &signing).context("signing")?;
    std::fs::write(&cli.token_file, token).context("writing the token")?;
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", cli.port))
        .await
        .with_context(|| format!("port {}", cli.port))?;
    axum::serve(listener, app).await?;
    Ok(())
}

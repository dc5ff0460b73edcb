//! `gospelib partner-key create|list|revoke`: partners' API keys, kept as digests in
//! PostgreSQL (see `gospelib_router::partner_keys`). A new key is printed once and never
//! again; revoking one tells every router through Redis.

use anyhow::Context;
use gospelib_kit::config::{ConfigReader, Env};
use gospelib_kit::stores::{postgres_pool, redis_client};
use gospelib_router::partner_keys::{self, PartnerKey};

use crate::registry::Format;

/// The database, and Redis when set (to announce revocations).
struct KeyStores {
    postgres: sqlx::PgPool,
    redis: Option<redis::Client>,
}

fn stores(env: &Env) -> anyhow::Result<KeyStores> {
    let mut reader = ConfigReader::new(env);
    let postgres = reader.required_url(
        "GOSPELIB_PG_URL",
        "postgres://gospelib@127.0.0.1:25432/gospelib",
        &["postgres", "postgresql"],
    );
    let redis = reader
        .raw("GOSPELIB_REDIS_URL")
        .is_some()
        .then(|| {
            reader.required_url(
                "GOSPELIB_REDIS_URL",
                "redis://127.0.0.1:26379",
                &["redis", "rediss"],
            )
        })
        .flatten();
    reader.finish()?;
    let postgres = postgres.expect("present once finish() succeeded");
    Ok(KeyStores {
        postgres: postgres_pool(&postgres, 2).context("PostgreSQL URL")?,
        redis: redis
            .map(|url| redis_client(&url))
            .transpose()
            .context("Redis URL")?,
    })
}

fn as_json(key: &PartnerKey) -> serde_json::Value {
    serde_json::json!({
        "id": key.id,
        "partner": key.partner,
        "scopes": key.scopes,
        "createdAt": key.created_at,
        "revokedAt": key.revoked_at,
    })
}

pub async fn run_create(
    env: &Env,
    partner: &str,
    scopes: &[String],
    format: Format,
) -> anyhow::Result<()> {
    let stores = stores(env)?;
    let (made, key) = partner_keys::create(&stores.postgres, partner, scopes).await?;
    match format {
        Format::Json => {
            let mut shown = as_json(&made);
            shown["key"] = serde_json::Value::String(key);
            println!("{shown}");
        }
        Format::Text => {
            println!("partner key {} for {:?} made.", made.id, made.partner);
            println!("key: {key}");
            println!("It is shown this once: store it now. Send it as `x-api-key: <key>`.");
        }
    }
    Ok(())
}

pub async fn run_list(env: &Env, format: Format) -> anyhow::Result<()> {
    let stores = stores(env)?;
    let keys = partner_keys::list(&stores.postgres).await?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::Value::Array(keys.iter().map(as_json).collect())
        ),
        Format::Text => {
            if keys.is_empty() {
                println!("no partner keys");
            }
            for key in keys {
                let state = key
                    .revoked_at
                    .as_deref()
                    .map_or("active".to_owned(), |at| format!("revoked {at}"));
                println!(
                    "{}  {:<24} scopes [{}]  made {}  {state}",
                    key.id,
                    key.partner,
                    key.scopes.join(","),
                    key.created_at
                );
            }
        }
    }
    Ok(())
}

pub async fn run_revoke(env: &Env, id: &str) -> anyhow::Result<()> {
    let stores = stores(env)?;
    if partner_keys::revoke(&stores.postgres, stores.redis.as_ref(), id).await? {
        println!("partner key {id} revoked");
        Ok(())
    } else {
        anyhow::bail!("no active partner key {id:?} (see `gospelib partner-key list`)")
    }
}

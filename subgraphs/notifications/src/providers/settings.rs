//! The delivery providers' settings, read once at start-up from `GOSPELIB_*` variables with the
//! kit's [`ConfigReader`], and [`Providers`], the clients built from them.
//!
//! Each provider is a group of variables. A group left entirely unset turns its provider off
//! (its sends are [`Delivery::Skipped`](super::Delivery::Skipped)); a group set only in part is
//! a start-up error naming each missing variable, so a typo never silently disables pushes.
//! Key files are read and their keys checked here, so a bad key stops the process at start-up
//! rather than failing every send. No value of a secret variable appears in an error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::config::{ConfigError, ConfigReader, Env, Visibility, parse_url};

use super::apns::{self, Apns, ApnsConfig, ApnsKey};
use super::fcm::{self, Fcm, FcmConfig, ServiceAccount};
use super::resend::{self, Resend, ResendConfig};
use super::{DEFAULT_TIMEOUT, EmailProvider, ProviderError, PushProvider, Secret, Unconfigured};

pub const APNS_KEY_FILE: &str = "GOSPELIB_APNS_KEY_FILE";
pub const APNS_KEY_ID: &str = "GOSPELIB_APNS_KEY_ID";
pub const APNS_TEAM_ID: &str = "GOSPELIB_APNS_TEAM_ID";
pub const APNS_TOPIC: &str = "GOSPELIB_APNS_TOPIC";
pub const APNS_BASE_URL: &str = "GOSPELIB_APNS_BASE_URL";
pub const FCM_CREDENTIALS_FILE: &str = "GOSPELIB_FCM_CREDENTIALS_FILE";
pub const FCM_BASE_URL: &str = "GOSPELIB_FCM_BASE_URL";
pub const RESEND_API_KEY: &str = "GOSPELIB_RESEND_API_KEY";
pub const EMAIL_FROM: &str = "GOSPELIB_EMAIL_FROM";
pub const RESEND_BASE_URL: &str = "GOSPELIB_RESEND_BASE_URL";
/// The deadline of one request to any provider, in milliseconds.
pub const PROVIDER_TIMEOUT_MS: &str = "GOSPELIB_NOTIFICATIONS_PROVIDER_TIMEOUT_MS";

const APNS_GROUP: [&str; 5] = [
    APNS_KEY_FILE,
    APNS_KEY_ID,
    APNS_TEAM_ID,
    APNS_TOPIC,
    APNS_BASE_URL,
];
const FCM_GROUP: [&str; 2] = [FCM_CREDENTIALS_FILE, FCM_BASE_URL];
const RESEND_GROUP: [&str; 3] = [RESEND_API_KEY, EMAIL_FROM, RESEND_BASE_URL];

/// Every provider's settings; `None` where a provider is off.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub apns: Option<ApnsConfig>,
    pub fcm: Option<FcmConfig>,
    pub resend: Option<ResendConfig>,
    /// The deadline of one request to a provider.
    pub timeout: Duration,
}

impl ProviderSettings {
    /// Reads the provider settings alone from `env`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut reader = ConfigReader::new(env);
        let settings = Self::read(&mut reader);
        reader.finish()?;
        Ok(settings.expect("every value is present once finish() succeeded"))
    }

    /// Reads the provider settings; problems go to `reader`.
    pub fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        let timeout_ms = reader.number(
            PROVIDER_TIMEOUT_MS,
            u64::try_from(DEFAULT_TIMEOUT.as_millis()).unwrap_or(10_000),
            100,
            120_000,
        );
        let timeout = Duration::from_millis(timeout_ms.unwrap_or(10_000));
        let apns = read_apns(reader, timeout);
        let fcm = read_fcm(reader, timeout);
        let resend = read_resend(reader, timeout);
        Some(Self {
            apns: apns?,
            fcm: fcm?,
            resend: resend?,
            timeout: Duration::from_millis(timeout_ms?),
        })
    }
}

/// Whether any variable of a provider's group is set (then all its required ones must be).
fn any_set(reader: &ConfigReader<'_>, group: &[&str]) -> bool {
    group.iter().any(|name| reader.raw(name).is_some())
}

/// An optional http(s) base URL, `default` when unset.
fn base_url(reader: &mut ConfigReader<'_>, name: &str, default: &str) -> Option<String> {
    let expected = format!("an http(s) URL such as {default}");
    reader.optional(name, &expected, default.to_owned(), |raw| {
        parse_url(raw, &["http", "https"]).map(|_| raw.to_owned())
    })
}

/// The text of the file at `raw`, or why not (the path is shown, never the contents).
fn read_file(raw: &str) -> Result<String, String> {
    std::fs::read_to_string(Path::new(raw))
        .map_err(|error| format!("cannot read the file: {error}"))
}

/// `Some(None)`: APNs off; `None`: a problem was recorded.
fn read_apns(reader: &mut ConfigReader<'_>, timeout: Duration) -> Option<Option<ApnsConfig>> {
    if !any_set(reader, &APNS_GROUP) {
        return Some(None);
    }
    let key = reader.required(
        APNS_KEY_FILE,
        "the path of the APNs signing key (.p8 file, PKCS#8 P-256)",
        Visibility::Plain,
        |raw| ApnsKey::from_pem(read_file(raw)?.as_bytes()).map_err(|e| e.to_string()),
    );
    let key_id = reader.required(
        APNS_KEY_ID,
        "the 10-character id of the APNs key",
        Visibility::Plain,
        non_blank,
    );
    let team_id = reader.required(
        APNS_TEAM_ID,
        "the 10-character Apple developer team id",
        Visibility::Plain,
        non_blank,
    );
    let topic = reader.required(
        APNS_TOPIC,
        "the app's bundle id, such as org.gospelib.app",
        Visibility::Plain,
        non_blank,
    );
    let base_url = base_url(reader, APNS_BASE_URL, apns::PRODUCTION_BASE_URL);
    Some(Some(ApnsConfig {
        key: key?,
        key_id: key_id?,
        team_id: team_id?,
        topic: topic?,
        base_url: base_url?,
        timeout,
    }))
}

/// `Some(None)`: FCM off; `None`: a problem was recorded.
fn read_fcm(reader: &mut ConfigReader<'_>, timeout: Duration) -> Option<Option<FcmConfig>> {
    if !any_set(reader, &FCM_GROUP) {
        return Some(None);
    }
    let account = reader.required(
        FCM_CREDENTIALS_FILE,
        "the path of a Firebase service account's JSON key file",
        Visibility::Plain,
        |raw| ServiceAccount::from_json(&read_file(raw)?).map_err(|e| e.to_string()),
    );
    let base_url = base_url(reader, FCM_BASE_URL, fcm::DEFAULT_BASE_URL);
    Some(Some(FcmConfig {
        account: account?,
        base_url: base_url?,
        timeout,
    }))
}

/// `Some(None)`: Resend off; `None`: a problem was recorded.
fn read_resend(reader: &mut ConfigReader<'_>, timeout: Duration) -> Option<Option<ResendConfig>> {
    if !any_set(reader, &RESEND_GROUP) {
        return Some(None);
    }
    let api_key = reader.required(
        RESEND_API_KEY,
        "a Resend API key (re_…)",
        Visibility::Secret,
        |raw| {
            if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err("it contains whitespace".to_owned())
            } else {
                Ok(Secret::new(raw))
            }
        },
    );
    let from = reader.required(
        EMAIL_FROM,
        "the sender, such as `GospeLib <hello@gospelib.org>`, on a domain verified at Resend",
        Visibility::Plain,
        |raw| {
            if raw.contains('@') {
                Ok(raw.to_owned())
            } else {
                Err("not an email address".to_owned())
            }
        },
    );
    let base_url = base_url(reader, RESEND_BASE_URL, resend::DEFAULT_BASE_URL);
    Some(Some(ResendConfig {
        api_key: api_key?,
        from: from?,
        base_url: base_url?,
        timeout,
    }))
}

fn non_blank(raw: &str) -> Result<String, String> {
    Ok(raw.trim().to_owned())
}

/// The three providers, real where configured, [`Unconfigured`] elsewhere.
#[derive(Clone)]
pub struct Providers {
    pub apns: Arc<dyn PushProvider>,
    pub fcm: Arc<dyn PushProvider>,
    pub email: Arc<dyn EmailProvider>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("apns", &self.apns.name())
            .field("fcm", &self.fcm.name())
            .field("email", &self.email.name())
            .finish()
    }
}

impl Providers {
    /// Builds the clients of the configured providers.
    pub fn from_settings(settings: &ProviderSettings) -> Result<Self, ProviderError> {
        let apns: Arc<dyn PushProvider> = match &settings.apns {
            Some(config) => Arc::new(Apns::new(config.clone())?),
            None => Arc::new(Unconfigured::new("apns", "GOSPELIB_APNS_*")),
        };
        let fcm: Arc<dyn PushProvider> = match &settings.fcm {
            Some(config) => Arc::new(Fcm::new(config.clone())?),
            None => Arc::new(Unconfigured::new("fcm", "GOSPELIB_FCM_*")),
        };
        let email: Arc<dyn EmailProvider> = match &settings.resend {
            Some(config) => Arc::new(Resend::new(config.clone())?),
            None => Arc::new(Unconfigured::new("resend", "GOSPELIB_RESEND_*")),
        };
        Ok(Self { apns, fcm, email })
    }
}

//! The providers' settings as the process reads them at start-up: unset providers are off and
//! skip every send; a half-set provider names each missing variable; bad key files are refused
//! without quoting them; no secret reaches `Debug` output or an error.

mod common;

use common::{fixture, read_fixture, temp_file};
use gospelib_kit::config::Env;
use gospelib_notifications::providers::settings::*;
use gospelib_notifications::providers::{
    Delivery, EmailMessage, ProviderSettings, Providers, PushMessage,
};
use serde_json::json;

const RESEND_KEY: &str = "re_live_supersecret";

fn fcm_credentials() -> String {
    let text = json!({
        "type": "service_account",
        "project_id": "gospelib-test",
        "private_key": read_fixture("fcm-test-key.pem"),
        "client_email": "push@gospelib-test.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string();
    temp_file("fcm.json", &text).display().to_string()
}

fn everything() -> Vec<(&'static str, String)> {
    vec![
        (
            APNS_KEY_FILE,
            fixture("apns-test-key.p8").display().to_string(),
        ),
        (APNS_KEY_ID, "KEY1234567".into()),
        (APNS_TEAM_ID, "TEAM123456".into()),
        (APNS_TOPIC, "org.gospelib.app".into()),
        (FCM_CREDENTIALS_FILE, fcm_credentials()),
        (RESEND_API_KEY, RESEND_KEY.into()),
        (EMAIL_FROM, "GospeLib <hello@gospelib.test>".into()),
    ]
}

/// Lines of the start-up error, or a panic when the settings were accepted.
fn problems(pairs: Vec<(&'static str, String)>) -> Vec<String> {
    let error = ProviderSettings::from_env(&Env::from_pairs(pairs)).unwrap_err();
    error.problems.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn unconfigured_providers_skip_every_send() {
    let settings = ProviderSettings::from_env(&Env::default()).unwrap();
    assert!(settings.apns.is_none() && settings.fcm.is_none() && settings.resend.is_none());
    let providers = Providers::from_settings(&settings).unwrap();

    let push = PushMessage::default();
    for provider in [&providers.apns, &providers.fcm] {
        let outcome = provider.send_push("abcd", &push).await;
        assert!(matches!(outcome, Delivery::Skipped { .. }), "{outcome:?}");
    }
    let outcome = providers.email.send_email(&EmailMessage::default()).await;
    assert_eq!(
        outcome,
        Delivery::Skipped {
            reason: "resend is not configured (GOSPELIB_RESEND_* unset)".into()
        }
    );
}

#[test]
fn every_provider_is_built_from_a_full_configuration() {
    let settings = ProviderSettings::from_env(&Env::from_pairs(everything())).unwrap();
    let apns = settings.apns.as_ref().unwrap();
    assert_eq!(apns.base_url, "https://api.push.apple.com");
    assert_eq!(
        settings.fcm.as_ref().unwrap().account.project_id,
        "gospelib-test"
    );
    assert_eq!(
        settings.resend.as_ref().unwrap().base_url,
        "https://api.resend.com"
    );
    let providers = Providers::from_settings(&settings).unwrap();
    assert_eq!(
        format!("{providers:?}"),
        r#"Providers { apns: "apns", fcm: "fcm", email: "resend" }"#
    );

    let shown = format!("{settings:?}");
    assert!(
        !shown.contains(RESEND_KEY),
        "the Resend key leaked: {shown}"
    );
    assert!(
        !shown.contains("PRIVATE KEY"),
        "a private key leaked: {shown}"
    );
    let apns_key_body = read_fixture("apns-test-key.p8");
    let apns_key_line = apns_key_body.lines().nth(1).unwrap();
    assert!(
        !shown.contains(apns_key_line),
        "the APNs key leaked: {shown}"
    );
}

#[test]
fn a_half_configured_provider_names_each_missing_variable() {
    let lines = problems(vec![
        (APNS_KEY_ID, "KEY1234567".into()),
        (RESEND_API_KEY, RESEND_KEY.into()),
        (FCM_BASE_URL, "http://127.0.0.1:9".into()),
    ]);
    let missing: Vec<&str> = lines
        .iter()
        .map(|line| line.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        missing,
        [
            APNS_KEY_FILE,
            APNS_TEAM_ID,
            APNS_TOPIC,
            FCM_CREDENTIALS_FILE,
            EMAIL_FROM
        ]
    );
    assert!(
        lines
            .iter()
            .all(|line| line.contains(" is not set: expected ")),
        "{lines:?}"
    );
    assert!(!lines.concat().contains(RESEND_KEY));
}

#[test]
fn bad_key_files_are_refused_at_start_up_without_quoting_them() {
    let mut pairs = everything();
    // An RSA key where the APNs P-256 key belongs, and an FCM file whose key is not a key.
    pairs[0].1 = fixture("fcm-test-key.pem").display().to_string();
    let fake_key =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n";
    let bad_fcm = json!({
        "project_id": "p", "client_email": "a@b", "private_key": fake_key,
    });
    pairs[4].1 = temp_file("fcm.json", &bad_fcm.to_string())
        .display()
        .to_string();
    let lines = problems(pairs);

    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{APNS_KEY_FILE} has a bad value")),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(&format!("{FCM_CREDENTIALS_FILE} has a bad value")),
        "{lines:?}"
    );
    let text = lines.concat();
    assert!(!text.contains("c2VjcmV0"), "a key leaked: {text}");
    let rsa_line = read_fixture("fcm-test-key.pem")
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    assert!(!text.contains(&rsa_line), "a key leaked: {text}");
}

#[test]
fn a_missing_file_a_bad_url_and_a_bad_timeout_are_named() {
    let mut pairs = everything();
    pairs[0].1 = "/nonexistent/AuthKey.p8".into();
    pairs.push((RESEND_BASE_URL, "ftp://mail".into()));
    pairs.push((PROVIDER_TIMEOUT_MS, "5".into()));
    pairs.push((RESEND_API_KEY, "re with spaces".into()));
    let lines = problems(pairs);
    let names: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            PROVIDER_TIMEOUT_MS,
            APNS_KEY_FILE,
            RESEND_API_KEY,
            RESEND_BASE_URL
        ],
        "{lines:?}"
    );
    assert!(lines[1].contains("cannot read the file"), "{lines:?}");
    assert!(!lines.concat().contains("re with spaces"));
}

#[test]
fn the_timeout_applies_to_every_provider() {
    let mut pairs = everything();
    pairs.push((PROVIDER_TIMEOUT_MS, "2500".into()));
    pairs.push((APNS_BASE_URL, "https://api.sandbox.push.apple.com".into()));
    let settings = ProviderSettings::from_env(&Env::from_pairs(pairs)).unwrap();
    let timeout = std::time::Duration::from_millis(2500);
    assert_eq!(settings.timeout, timeout);
    assert_eq!(settings.apns.as_ref().unwrap().timeout, timeout);
    assert_eq!(settings.fcm.as_ref().unwrap().timeout, timeout);
    assert_eq!(settings.resend.as_ref().unwrap().timeout, timeout);
    assert_eq!(
        settings.apns.unwrap().base_url,
        "https://api.sandbox.push.apple.com"
    );
}

//! Notifications' SDL: the committed file (`schema/subgraphs/notifications.graphql`) is what
//! the code gives, and it composes with the committed SDLs of the other subgraphs (the
//! registry's own composer): `User` gains the inbox, the unread count and the preferences;
//! every mutation is `@authenticated`; the connection types are shareable.
//!
//! `GOSPELIB_WRITE_SDL=1 cargo test -p gospelib-notifications --test composition` rewrites
//! the committed file from the code (what `gospelib schema export` also writes).

use gospelib_schema::compose::{SubgraphSdl, api_schema, compose};

fn path(name: &str) -> String {
    format!(
        "{}/../../schema/subgraphs/{name}.graphql",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn committed(name: &str) -> SubgraphSdl {
    let path = path(name);
    SubgraphSdl {
        name: name.to_owned(),
        url: format!("http://127.0.0.1:4000/subgraphs/{name}/graphql"),
        sdl: std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
    }
}

/// The body of `type <name>` in `sdl`.
fn type_body<'a>(sdl: &'a str, name: &str) -> &'a str {
    sdl.split(&format!("type {name} "))
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_else(|| panic!("no type {name} in:\n{sdl}"))
}

#[test]
fn the_committed_sdl_is_what_the_code_gives() {
    let sdl = gospelib_notifications::federation_sdl();
    let path = path(gospelib_notifications::NAME);
    if std::env::var_os("GOSPELIB_WRITE_SDL").is_some() {
        std::fs::write(&path, &sdl).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == sdl,
        "{path} differs from the code's SDL: run GOSPELIB_WRITE_SDL=1 cargo test -p \
         gospelib-notifications --test composition (or gospelib schema export)"
    );
}

#[test]
fn notifications_composes_with_the_other_subgraphs() {
    let notifications = SubgraphSdl {
        name: gospelib_notifications::NAME.to_owned(),
        url: "http://127.0.0.1:4000/subgraphs/notifications/graphql".to_owned(),
        sdl: gospelib_notifications::federation_sdl(),
    };
    let supergraph = compose(&[
        committed("content"),
        committed("accounts"),
        committed("billing"),
        committed("study"),
        notifications,
    ])
    .unwrap_or_else(|failed| panic!("{failed}"));
    let api = api_schema(&supergraph).unwrap();
    let user = type_body(&api, "User");
    for field in [
        "email",
        "highlights(",
        // (Its arguments one a line: `first` is described.)
        "notifications(",
        "unreadOnly: Boolean",
        "): NotificationConnection!",
        "unreadCount: Int!",
        "notificationPreferences: NotificationPreferences!",
    ] {
        assert!(user.contains(field), "{field} missing from User:\n{user}");
    }
    let notification = type_body(&api, "Notification");
    for field in [
        "id: ID!",
        "title: String!",
        "body: String!",
        "category: NotificationCategory!",
        "read: Boolean!",
        "createdAt: String!",
    ] {
        assert!(
            notification.contains(field),
            "{field} missing:\n{notification}"
        );
    }
    for mutation in [
        "markNotificationsRead(ids: [ID!]!): Int!",
        "updateNotificationPreferences(input: UpdateNotificationPreferencesInput!): NotificationPreferences!",
        "sendTestNotification: Notification!",
    ] {
        assert!(api.contains(mutation), "{mutation} missing:\n{api}");
    }
}

#[test]
fn every_mutation_is_authenticated_and_connections_are_shareable() {
    let sdl = gospelib_notifications::federation_sdl();
    let mutation = type_body(&sdl, "Mutation");
    for name in [
        "markNotificationsRead",
        "updateNotificationPreferences",
        "sendTestNotification",
    ] {
        let field = mutation
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{mutation}"));
        assert!(field.contains("@authenticated"), "{field}");
    }
    assert!(
        sdl.contains("type NotificationConnection @shareable"),
        "{sdl}"
    );
    assert!(sdl.contains("type NotificationEdge @shareable"), "{sdl}");
    assert!(sdl.contains("type User @key(fields: \"id\")"), "{sdl}");
    assert!(sdl.contains("enum NotificationCategory"), "{sdl}");
}

//! Study's SDL composes with the committed SDLs of the other subgraphs (the registry's own
//! composer): `User` gains the study lists, `Passage` gains `myHighlights` and `myNotes`, and
//! every mutation is `@authenticated`.

use gospelib_schema::compose::{SubgraphSdl, api_schema, compose};

fn committed(name: &str) -> SubgraphSdl {
    let path = format!(
        "{}/../../schema/subgraphs/{name}.graphql",
        env!("CARGO_MANIFEST_DIR")
    );
    SubgraphSdl {
        name: name.to_owned(),
        url: format!("http://127.0.0.1:4001/subgraphs/{name}/graphql"),
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
fn study_composes_with_content_accounts_and_billing() {
    let study = SubgraphSdl {
        name: gospelib_study::NAME.to_owned(),
        url: "http://127.0.0.1:4001/subgraphs/study/graphql".to_owned(),
        sdl: gospelib_study::federation_sdl(),
    };
    let supergraph = compose(&[
        committed("content"),
        committed("accounts"),
        committed("billing"),
        study,
    ])
    .unwrap_or_else(|failed| panic!("{failed}"));
    let api = api_schema(&supergraph).unwrap();
    let user = type_body(&api, "User");
    for field in [
        "email",
        "plan: Plan!",
        "highlights(",
        "notes(",
        "bookmarks(",
        "readingProgress(",
        "readingStreak(",
        "timeZone: String,",
        // (Its arguments one a line: `first` is described.)
        "searchNotes(",
        "query: String!",
        "): [Note!]!",
    ] {
        assert!(user.contains(field), "{field} missing from User:\n{user}");
    }
    let passage = type_body(&api, "Passage");
    for field in ["text", "myHighlights: [Highlight!]", "myNotes: [Note!]"] {
        assert!(
            passage.contains(field),
            "{field} missing from Passage:\n{passage}"
        );
        // Nullable: a list that cannot be answered fails alone, never its verse.
        assert!(
            !passage.contains(&format!("{field}!")),
            "{field} is nullable in Passage:\n{passage}"
        );
    }
    let note_range = type_body(&api, "NoteRange");
    for field in [
        "start: Passage",
        "end: Passage",
        "startId: ID!",
        "endId: ID!",
    ] {
        assert!(note_range.contains(field), "{field} missing from NoteRange");
    }
    for mutation in [
        "createHighlight",
        "deleteHighlight",
        "createNote",
        "updateNote",
        "deleteNote",
        "createBookmark",
        "deleteBookmark",
        "recordReading",
    ] {
        assert!(api.contains(mutation), "{mutation} missing:\n{api}");
    }
}

#[test]
fn every_mutation_is_authenticated_and_colours_are_twelve() {
    let sdl = gospelib_study::federation_sdl();
    let mutation = type_body(&sdl, "Mutation");
    let names = [
        "createHighlight",
        "deleteHighlight",
        "createNote",
        "updateNote",
        "deleteNote",
        "createBookmark",
        "deleteBookmark",
        "recordReading",
    ];
    for name in names {
        let field = mutation
            .lines()
            .map(str::trim)
            .find(|line| line.starts_with(&format!("{name}(")))
            .unwrap_or_else(|| panic!("no {name} in:\n{mutation}"));
        assert!(field.contains("@authenticated"), "{field}");
    }
    assert!(
        sdl.contains("\"@authenticated\""),
        "imported from federation:\n{sdl}"
    );
    let colours = sdl
        .split("enum HighlightColor {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap();
    let values = colours
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && line.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .count();
    assert_eq!(values, 12, "{colours}");
}

//! The committed fixture validates; a corrupted copy reports every problem with its file and
//! JSON path.

mod support;

use gospelib_content::corpus;
use support::{copy_dir, edit_json, fixture};

#[test]
fn the_committed_fixture_is_valid_and_has_its_excerpt() {
    let data = corpus::load(&fixture()).unwrap();
    let counts = corpus::counts(&data);
    assert_eq!(counts["books"], 4);
    // Genesis 1–3 (31+25+24), Psalm 23 (6), John 1–3 (51+25+36), 1 Nephi 1–3 (20+24+31).
    assert_eq!(counts["passages.bible"], 80 + 6 + 112);
    assert_eq!(counts["passages.book-of-mormon"], 75);
    assert_eq!(counts["words"], 2551);
    assert!(counts["lexicon"] > 500);
    assert!(counts["topics"] > 100);
    assert!(counts["crossrefs"] > 100);
}

#[test]
fn a_corrupted_corpus_reports_every_problem_with_file_and_path() {
    let dir = std::env::temp_dir().join(format!("gl-corpus-invalid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&fixture(), &dir);
    edit_json(&dir.join("books/gen.json"), |v| {
        v["chapters"][0]["verses"][0]["words"][0]["strongs"] = "H99999".into();
        v["chapters"][1]["verses"][2]["number"] = 7.into();
    });
    edit_json(&dir.join("crossrefs.json"), |v| {
        v["links"][0]["to"] = "gen.50.1".into();
    });
    edit_json(&dir.join("lexicon.json"), |v| {
        v["entries"][3]["lemma"] = 12.into();
    });

    let error = corpus::load(&dir).unwrap_err();
    let found: Vec<(String, String)> = error
        .issues
        .iter()
        .map(|i| {
            (
                i.file.strip_prefix(&dir).unwrap().display().to_string(),
                i.path.clone(),
            )
        })
        .collect();
    assert!(
        found.contains(&(
            "books/gen.json".into(),
            "$.chapters[0].verses[0].words[0].strongs".into()
        )),
        "{error}"
    );
    assert!(
        found.contains(&(
            "books/gen.json".into(),
            "$.chapters[1].verses[2].number".into()
        )),
        "{error}"
    );
    assert!(
        found.contains(&("crossrefs.json".into(), "$.links[0].to".into())),
        "{error}"
    );
    assert!(
        found.contains(&("lexicon.json".into(), "$.entries[3].lemma".into())),
        "{error}"
    );
    let text = error.to_string();
    assert!(text.contains("no passage gen.50.1 in the corpus"), "{text}");
    assert!(
        text.contains("invalid type: integer `12`, expected a string"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

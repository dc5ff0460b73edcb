//! Strong's Hebrew and Greek dictionaries (SWORD modules `StrongsHebrew`, `StrongsGreek`, TEI):
//! lemma, transliteration, pronunciation, definition, KJV usage and related entries.

use super::ImportError;
use super::markup::{self, Node, tidy};
use super::sword::Entry;
use crate::corpus::LexiconEntry;
use crate::ids::StrongsId;

pub const HEBREW_MODULE: &str = "StrongsHebrew";
pub const GREEK_MODULE: &str = "StrongsGreek";

/// Converts one dictionary; `language` is `'H'` or `'G'`. Returns the entries and how many
/// repeated keys were dropped (the Hebrew module lists H2200 twice).
pub fn convert(
    entries: &[Entry],
    language: char,
) -> Result<(Vec<LexiconEntry>, usize), ImportError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    for entry in entries {
        let Ok(number) = entry.key.trim().parse::<u16>() else {
            continue; // the module's own headings
        };
        let Ok(id) = StrongsId::parse(&format!("{language}{number}")) else {
            continue;
        };
        if !seen.insert(id) {
            duplicates += 1;
            continue;
        }
        out.push(
            parse_entry(id, &entry.body).map_err(|e| ImportError::Source(format!("{id}: {e}")))?,
        );
    }
    Ok((out, duplicates))
}

/// Reads one `<entryFree>`.
pub fn parse_entry(id: StrongsId, markup: &str) -> Result<LexiconEntry, ImportError> {
    let nodes = markup::parse(markup).map_err(|e| ImportError::Source(e.to_string()))?;
    let (mut lemma, mut transliteration, mut pronunciation, mut definition) =
        (String::new(), String::new(), String::new(), String::new());
    let mut related = Vec::new();
    // Which field the text goes to: the innermost of orth/pron/def that is open.
    let mut field: Vec<&'static str> = Vec::new();
    for node in nodes {
        match node {
            Node::Open(tag) => match tag.name.as_str() {
                "orth" if tag.attribute("type") == Some("trans") => field.push("trans"),
                "orth" => field.push("lemma"),
                "pron" => field.push("pron"),
                "def" => field.push("def"),
                "ref" => {
                    let target = tag.attribute("target").unwrap_or("");
                    let number = target
                        .strip_prefix("StrongsHebrew:")
                        .map(|n| format!("H{n}"))
                        .or_else(|| {
                            target
                                .strip_prefix("StrongsGreek:")
                                .map(|n| format!("G{n}"))
                        });
                    if let Some(related_id) = number.and_then(|n| StrongsId::parse(&n).ok()) {
                        let related_id = related_id.to_string();
                        if related_id != id.to_string() && !related.contains(&related_id) {
                            related.push(related_id);
                        }
                    }
                }
                _ => {}
            },
            Node::Close(name) if matches!(name.as_str(), "orth" | "pron" | "def") => {
                field.pop();
            }
            Node::Text(text) => match field.last() {
                Some(&"lemma") if lemma.is_empty() => lemma = text,
                // Later forms (an etymology's root word) are not this entry's.
                Some(&"trans") if transliteration.is_empty() => transliteration = text,
                Some(&"pron") => pronunciation.push_str(&text),
                Some(&"def") => definition.push_str(&text),
                _ => {}
            },
            _ => {}
        }
    }
    let definition = tidy(&definition.replace(['{', '}'], ""));
    let (meaning, usage) = split_usage(&definition);
    Ok(LexiconEntry {
        id: id.to_string(),
        language: if id.language == 'H' {
            "hebrew"
        } else {
            "greek"
        }
        .to_owned(),
        lemma: tidy(&lemma),
        transliteration: tidy(&transliteration),
        pronunciation: tidy(&pronunciation.replace(['{', '}'], "")),
        definition: meaning,
        kjv_usage: usage,
        related,
    })
}

/// Strong's definitions end with the KJV's renderings after `:-` (sometimes `: -`).
fn split_usage(definition: &str) -> (String, String) {
    for (i, c) in definition.char_indices() {
        if c == ':' {
            let rest = definition[i + 1..].trim_start();
            if rest.starts_with('-') {
                // Hebrew entries write `:-`, Greek ones `:--`.
                return (tidy(&definition[..i]), tidy(rest.trim_start_matches('-')));
            }
        }
    }
    (definition.to_owned(), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_greek_entry_keeps_its_own_forms_and_usage() {
        let markup = r#"<entryFree n="00025">     <orth>ἀγαπάω</orth> <orth type="writing">A)GAPA/W</orth>   <orth rend="bold" type="trans">agapáō</orth>    <pron rend="italic">ag-ap-ah'-o</pron><lb/> <lb/> perhaps from  <orth>ἄγαν</orth> <orth type="writing">A)/GAN</orth>   <orth rend="bold" type="trans">ágan</orth> (much) [or compare <ref target="StrongsGreek:5689">H5689</ref>];<lb/> <def>to love (in a social or moral sense):--(be-)love(-ed). Compare <ref target="StrongsGreek:5368">G5368</ref>. </def> </entryFree>"#;
        let entry = parse_entry(StrongsId::parse("G25").unwrap(), markup).unwrap();
        assert_eq!(entry.lemma, "ἀγαπάω");
        assert_eq!(entry.transliteration, "agapáō");
        assert_eq!(entry.definition, "to love (in a social or moral sense)");
        assert_eq!(entry.kjv_usage, "(be-)love(-ed). Compare G5368.");
        assert_eq!(entry.related, ["G5689", "G5368"]);
    }

    #[test]
    fn an_entry_is_read_field_by_field() {
        let markup = r#"<entryFree n="433"> 		<orth>אלהּ    אלוהּ</orth><lb/> 		<orth rend="bold" type="trans">'ĕlôahh  'ĕlôahh</orth> 		<pron rend="italic">{el-o'-ah} el-o'-ah</pron><lb/> 		<def>(The second form is rare); probably prolonged (emphatically) from <ref target="StrongsHebrew:410">H410</ref>; a <hi rend="italic">deity</hi> or the <hi rend="bold">deity:</hi> - {God} god. See <ref target="StrongsHebrew:430">H430</ref>.</def> 	</entryFree>"#;
        let entry = parse_entry(StrongsId::parse("H433").unwrap(), markup).unwrap();
        assert_eq!(entry.id, "H0433");
        assert_eq!(entry.language, "hebrew");
        assert_eq!(entry.lemma, "אלהּ אלוהּ");
        assert_eq!(entry.transliteration, "'ĕlôahh 'ĕlôahh");
        assert_eq!(entry.pronunciation, "el-o'-ah el-o'-ah");
        assert_eq!(
            entry.definition,
            "(The second form is rare); probably prolonged (emphatically) from H410; a deity or the deity"
        );
        assert_eq!(entry.kjv_usage, "God god. See H430.");
        assert_eq!(entry.related, ["H0410", "H0430"]);
    }
}

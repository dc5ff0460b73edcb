//! Short text users give and see again (names, labels): what it may not hold.

/// Whether `text` holds a character that changes how what surrounds it is shown
/// ([`is_layout_control`]).
pub fn has_layout_controls(text: &str) -> bool {
    text.chars().any(is_layout_control)
}

/// `text` without the characters that change how what surrounds it is shown (a name from a
/// provider, which cannot be refused).
pub fn without_layout_controls(text: &str) -> String {
    text.chars().filter(|c| !is_layout_control(*c)).collect()
}

/// Whether `c` changes how what surrounds it is shown: a control character (a line break, a
/// NUL), a line or paragraph separator (U+2028, U+2029), or a bidirectional embedding,
/// override or isolate (U+202A–U+202E, U+2066–U+2069), which reorders the text after it
/// wherever the label is shown, so that U+202E followed by "gnp.exe" reads as "exe.png". The
/// bidirectional marks (U+200E, U+200F, U+061C) are allowed: they only settle the direction
/// of neutral characters beside them, and names written right to left need them.
pub fn is_layout_control(c: char) -> bool {
    c.is_control()
        || ('\u{2028}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidirectional_overrides_are_found_marks_are_not() {
        for text in [
            "a\nb",
            "a\0b",
            "\u{202E}gnp.exe",
            "\u{202A}x",
            "x\u{2066}y",
            "\u{2069}",
            "line\u{2028}separated",
        ] {
            assert!(has_layout_controls(text), "{text:?}");
        }
        assert_eq!(without_layout_controls("A\u{202E}da\u{2029}"), "Ada");
        for text in [
            "Ada",
            "אברהם\u{200F}",
            "\u{200E}John 3:16",
            "عربي\u{061C}",
            "é",
        ] {
            assert!(!has_layout_controls(text), "{text:?}");
        }
    }
}

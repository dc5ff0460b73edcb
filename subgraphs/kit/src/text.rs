//! Short text users give and see again (names, labels): what it may not hold.

/// Whether `text` holds a character that changes how what surrounds it is shown: a control
/// character (a line break, a NUL), or a bidirectional embedding, override or isolate
/// (U+202A–U+202E, U+2066–U+2069), which reorders the text after it wherever the label is
/// shown, so that U+202E followed by "gnp.exe" reads as "exe.png". The bidirectional marks (U+200E, U+200F,
/// U+061C) are allowed: they only settle the direction of neutral characters beside them, and
/// names written right to left need them.
pub fn has_layout_controls(text: &str) -> bool {
    text.chars().any(|c| {
        c.is_control()
            || ('\u{202A}'..='\u{202E}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    })
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
        ] {
            assert!(has_layout_controls(text), "{text:?}");
        }
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

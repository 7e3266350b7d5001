//! Client-supplied text on its way into a message the engine stores or echoes.
//!
//! A field name, a value, an id that failed to parse or a parser's complaint quoting the body:
//! any of them can hold U+0000 (which PostgreSQL `text` and `jsonb` refuse, so a scan's error
//! list holding one would sink the whole staging transaction), control characters that garble
//! a log line or a terminal, or bidirectional and zero-width characters that make a message
//! read differently from what it says. [`shown`] is the one rule: every such character is
//! escaped visibly as `\uXXXX` (and `\` itself as `\\`, so an escape is never ambiguous), and
//! the text is cut at a bound with `…`.
//!
//! **Invariant:** client text reaches a stored or echoed message only through [`shown`].

/// Longest name (a field name, an id, a media type) echoed, in characters.
pub const NAME_MAX_CHARS: usize = 64;

/// Longest quoted complaint (a parser's or the database's message), in characters.
pub const MESSAGE_MAX_CHARS: usize = 300;

/// `text` made safe to store in PostgreSQL and to echo to a client or a log: characters that
/// are invisible, reorder text or are refused by PostgreSQL escaped as `\uXXXX`, backslashes
/// doubled, and cut (then `…`) so that what is shown holds at most `max_chars` characters,
/// escapes included (a text of escapes is six times longer shown than sent).
pub fn shown(text: &str, max_chars: usize) -> String {
    let mut result = String::with_capacity(text.len().min(max_chars * 4) + 3);
    let mut shown_chars = 0;
    for character in text.chars() {
        let piece = if character == '\\' {
            "\\\\".to_string()
        } else if must_escape(character) {
            format!("\\u{:04x}", character as u32)
        } else {
            character.to_string()
        };
        let piece_chars = piece.chars().count();
        if shown_chars + piece_chars > max_chars {
            result.push('…');
            break;
        }
        shown_chars += piece_chars;
        result.push_str(&piece);
    }
    result
}

/// Whether `shown` leaves `text` as it is: nothing to escape and within `max_chars`.
pub fn is_shown_as_is(text: &str, max_chars: usize) -> bool {
    text.chars().count() <= max_chars && !text.chars().any(|c| c == '\\' || must_escape(c))
}

/// Whether `text` holds a character [`shown`] would have escaped (what a stored or echoed
/// message must never hold raw).
pub fn holds_hidden_characters(text: &str) -> bool {
    text.chars().any(must_escape)
}

/// Controls (C0, DEL, C1; U+0000 among them), bidirectional controls, zero-width characters,
/// the byte-order mark, line and paragraph separators, and noncharacters.
fn must_escape(character: char) -> bool {
    matches!(character,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{200b}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{2069}'
        | '\u{feff}'
        | '\u{fff9}'..='\u{fffb}'
        | '\u{fffe}'..='\u{ffff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_and_invisible_characters_are_escaped_visibly() {
        assert_eq!(shown("a\u{0}b", 64), "a\\u0000b");
        assert_eq!(shown("tab\there", 64), "tab\\u0009here");
        assert_eq!(shown("\u{202e}evil\u{200b}", 64), "\\u202eevil\\u200b");
        assert_eq!(
            shown("\u{feff}\u{2028}\u{7f}\u{85}", 64),
            "\\ufeff\\u2028\\u007f\\u0085"
        );
        // A backslash is doubled, so the client's own text "\u0000" is not shown as a NUL.
        assert_eq!(shown("\\u0000", 64), "\\\\u0000");
        // Vietnamese text and ordinary punctuation are kept as they are.
        assert_eq!(
            shown("Hồ sơ nhân sự: \"lương\"", 64),
            "Hồ sơ nhân sự: \"lương\""
        );
        assert!(is_shown_as_is("Hồ sơ nhân sự", 64));
        assert!(!is_shown_as_is("a\u{0}", 64));
    }

    #[test]
    fn long_text_is_cut_at_the_bound() {
        let long = "ệ".repeat(1 << 20);
        let result = shown(&long, NAME_MAX_CHARS);
        assert_eq!(result.chars().count(), NAME_MAX_CHARS + 1);
        assert!(result.ends_with('…'));
        assert_eq!(shown("abc", 3), "abc");
        assert_eq!(shown("abcd", 3), "abc…");
        // The bound is on what is shown, escapes included.
        assert_eq!(shown("\u{0}\u{0}\u{0}\u{0}", 13), "\\u0000\\u0000…");
        let escapes = shown(&"\u{7f}".repeat(10_000), MESSAGE_MAX_CHARS);
        assert!(
            escapes.chars().count() <= MESSAGE_MAX_CHARS + 1,
            "{}",
            escapes.len()
        );
    }
}

//! Outside text (a server's error, a decoder's complaint) made safe for a NATS header value.
//!
//! async-nats panics on a header value with `\r` or `\n`, and Switchboard's validation errors
//! are multi-line pydantic reports; a panic there kills the delivery task before the message is
//! parked or acknowledged, so it comes back forever. Every header value built from text tgingest
//! did not write itself goes through [`header_value`].
//!
//! Hand-written rather than a crate: what is needed is a dozen lines (escape what a header or a
//! terminal must not see, cut at a char boundary), and no well-kept crate does exactly that.

use async_nats::HeaderValue;

/// Longest header value [`header_value`] produces, in bytes (the `…` marking a cut included).
/// Far below nats-server's payload limit, and room for the MCP client's 1000-byte clip of a
/// server error once its line breaks are escaped.
pub const MAX_HEADER_VALUE: usize = 2048;

/// Marks a value cut at [`MAX_HEADER_VALUE`].
const CUT: &str = "…";

/// A valid header value carrying `text` on one line: line breaks become `\n`, every other
/// control character (and Unicode line separators and bidi overrides, which can disguise what a
/// terminal shows) becomes `\u{…}`; surrounding whitespace is trimmed (NATS trims it on read);
/// the result is cut at a char boundary to at most [`MAX_HEADER_VALUE`] bytes, ending in `…`
/// when cut. Never panics, whatever `text` is.
pub fn header_value(text: &str) -> HeaderValue {
    let one_line = escape(text.trim());
    let one_line = one_line.trim();
    let value = if one_line.len() <= MAX_HEADER_VALUE {
        one_line.to_string()
    } else {
        // `str::floor_char_boundary` is newer than the crate's MSRV.
        let mut end = MAX_HEADER_VALUE - CUT.len();
        while !one_line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}{CUT}", &one_line[..end])
    };
    // Cannot fail: `escape` removed every `\r` and `\n`. Kept fallible anyway so no text can
    // ever reach async-nats' panicking `From<String>`.
    value.parse().unwrap_or_default()
}

/// `text` with line breaks written `\n` (a `\r\n` pair counts as one) and other invisible or
/// layout-changing characters written `\u{…}`.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {
                chars.next();
                out.push_str("\\n");
            }
            '\n' | '\r' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

/// Control characters, Unicode line and paragraph separators, and bidi controls.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYDANTIC: &str = "1 validation error for IngestEnvelopeV1\nsource.channel\n  Input should be 'telegram_user_client', 'telegram_bot', 'slack', 'email' or 'api' [type=literal_error, input_value='telegram', input_type=str]\n    For further information visit https://errors.pydantic.dev/2.11/v/literal_error";

    #[test]
    fn a_multi_line_pydantic_report_becomes_one_readable_line() {
        let v = header_value(PYDANTIC);
        let s = v.as_str();
        assert!(!s.contains(['\r', '\n']));
        assert!(s.starts_with("1 validation error for IngestEnvelopeV1\\nsource.channel\\n  Input should be 'telegram_user_client'"));
        assert!(s.ends_with("errors.pydantic.dev/2.11/v/literal_error"));
    }

    #[test]
    fn control_characters_separators_and_bidi_overrides_are_escaped() {
        let s = header_value("a\r\nb\rc\td\u{1b}[31me\u{0}f\u{85}g\u{2028}h\u{202e}i").to_string();
        assert_eq!(
            s,
            "a\\nb\\nc\\td\\u{1b}[31me\\u{0}f\\u{85}g\\u{2028}h\\u{202e}i"
        );
        assert!(!s.chars().any(needs_escape));
    }

    #[test]
    fn non_ascii_text_is_kept_and_long_text_is_cut_at_a_char_boundary() {
        assert_eq!(
            header_value("  Неверный «конверт» ✗  ").as_str(),
            "Неверный «конверт» ✗"
        );
        let long = "ж€😀\n".repeat(2000);
        let v = header_value(&long);
        assert!(v.as_str().len() <= MAX_HEADER_VALUE, "{}", v.as_str().len());
        assert!(v.as_str().ends_with(CUT));
        assert!(!v.as_str().contains('\n'));
    }

    #[test]
    fn empty_or_blank_text_is_an_empty_value() {
        assert_eq!(header_value("").as_str(), "");
        assert_eq!(header_value(" \r\n ").as_str(), "");
    }
}

//! Folding text to the shapes the detectors know: every decimal digit (Unicode general
//! category Nd: Persian ۰–۹, Arabic-Indic ٠–٩, Devanagari ०–९, fullwidth ０–９ …) to its ASCII
//! digit, fullwidth ASCII forms (`＋`, `：`, `Ａ`) to ASCII, the ideographic space to a space and
//! the Arabic thousands and decimal separators to `,` and `.`.
//!
//! The detectors run on the folded text and their spans are mapped back, so the original
//! characters are what gets masked. Text with nothing to fold (most of it) is not copied.

use std::borrow::Cow;
use std::ops::Range;

/// Code points of the digit zero of every Nd block (Unicode 14). Unicode guarantees that each
/// block is 0–9 in ten consecutive code points, so `c - zero` is the value. Hand-written because
/// std has no Nd digit value and `regex-syntax` keeps its tables private; generated with
/// Python's `unicodedata` (`category == "Nd" and digit == 0`).
#[rustfmt::skip]
const ND_ZEROS: &[u32] = &[
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
    0xFF10, 0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0,
    0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x16A60, 0x16AC0,
    0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E950, 0x1FBF0,
];

/// The value of `c` if it is a decimal digit of any script.
pub fn digit_value(c: char) -> Option<u32> {
    let cp = u32::from(c);
    if c.is_ascii() {
        return c.to_digit(10);
    }
    let i = ND_ZEROS.partition_point(|&z| z <= cp);
    let zero = *ND_ZEROS.get(i.checked_sub(1)?)?;
    let v = cp - zero;
    (v < 10).then_some(v)
}

/// What `c` folds to, if anything.
fn fold_char(c: char) -> Option<char> {
    let cp = u32::from(c);
    // Fast exits for the big blocks with nothing to fold (Latin, Greek, Cyrillic, Hebrew; CJK
    // but the ideographic space; Hangul): this runs on every non-ASCII character.
    if cp < 0x660 || (0xABFA..0xFF01).contains(&cp) {
        return None;
    }
    if (0x1C5A..0xA620).contains(&cp) {
        return (cp == 0x3000).then_some(' ');
    }
    if let Some(v) = digit_value(c) {
        return char::from_digit(v, 10);
    }
    match c {
        // Fullwidth ASCII forms.
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0),
        '\u{3000}' => Some(' '),
        '\u{066C}' => Some(','),
        '\u{066B}' => Some('.'),
        _ => None,
    }
}

/// Text as the detectors see it, and the way back to the original's byte offsets.
#[derive(Debug)]
pub struct Folded<'a> {
    /// The folded text (borrowed when nothing needed folding).
    pub text: Cow<'a, str>,
    /// For each byte offset of the folded text (and its end), the original offset; `None` when
    /// nothing was folded and offsets are the same.
    map: Option<Vec<usize>>,
}

impl Folded<'_> {
    /// The original byte range of the folded range `r`.
    pub fn original(&self, r: Range<usize>) -> Range<usize> {
        match &self.map {
            None => r,
            Some(map) => map[r.start]..map[r.end],
        }
    }
}

/// The lowest UTF-8 lead byte of a character [`fold_char`] may fold (U+0640 and up): Latin,
/// Greek and Cyrillic text (lead bytes up to 0xD8) is passed over by a byte scan.
const FIRST_FOLDABLE_LEAD: u8 = 0xD9;

/// Folds `text` (see the module doc); borrows it when there is nothing to fold.
pub fn fold(text: &str) -> Folded<'_> {
    // Bytes from 0xD9 up are lead bytes (continuation bytes stop at 0xBF): a char boundary.
    let nothing = match text.bytes().position(|b| b >= FIRST_FOLDABLE_LEAD) {
        None => true,
        Some(at) => !text[at..].chars().any(|c| fold_char(c).is_some()),
    };
    if nothing {
        return Folded {
            text: Cow::Borrowed(text),
            map: None,
        };
    }
    let mut out = String::with_capacity(text.len());
    let mut map = Vec::with_capacity(text.len() + 1);
    for (i, c) in text.char_indices() {
        let f = fold_char(c).unwrap_or(c);
        for _ in 0..f.len_utf8() {
            map.push(i);
        }
        out.push(f);
    }
    map.push(text.len());
    Folded {
        text: Cow::Owned(out),
        map: Some(map),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scripts_digits_have_their_values() {
        assert_eq!(digit_value('7'), Some(7));
        assert_eq!(digit_value('۷'), Some(7));
        assert_eq!(digit_value('٣'), Some(3));
        assert_eq!(digit_value('९'), Some(9));
        assert_eq!(digit_value('０'), Some(0));
        assert_eq!(digit_value('a'), None);
        assert_eq!(digit_value('٬'), None);
    }

    #[test]
    fn folded_spans_map_back_to_the_original_characters() {
        let text = "کد: ۸۸۳۰۹ ok";
        let f = fold(text);
        assert_eq!(f.text, "کد: 88309 ok");
        let at = f.text.find("88309").unwrap();
        let orig = f.original(at..at + 5);
        assert_eq!(&text[orig], "۸۸۳۰۹");
    }

    #[test]
    fn the_byte_scan_passes_over_nothing_that_folds() {
        // Every character below the first foldable lead byte folds to nothing.
        for cp in 0..0x640u32 {
            let c = char::from_u32(cp).expect("below the surrogates");
            let mut buf = [0u8; 4];
            assert!(c.encode_utf8(&mut buf).as_bytes()[0] < FIRST_FOLDABLE_LEAD || c.is_ascii());
            assert_eq!(fold_char(c), None, "{c:?} would fold");
        }
        assert_eq!(fold("Привет, ۱۲ and ٣").text, "Привет, 12 and 3");
    }

    #[test]
    fn text_without_anything_to_fold_is_borrowed() {
        assert!(matches!(fold("привет 123").text, Cow::Borrowed(_)));
        assert_eq!(fold("＋８１ ８０").text, "+81 80");
    }
}

//! Secret canaries in the form `#[derive(Debug)]` prints bytes: decimal lists (`[165, 165, …]`,
//! or one number per line with `{:#?}`). Hex and base64 windows miss that form, so a Debug
//! regression that prints a key would pass a canary that looks only for those.

/// Numbers per window: eight consecutive bytes of a secret do not occur in a log by chance.
pub const DECIMAL_WINDOW: usize = 8;

/// Every run of [`DECIMAL_WINDOW`] consecutive bytes of `secret`, as decimal numbers joined by
/// commas without spaces (compare with [`squeeze`]d text).
pub fn decimal_windows(secret: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = secret
        .windows(DECIMAL_WINDOW)
        .map(|w| w.iter().map(u8::to_string).collect::<Vec<_>>().join(","))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `text` without whitespace, so `[165, 165]`, `[165,165]` and a `{:#?}` list spread over lines
/// all read `165,165`.
pub fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// The first decimal window of `secret` that `text` shows as a list of whole numbers (not as
/// the tail or head of longer numbers), if any.
pub fn decimal_list_in(text: &str, secret: &[u8]) -> Option<String> {
    let hay = squeeze(text);
    let bytes = hay.as_bytes();
    decimal_windows(secret).into_iter().find(|window| {
        hay.match_indices(window.as_str()).any(|(start, _)| {
            let end = start + window.len();
            let before = start > 0 && bytes[start - 1].is_ascii_digit();
            let after = end < bytes.len() && bytes[end].is_ascii_digit();
            !before && !after
        })
    })
}

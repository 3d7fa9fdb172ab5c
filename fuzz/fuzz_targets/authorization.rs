//! `parse_authorization` on arbitrary input: the first byte (mod 17) is the
//! keyword's length, taken from the start of the rest; the remainder is the
//! header value. A lone byte stands for a missing header.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rocket_advanced_token::{parse_authorization, Error};

/// Python's `bytes.split()` separators.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}')
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let split = text
        .char_indices()
        .nth(usize::from(first % 17))
        .map_or(text.len(), |(i, _)| i);
    let (keyword, header) = text.split_at(split);
    let header = if rest.is_empty() { None } else { Some(header) };

    match parse_authorization(header, keyword) {
        Ok(token) => {
            let header = header.expect("a token from no header");
            assert!(!token.is_empty(), "empty token from {header:?}");
            assert!(
                !token.chars().any(is_separator),
                "token {token:?} has whitespace"
            );
            // Exactly two parts: the keyword, then the token.
            let parts: Vec<&str> = header
                .split(is_separator)
                .filter(|p| !p.is_empty())
                .collect();
            assert_eq!(parts.len(), 2, "{header:?}");
            assert!(
                parts[0].eq_ignore_ascii_case(keyword),
                "{header:?} vs {keyword:?}"
            );
            assert_eq!(parts[1], token);
        }
        Err(Error::NotAuthenticated | Error::NoCredentials | Error::TokenHasSpaces) => {}
        Err(e) => panic!("unexpected error {e:?} for {header:?}"),
    }
});

//! The login body parsers on arbitrary input: the first byte picks JSON,
//! form-urlencoded or multipart (whose boundary is the body's first line);
//! the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rocket_advanced_token::__fuzz::login_body;

/// Python's `str.isspace()`, which DRF strips from the username.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match login_body(kind, body) {
        Ok((username, password)) => {
            assert!(!username.is_empty(), "blank username accepted");
            assert_eq!(
                username.trim_matches(is_py_space),
                username,
                "username not trimmed"
            );
            assert!(!password.is_empty(), "blank password accepted");
        }
        Err(status) => assert_eq!(status, 400, "login body answered {status}"),
    }
});

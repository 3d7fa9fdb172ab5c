//! Tokens: generation, digests, and parsing the `Authorization` header.

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// Bytes of CSPRNG output in a token: 256 bits.
const TOKEN_BYTES: usize = 32;
/// A token is its bytes in lowercase hex.
pub(crate) const TOKEN_LEN: usize = TOKEN_BYTES * 2;

/// A fresh token: 256 bits from the operating system's CSPRNG, as 64
/// lowercase hex characters (URL-safe, no whitespace). It is shown to the
/// client once; only its [`digest`] is stored.
pub(crate) fn generate() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The SHA-256 digest of a token: what the database keeps, in lowercase
/// hex ([`Digest::hex`]). A fast hash is right here: the token has 256 bits
/// of entropy, so there is nothing to brute-force, and the digest can be
/// looked up by a unique index.
pub(crate) fn digest(token: &str) -> Digest {
    Digest(Sha256::digest(token.as_bytes()).into())
}

/// A SHA-256 digest, its 32 bytes held inline: every guarded request makes
/// one, the token cache is keyed by it and its
/// [`AuthUser`](crate::AuthUser) keeps it, so it costs no allocation, and
/// no hex encoding until the database needs it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest([u8; 32]);

impl Digest {
    /// The digest's bytes.
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest of 64 hex digits, as the database stores it (lowercase;
    /// uppercase reads as the same digest); `None` for anything else.
    pub(crate) fn from_hex(hex: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex, &mut bytes).ok()?;
        Some(Digest(bytes))
    }

    /// The digest in lowercase hex, as the database stores it.
    pub(crate) fn hex(&self) -> Hex {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(self.0, &mut hex).expect("32 bytes are 64 hex digits");
        Hex(hex)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A digest in lowercase hex, held inline; it reads as a `&str`.
pub(crate) struct Hex([u8; 64]);

impl std::ops::Deref for Hex {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

/// The length of a DRF `authtoken` key: 20 random bytes in lowercase hex.
const DRF_KEY_LEN: usize = 40;

/// The length of a UUID string, and its groups of hex digits.
const UUID_LEN: usize = 36;
const UUID_GROUPS: [usize; 5] = [8, 4, 4, 4, 12];

/// Whether every byte is a lowercase hex digit.
fn lower_hex(s: &[u8]) -> bool {
    // Without an early exit, so the loop vectorises: every guarded request
    // runs it on 64 bytes.
    s.iter().fold(true, |ok, b| {
        ok & (b.wrapping_sub(b'0') < 10 || b.wrapping_sub(b'a') < 6)
    })
}

/// Whether `token` has a shape a stored token can have: the crate's own (64
/// lowercase hex, from [`generate`]), or one brought in by `import-django`:
/// a DRF key (40 lowercase hex) or a drf_advanced_token key (a UUID as
/// Python's `str(uuid4())` writes it: 8-4-4-4-12 lowercase hex). Anything
/// else is answered "Invalid token." without asking the database.
pub(crate) fn well_formed(token: &str) -> bool {
    let b = token.as_bytes();
    match b.len() {
        TOKEN_LEN | DRF_KEY_LEN => lower_hex(b),
        UUID_LEN => {
            let mut groups = b.split(|&c| c == b'-');
            UUID_GROUPS
                .iter()
                .all(|&n| groups.next().is_some_and(|g| g.len() == n && lower_hex(g)))
                && groups.next().is_none()
        }
        _ => false,
    }
}

/// Python's `bytes.split()` separators, which DRF splits the header on.
fn is_py_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The usual header, `<keyword> <token>` with one space and no other
/// whitespace, without splitting it (every guarded request parses one).
/// `None` for anything else, which the general parse answers.
fn keyword_space_token<'a>(header: &'a str, keyword: &str) -> Option<&'a str> {
    // A keyword that is empty or holds whitespace can never be the first
    // part of a split header: leave it to the general parse.
    if keyword.is_empty() || keyword.bytes().any(|b| b <= b' ') {
        return None;
    }
    let (kw, token) = header.split_at_checked(keyword.len())?;
    let token = token.strip_prefix(' ')?;
    let ok = kw.eq_ignore_ascii_case(keyword)
        && !token.is_empty()
        // Every whitespace byte is at most b' '; a token with control
        // bytes takes the general path. Without an early exit, so the loop
        // vectorises.
        && token.bytes().fold(true, |ok, b| ok & (b > b' '));
    ok.then_some(token)
}

/// Parses an `Authorization` header value the way DRF's
/// `TokenAuthentication.authenticate` does: split on whitespace, compare the
/// keyword case-insensitively, require exactly two parts.
///
/// Returns the token string, or the DRF error for the header.
pub fn parse_authorization<'a>(header: Option<&'a str>, keyword: &str) -> Result<&'a str, Error> {
    let Some(header) = header else {
        return Err(Error::NotAuthenticated);
    };
    if let Some(token) = keyword_space_token(header, keyword) {
        return Ok(token);
    }
    let mut parts = header
        .as_bytes()
        .split(|b| is_py_whitespace(*b))
        .filter(|p| !p.is_empty());
    match parts.next() {
        Some(kw) if kw.eq_ignore_ascii_case(keyword.as_bytes()) => {}
        _ => return Err(Error::NotAuthenticated),
    }
    let token = parts.next().ok_or(Error::NoCredentials)?;
    if parts.next().is_some() {
        return Err(Error::TokenHasSpaces);
    }
    // The parts are split at ASCII bytes, so each is valid UTF-8.
    std::str::from_utf8(token).map_err(|_| Error::InvalidToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(well_formed(&a));
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            &*digest("abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::from_hex(&digest("abc").hex()), Some(digest("abc")));
        assert_eq!(Digest::from_hex(&digest("abc").hex()[..62]), None);
        assert!(!well_formed(&digest("abc").hex()[..63]));
    }

    #[test]
    fn well_formed_accepts_exactly_three_shapes() {
        for ok in [
            "a".repeat(64),
            "0123456789abcdef0123456789abcdef01234567".to_owned(),
            "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b".to_owned(),
            "3f1c2b9e-7a4d-4c1e-9b2a-0d5e6f7a8b9c".to_owned(),
        ] {
            assert!(well_formed(&ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            &"a".repeat(63),
            &"a".repeat(65),
            &"a".repeat(39),
            &"a".repeat(41),
            &"A".repeat(40),
            "0123456789abcdef0123456789abcdef0123456g",
            "3F1C2B9E-7A4D-4C1E-9B2A-0D5E6F7A8B9C",
            "3f1c2b9e7a4d4c1e9b2a0d5e6f7a8b9c",
            "{3f1c2b9e-7a4d-4c1e-9b2a-0d5e6f7a8b9}",
            "3f1c2b9e-7a4d-4c1e-9b2a0-d5e6f7a8b9c",
            "3f1c2b9e-7a4d-4c1e-9b2a-0d5e6f7a8b9-",
            "3f1c2b9e-7a4d-4c1e-9b2a-0d5e6f7a8b9g",
            "3f1c2b9e--a4d-4c1e-9b2a-0d5e6f7a8b9c",
            "3f1c2b9e-7a4d-4c1e-9b2a-0d5e6f7a8b9c0",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }

    /// What the parser gave, comparable: the token, or the error's text.
    fn parsed<'a>(header: Option<&'a str>, keyword: &str) -> Result<&'a str, String> {
        parse_authorization(header, keyword).map_err(|e| e.to_string())
    }

    fn err(e: Error) -> Result<&'static str, String> {
        Err(e.to_string())
    }

    #[test]
    fn header_parsing_follows_drf() {
        let t = "a".repeat(64);
        let h = format!("Token {t}");
        assert_eq!(parsed(Some(&h), "Token"), Ok(t.as_str()));
        let h = format!("token\t {t}  ");
        assert_eq!(parsed(Some(&h), "Token"), Ok(t.as_str()));
        assert_eq!(parsed(None, "Token"), err(Error::NotAuthenticated));
        assert_eq!(parsed(Some(""), "Token"), err(Error::NotAuthenticated));
        assert_eq!(
            parsed(Some("Bearer x"), "Token"),
            err(Error::NotAuthenticated)
        );
        assert_eq!(parsed(Some("Token"), "Token"), err(Error::NoCredentials));
        assert_eq!(parsed(Some("Token   "), "Token"), err(Error::NoCredentials));
        assert_eq!(
            parsed(Some("Token a b"), "Token"),
            err(Error::TokenHasSpaces)
        );
        assert_eq!(parsed(Some("BEARER x"), "Bearer"), Ok("x"));
        assert_eq!(
            parsed(Some("Tokens x"), "Token"),
            err(Error::NotAuthenticated)
        );
    }

    // ----- property tests ---------------------------------------------------

    use proptest::prelude::*;

    /// The separators of Python's `bytes.split()`, listed independently of
    /// `is_py_whitespace`.
    const PY_BYTES_WS: [char; 6] = [' ', '\t', '\n', '\r', '\x0b', '\x0c'];

    /// A straightforward model of DRF's `TokenAuthentication.authenticate`:
    /// `auth = header.split()`, compare `auth[0].lower()` with the keyword,
    /// then count the parts. Lowercases both sides, as Python does, rather
    /// than using `eq_ignore_ascii_case` like the code under test.
    #[allow(clippy::manual_ignore_case_cmp)]
    fn reference(header: Option<&str>, keyword: &str) -> Result<String, Error> {
        let Some(header) = header else {
            return Err(Error::NotAuthenticated);
        };
        let mut parts: Vec<String> = Vec::new();
        let mut current = String::new();
        for c in header.chars() {
            if PY_BYTES_WS.contains(&c) {
                if !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                }
            } else {
                current.push(c);
            }
        }
        if !current.is_empty() {
            parts.push(current);
        }
        if parts.is_empty() || parts[0].to_ascii_lowercase() != keyword.to_ascii_lowercase() {
            return Err(Error::NotAuthenticated);
        }
        match parts.len() {
            1 => Err(Error::NoCredentials),
            2 => Ok(parts.swap_remove(1)),
            _ => Err(Error::TokenHasSpaces),
        }
    }

    /// Checks `parse_authorization` against the model and its own invariants.
    fn check(header: Option<&str>, keyword: &str) -> Result<(), TestCaseError> {
        let got = parse_authorization(header, keyword);
        let want = reference(header, keyword);
        prop_assert_eq!(
            got.as_ref()
                .map(|t| t.to_string())
                .map_err(|e| e.to_string()),
            want.map_err(|e| e.to_string()),
            "header {:?}",
            header
        );
        if let Ok(token) = got {
            prop_assert!(!token.is_empty());
            prop_assert!(!token.bytes().any(|b| PY_BYTES_WS.contains(&(b as char))));
            // The token is a slice of the header, not a copy.
            let h = header.unwrap();
            let start = token.as_ptr() as usize - h.as_ptr() as usize;
            prop_assert!(start + token.len() <= h.len());
        }
        Ok(())
    }

    /// A run of Python `bytes.split()` whitespace, `min..4` characters long.
    fn ws(min: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PY_BYTES_WS.to_vec()), min..4)
            .prop_map(|v| v.into_iter().collect())
    }

    /// Token-ish parts, including characters that are whitespace elsewhere
    /// (Unicode, `str.split()`) but not to `bytes.split()`.
    fn part() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9a-f]{64}",
            "[A-Za-z0-9._~+/=-]{1,12}",
            "[a-z\u{1c}\u{1f}\u{85}\u{a0}\u{2003}\u{3000}é]{1,6}",
        ]
    }

    /// How the first word of a generated header relates to the keyword.
    #[derive(Debug, Clone)]
    enum First {
        /// The keyword, each letter's case flipped or not.
        Keyword(Vec<bool>),
        /// The keyword with a suffix: must not match.
        Longer(String),
        /// Some other word (may match by chance; the model decides).
        Other(String),
    }

    fn first() -> impl Strategy<Value = First> {
        prop_oneof![
            4 => prop::collection::vec(any::<bool>(), 0..12).prop_map(First::Keyword),
            1 => "[a-z0-9]{1,3}".prop_map(First::Longer),
            1 => "[A-Za-z]{0,8}".prop_map(First::Other),
        ]
    }

    fn flip_case(word: &str, flips: &[bool]) -> String {
        word.chars()
            .enumerate()
            .map(|(i, c)| {
                if flips.get(i).copied().unwrap_or(false) {
                    if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                } else {
                    c
                }
            })
            .collect()
    }

    #[test]
    fn the_usual_header_parses_as_the_split_does() {
        let cases = [
            ("Token abc", "Token"),
            ("token abc", "Token"),
            ("Token  abc", "Token"),
            ("Token abc ", "Token"),
            ("Token a\x01b", "Token"),
            ("Tokenabc", "Token"),
            ("Token ", "Token"),
            // Keywords no split header can start with.
            ("a b x", "a b"),
            (" x", ""),
            ("x", ""),
        ];
        for (header, keyword) in cases {
            check(Some(header), keyword).unwrap();
        }
        assert_eq!(
            parse_authorization(Some("tOkEn abc"), "Token").unwrap(),
            "abc"
        );
    }

    proptest! {
        #[test]
        fn generated_headers_follow_drf(
            keyword in "[A-Za-z][A-Za-z0-9_-]{0,7}",
            lead in ws(0),
            first in first(),
            parts in prop::collection::vec((ws(1), part()), 0..4),
            trail in ws(0),
        ) {
            let (word, keyword_matches) = match &first {
                First::Keyword(flips) => (flip_case(&keyword, flips), true),
                First::Longer(suffix) => (format!("{keyword}{suffix}"), false),
                First::Other(w) => (w.clone(), w.eq_ignore_ascii_case(&keyword)),
            };
            let mut header = format!("{lead}{word}");
            for (sep, p) in &parts {
                header.push_str(sep);
                header.push_str(p);
            }
            header.push_str(&trail);

            check(Some(&header), &keyword)?;

            // What the header was built to give, independently of the model.
            let expected = if word.is_empty() {
                // No keyword at all: the first part (if any) is not it.
                None
            } else if !keyword_matches {
                Some(Err(Error::NotAuthenticated))
            } else {
                Some(match parts.len() {
                    0 => Err(Error::NoCredentials),
                    1 => Ok(parts[0].1.as_str()),
                    _ => Err(Error::TokenHasSpaces),
                })
            };
            if let Some(expected) = expected {
                prop_assert_eq!(
                    parse_authorization(Some(&header), &keyword).map_err(|e| e.to_string()),
                    expected.map_err(|e| e.to_string())
                );
            }
        }

        #[test]
        fn arbitrary_strings_never_panic_and_match_the_model(
            header in any::<Option<String>>(),
            keyword in any::<String>(),
        ) {
            check(header.as_deref(), &keyword)?;
        }

        #[test]
        fn whitespace_heavy_strings_match_the_model(
            header in "[ \t\n\r\u{b}\u{c}\u{1c}\u{85}\u{a0}TtOoKkEeNnx]{0,20}",
        ) {
            check(Some(&header), "Token")?;
            check(Some(&header), "tOKEN")?;
        }
    }
}

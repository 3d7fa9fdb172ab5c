//! Tokens: generation, digests, and parsing the `Authorization` header.

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::Error;

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
    hex(&bytes)
}

/// The SHA-256 digest of a token, in lowercase hex: what the database keeps.
/// A fast hash is right here: the token has 256 bits of entropy, so there is
/// nothing to brute-force, and the digest can be looked up by a unique index.
pub(crate) fn digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Whether `token` could have been issued by [`generate`]. Anything else is
/// answered "Invalid token." without asking the database.
pub(crate) fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN && token.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Python's `bytes.split()` separators, which DRF splits the header on.
fn is_py_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
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
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!well_formed(&digest("abc")[..63]));
    }

    #[test]
    fn header_parsing_follows_drf() {
        let t = "a".repeat(64);
        let h = format!("Token {t}");
        assert_eq!(parse_authorization(Some(&h), "Token"), Ok(t.as_str()));
        let h = format!("token\t {t}  ");
        assert_eq!(parse_authorization(Some(&h), "Token"), Ok(t.as_str()));
        assert_eq!(parse_authorization(None, "Token"), Err(Error::NotAuthenticated));
        assert_eq!(parse_authorization(Some(""), "Token"), Err(Error::NotAuthenticated));
        assert_eq!(parse_authorization(Some("Bearer x"), "Token"), Err(Error::NotAuthenticated));
        assert_eq!(parse_authorization(Some("Token"), "Token"), Err(Error::NoCredentials));
        assert_eq!(parse_authorization(Some("Token   "), "Token"), Err(Error::NoCredentials));
        assert_eq!(parse_authorization(Some("Token a b"), "Token"), Err(Error::TokenHasSpaces));
        assert_eq!(parse_authorization(Some("BEARER x"), "Bearer"), Ok("x"));
        assert_eq!(parse_authorization(Some("Tokens x"), "Token"), Err(Error::NotAuthenticated));
    }
}

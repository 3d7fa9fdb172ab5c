//! The password-hash verification chain: the crate's own argon2id hashes,
//! and the formats that users brought from elsewhere (other argon2
//! parameters, bcrypt, Django's hashers), so that they can log in with their
//! old password once and have it re-hashed.
//!
//! * [`identify`] names the format of a stored hash from its shape alone.
//! * [`verify`] checks a password against it and says whether a match
//!   should be re-hashed: anything but argon2id with the crate's current
//!   parameters ([`Params::default()`]) should.
//!
//! Everything here is synchronous and CPU-heavy: callers run it on the
//! hashing threads of [`crate::password`], never on the async runtime.
//!
//! # Work caps
//!
//! A stored hash chooses its own cost, so a corrupt or hostile row could ask
//! for hours of CPU or gigabytes of memory per login attempt. Parameters past
//! these caps make the hash [`Verdict::Unverifiable`] (logged, never a
//! match) without computing anything:
//!
//! | format | cap |
//! | --- | --- |
//! | argon2 | memory `m` ≤ 1 GiB, and `m × t` ≤ 4 GiB (memory passes) |
//! | bcrypt, Django `bcrypt`/`bcrypt_sha256` | cost ≤ 16 (2¹⁶ rounds, some seconds) |
//! | Django `pbkdf2_sha256`/`pbkdf2_sha1` | iterations ≤ 10,000,000 |
//! | Django `scrypt` | N ≤ 2²⁰, memory `128·N·r` ≤ 1 GiB, `N·r·p` ≤ 2²⁴ |
//!
//! Every default of Django up to 5.x, of the bcrypt libraries and of
//! argon2-cffi is far below them.
//!
//! # Timing
//!
//! A check costs what the stored hash's own parameters cost: a user whose
//! hash is still, say, `pbkdf2_sha256` with 390,000 iterations takes a
//! different time to reject than an argon2id user, until they log in once
//! and the hash is replaced. Hashes that are never checked (unusable,
//! unknown, malformed, over a cap) return at once; the caller equalises
//! their time with a dummy argon2id check.

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest argon2 memory accepted, in KiB (1 GiB).
const MAX_ARGON2_M_KIB: u32 = 1 << 20;
/// Largest argon2 `m × t` accepted, in KiB passes (4 GiB).
const MAX_ARGON2_WORK: u64 = 4 << 20;
/// Largest bcrypt cost accepted.
const MAX_BCRYPT_COST: u32 = 16;
/// Largest PBKDF2 iteration count accepted.
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;
/// Largest scrypt `log2(N)` accepted.
const MAX_SCRYPT_LOG_N: u32 = 20;
/// Largest scrypt memory `128·N·r` accepted, in bytes (1 GiB).
const MAX_SCRYPT_MEMORY: u64 = 1 << 30;
/// Largest scrypt work `N·r·p` accepted.
const MAX_SCRYPT_WORK: u64 = 1 << 24;

/// The format of a stored password hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    /// argon2id PHC with the crate's current parameters: nothing to upgrade.
    Target,
    /// Any other argon2 PHC string (`$argon2i$`, `$argon2id$`, `$argon2d$`).
    Argon2,
    /// Modular-crypt bcrypt: `$2a$`, `$2b$` or `$2y$`.
    Bcrypt,
    /// Django's `pbkdf2_sha256$<iterations>$<salt>$<base64>`.
    DjangoPbkdf2Sha256,
    /// Django's `pbkdf2_sha1$<iterations>$<salt>$<base64>`.
    DjangoPbkdf2Sha1,
    /// Django's `argon2$` followed by an argon2 PHC string without its `$`.
    DjangoArgon2,
    /// Django's `bcrypt$` followed by a bcrypt hash of the password.
    DjangoBcrypt,
    /// Django's `bcrypt_sha256$` followed by a bcrypt hash of the hex
    /// SHA-256 of the password.
    DjangoBcryptSha256,
    /// Django's `scrypt$<N>$<salt>$<r>$<p>$<base64>` (64-byte key).
    DjangoScrypt,
    /// Django's unusable password (`!` and anything): never verifies.
    Unusable,
    /// Anything else: never verifies.
    Unknown,
}

/// The outcome of [`verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The password matches; `needs_upgrade` unless the hash is [`Scheme::Target`].
    Match {
        /// Whether the stored hash should be replaced by a new argon2id one.
        needs_upgrade: bool,
    },
    /// The password does not match.
    Mismatch,
    /// The stored hash was not checked (unusable, unknown, malformed or
    /// over a work cap): never a match, and it took no time.
    Unverifiable,
}

impl Verdict {
    /// Whether the password matched.
    pub(crate) fn matches(self) -> bool {
        matches!(self, Verdict::Match { .. })
    }

    /// Whether the password matched a hash that should be re-hashed.
    pub(crate) fn needs_upgrade(self) -> bool {
        matches!(
            self,
            Verdict::Match {
                needs_upgrade: true
            }
        )
    }
}

/// Why a stored hash could not be checked (for the log; never the hash).
type Checked = Result<bool, String>;

/// The format of `stored`, from its shape alone (nothing is decoded).
pub(crate) fn identify(stored: &str) -> Scheme {
    if stored.starts_with('!') {
        return Scheme::Unusable;
    }
    if let Some(rest) = stored.strip_prefix('$') {
        if ["argon2i$", "argon2id$", "argon2d$"]
            .iter()
            .any(|p| rest.starts_with(p))
        {
            return if is_target(stored) {
                Scheme::Target
            } else {
                Scheme::Argon2
            };
        }
        if ["2a$", "2b$", "2y$"].iter().any(|p| rest.starts_with(p)) {
            return Scheme::Bcrypt;
        }
        return Scheme::Unknown;
    }
    match stored.split_once('$').map(|(algorithm, _)| algorithm) {
        Some("pbkdf2_sha256") => Scheme::DjangoPbkdf2Sha256,
        Some("pbkdf2_sha1") => Scheme::DjangoPbkdf2Sha1,
        Some("argon2") => Scheme::DjangoArgon2,
        Some("bcrypt") => Scheme::DjangoBcrypt,
        Some("bcrypt_sha256") => Scheme::DjangoBcryptSha256,
        Some("scrypt") => Scheme::DjangoScrypt,
        _ => Scheme::Unknown,
    }
}

/// Whether `stored` is argon2id, version 0x13, with [`Params::default()`].
fn is_target(stored: &str) -> bool {
    let p = Params::default();
    let prefix = format!(
        "$argon2id$v=19$m={},t={},p={}$",
        p.m_cost(),
        p.t_cost(),
        p.p_cost()
    );
    stored.starts_with(&prefix)
}

/// Checks `password` against `stored`, whatever its [`Scheme`].
///
/// argon2 runs in `area` when it is large enough for the stored parameters,
/// otherwise in a fresh allocation (bounded by the work caps).
pub(crate) fn verify(password: &[u8], stored: &str, area: Option<&mut [Block]>) -> Verdict {
    let scheme = identify(stored);
    let checked = match scheme {
        Scheme::Target | Scheme::Argon2 => argon2_phc(password, stored, area),
        Scheme::DjangoArgon2 => django_argon2(password, stored, area),
        Scheme::Bcrypt => bcrypt_mcf(password, stored),
        Scheme::DjangoBcrypt => bcrypt_mcf(password, &stored["bcrypt$".len()..]),
        Scheme::DjangoBcryptSha256 => {
            let digest = hex(&Sha256::digest(password));
            bcrypt_mcf(digest.as_bytes(), &stored["bcrypt_sha256$".len()..])
        }
        Scheme::DjangoPbkdf2Sha256 => {
            django_pbkdf2(password, stored, pbkdf2::pbkdf2_hmac::<Sha256>, 32)
        }
        Scheme::DjangoPbkdf2Sha1 => {
            django_pbkdf2(password, stored, pbkdf2::pbkdf2_hmac::<sha1::Sha1>, 20)
        }
        Scheme::DjangoScrypt => django_scrypt(password, stored),
        Scheme::Unusable => return Verdict::Unverifiable,
        Scheme::Unknown => Err("unknown format".into()),
    };
    match checked {
        Ok(true) => Verdict::Match {
            needs_upgrade: scheme != Scheme::Target,
        },
        Ok(false) => Verdict::Mismatch,
        Err(reason) => {
            log::error!(
                "advanced_token: a stored password hash ({scheme:?}) cannot be checked: {reason}"
            );
            Verdict::Unverifiable
        }
    }
}

/// Lower-case hex, as Python's `hexdigest()`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// An argon2 PHC string (`$argon2…`). A missing `v=` means version 0x10,
/// as in the reference implementation.
fn argon2_phc(password: &[u8], phc: &str, area: Option<&mut [Block]>) -> Checked {
    let parsed = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| e.to_string())?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).map_err(|e| e.to_string())?,
        None => Version::V0x10,
    };
    let params = Params::try_from(&parsed).map_err(|e| e.to_string())?;
    let work = u64::from(params.m_cost()) * u64::from(params.t_cost());
    if params.m_cost() > MAX_ARGON2_M_KIB || work > MAX_ARGON2_WORK {
        return Err(format!(
            "argon2 m={} t={} is over the cap",
            params.m_cost(),
            params.t_cost()
        ));
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err("no salt or no hash".into());
    };
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf).map_err(|e| e.to_string())?;
    let mut out = vec![0u8; expected.len()];
    let need = params.block_count();
    let ctx = Argon2::new(algorithm, version, params);
    let computed = match area {
        Some(area) if area.len() >= need => {
            ctx.hash_password_into_with_memory(password, salt, &mut out, &mut area[..need])
        }
        _ => ctx.hash_password_into(password, salt, &mut out),
    };
    computed.map_err(|e| e.to_string())?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(&out).map_err(|e| e.to_string())? == expected)
}

/// Django's `argon2$argon2id$v=19$m=…,t=…,p=…$salt$hash`: the PHC string of
/// argon2-cffi behind Django's algorithm name.
fn django_argon2(password: &[u8], stored: &str, area: Option<&mut [Block]>) -> Checked {
    // Keep the `$` that starts the PHC string.
    argon2_phc(password, &stored["argon2".len()..], area)
}

/// A modular-crypt bcrypt hash (`$2a$`, `$2b$`, `$2y$`), passwords past 72
/// bytes truncated as every bcrypt does.
fn bcrypt_mcf(password: &[u8], mcf: &str) -> Checked {
    let mut fields = mcf.split('$');
    let (Some(""), Some("2a" | "2b" | "2y"), Some(cost)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err("not a $2a$/$2b$/$2y$ bcrypt hash".into());
    };
    let cost: u32 = cost.parse().map_err(|_| "bad bcrypt cost".to_string())?;
    if cost > MAX_BCRYPT_COST {
        return Err(format!("bcrypt cost {cost} is over the cap"));
    }
    // The crate's comparison of the digests is constant-time. Its errors
    // quote the hash, which must not reach the log.
    bcrypt::verify(password, mcf).map_err(|_| "malformed bcrypt hash".to_string())
}

/// A PBKDF2-HMAC: password, salt, iterations, output.
type Pbkdf2 = fn(&[u8], &[u8], u32, &mut [u8]);

/// Django's `pbkdf2_<digest>$<iterations>$<salt>$<base64 of the key>`, the
/// key as long as the digest (`key_len`), the salt used as its UTF-8 text.
fn django_pbkdf2(password: &[u8], stored: &str, derive: Pbkdf2, key_len: usize) -> Checked {
    let mut fields = stored.splitn(4, '$').skip(1);
    let (Some(iterations), Some(salt), Some(encoded)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err("missing fields".into());
    };
    let iterations = decimal(iterations)?;
    if iterations == 0 || iterations > MAX_PBKDF2_ITERATIONS {
        return Err(format!("{iterations} pbkdf2 iterations is out of range"));
    }
    let expected = standard_b64(encoded)?;
    if expected.len() != key_len {
        return Err("the key is not as long as the digest".into());
    }
    let mut out = vec![0u8; expected.len()];
    derive(password, salt.as_bytes(), iterations, &mut out);
    Ok(out.ct_eq(&expected).into())
}

/// Django's `scrypt$<N>$<salt>$<r>$<p>$<base64 of a 64-byte key>`, the salt
/// used as its UTF-8 text.
fn django_scrypt(password: &[u8], stored: &str) -> Checked {
    let fields: Vec<&str> = stored.splitn(6, '$').collect();
    let [_, n, salt, r, p, encoded] = fields[..] else {
        return Err("missing fields".into());
    };
    let (n, r, p) = (decimal(n)?, decimal(r)?, decimal(p)?);
    if !n.is_power_of_two() || n < 2 || n.trailing_zeros() > MAX_SCRYPT_LOG_N {
        return Err(format!("scrypt N={n} is not a power of two up to the cap"));
    }
    let (n64, r64, p64) = (u64::from(n), u64::from(r), u64::from(p));
    if 128 * n64 * r64 > MAX_SCRYPT_MEMORY || n64 * r64 * p64 > MAX_SCRYPT_WORK {
        return Err(format!("scrypt N={n} r={r} p={p} is over the cap"));
    }
    let expected = standard_b64(encoded)?;
    let log_n = u8::try_from(n.trailing_zeros()).map_err(|e| e.to_string())?;
    let params = scrypt::Params::new(log_n, r, p, expected.len()).map_err(|e| e.to_string())?;
    let mut out = vec![0u8; expected.len()];
    scrypt::scrypt(password, salt.as_bytes(), &params, &mut out).map_err(|e| e.to_string())?;
    Ok(out.ct_eq(&expected).into())
}

/// A positive decimal number, as Python's `int()` of Django's fields.
fn decimal(field: &str) -> Result<u32, String> {
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a number field is not a number".into());
    }
    field
        .parse()
        .map_err(|_| "a number field is too large".into())
}

/// Standard, padded base64, as Python's `base64.b64encode`.
fn standard_b64(encoded: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("bad base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    /// passlib's `UPASS_TABLE`, a non-ASCII password of its test suite.
    const UPASS_TABLE: &str = "t\u{e1}\u{411}\u{2113}\u{259}";

    /// `password` matches `stored`, which needs upgrading, and a changed
    /// password does not match it.
    fn assert_old_format(scheme: Scheme, password: &[u8], stored: &str) {
        assert_eq!(identify(stored), scheme, "{stored}");
        assert_eq!(
            verify(password, stored, None),
            Verdict::Match {
                needs_upgrade: true
            },
            "{stored}"
        );
        let mut wrong = password.to_vec();
        wrong.push(b'z');
        assert_eq!(verify(&wrong, stored, None), Verdict::Mismatch, "{stored}");
    }

    #[test]
    fn django_pbkdf2() {
        // django/django, tests/auth_tests/test_hashers.py: test_pbkdf2,
        // test_low_level_pbkdf2 and test_low_level_pbkdf2_sha1.
        for stored in [
            "pbkdf2_sha256$390000$seasalt$8xBlGd3jVgvJ+92hWPxi5ww0uuAuAnKgC45eudxro7c=",
            "pbkdf2_sha256$390000$seasalt2$geC/uZ92nRXDSjSxeoiBqYyRcrLzMm8xK3ro1QS1uo8=",
        ] {
            assert_old_format(Scheme::DjangoPbkdf2Sha256, "lètmein".as_bytes(), stored);
        }
        let sha1 = "pbkdf2_sha1$390000$seasalt2$aDapRanzW8aHTz97v2TcfHzWD+I=";
        assert_old_format(Scheme::DjangoPbkdf2Sha1, "lètmein".as_bytes(), sha1);
        // passlib, passlib/tests/test_handlers_django.py:
        // django_pbkdf2_sha256_test and django_pbkdf2_sha1_test.
        for (password, stored) in [
            (
                "not a password",
                "pbkdf2_sha256$10000$kjVJaVz6qsnJ$5yPHw3rwJGECpUf70daLGhOrQ5+AMxIJdz1c3bqK1Rs=",
            ),
            (
                UPASS_TABLE,
                "pbkdf2_sha256$10000$bEwAfNrH1TlQ$OgYUblFNUX1B8GfMqaCYUK/iHyO0pa7STTDdaEJBuY0=",
            ),
        ] {
            assert_old_format(Scheme::DjangoPbkdf2Sha256, password.as_bytes(), stored);
        }
        for (password, stored) in [
            (
                "not a password",
                "pbkdf2_sha1$10000$wz5B6WkasRoF$atJmJ1o+XfJxKq1+Nu1f1i57Z5I=",
            ),
            (
                UPASS_TABLE,
                "pbkdf2_sha1$10000$KZKWwvqb8BfL$rw5pWsxJEU4JrZAQhHTCO+u0f5Y=",
            ),
        ] {
            assert_old_format(Scheme::DjangoPbkdf2Sha1, password.as_bytes(), stored);
        }
    }

    #[test]
    fn django_scrypt() {
        // django/django, tests/auth_tests/test_hashers.py: test_scrypt.
        let stored = "scrypt$16384$seasalt$8$1$Qj3+9PPyRjSJIebHnG81TMjsqtaIGxNQG/aEB/NY\
                      afTJ7tibgfYz71m0ldQESkXFRkdVCBhhY8mx7rQwite/Pw==";
        assert_old_format(Scheme::DjangoScrypt, "lètmein".as_bytes(), stored);
    }

    #[test]
    fn django_argon2() {
        // django/django, tests/auth_tests/test_hashers.py: test_argon2 (an
        // old hash without a version, then one with) and
        // test_argon2_version_upgrade (100 MiB: more than the work area).
        for stored in [
            "argon2$argon2i$m=8,t=1,p=1$c29tZXNhbHQ$gwQOXSNhxiOxPOA0+PY10P9QFO\
             4NAYysnqRt1GSQLE55m+2GYDt9FEjPMHhP2Cuf0nOEXXMocVrsJAtNSsKyfg",
            "argon2$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$YC9+jJCrQhs5R6db7LlN8Q",
            "argon2$argon2id$v=19$m=102400,t=2,p=8$Y041dExhNkljRUUy$TMa6A8fPJhCAUXRhJXCXdw",
        ] {
            assert_old_format(Scheme::DjangoArgon2, b"secret", stored);
        }
        // passlib, passlib/tests/test_handlers_django.py: django_argon2_test.
        for (password, stored) in [
            (
                "password",
                "argon2$argon2i$v=19$m=256,t=1,p=1$c29tZXNhbHQ$AJFIsNZTMKTAewB4+ETN1A",
            ),
            (
                "password",
                "argon2$argon2i$v=19$m=380,t=2,p=2$c29tZXNhbHQ$SrssP8n7m/12VWPM8dvNrw",
            ),
            (
                "lètmein",
                "argon2$argon2i$v=19$m=512,t=2,p=2$V25jN1l4UUJZWkR1$MxpA1BD2Gh7+D79gaAw6sQ",
            ),
        ] {
            assert_old_format(Scheme::DjangoArgon2, password.as_bytes(), stored);
        }
    }

    #[test]
    fn django_bcrypt_sha256_and_bcrypt() {
        // passlib, passlib/tests/test_handlers_django.py:
        // django_bcrypt_sha256_test ("generated via django 1.6 hasher"); the
        // last two are past bcrypt's 72 bytes, which the SHA-256 removes.
        let long = "abc123".repeat(12);
        for (password, stored) in [
            (
                "",
                "bcrypt_sha256$$2a$06$/3OeRpbOf8/l6nPPRdZPp.nRiyYqPobEZGdNRBWihQhiFDh1ws1tu",
            ),
            (
                "lètmein",
                "bcrypt_sha256$$2a$08$NDjSAIcas.EcoxCRiArvT.MkNiPYVhrsrnJsRkLueZOoV1bsQqlmC",
            ),
            (
                UPASS_TABLE,
                "bcrypt_sha256$$2a$06$kCXUnRFQptGg491siDKNTu8RxjBGSjALHRuvhPYNFsa4Ea5d9M48u",
            ),
            (
                &long,
                "bcrypt_sha256$$2a$06$Tg/oYyZTyAf.Nb3qSgN61OySmyXA8FoY4PjGizjE1QSDfuL5MXNni",
            ),
            (
                &format!("{long}qwr"),
                "bcrypt_sha256$$2a$06$Tg/oYyZTyAf.Nb3qSgN61Ocy0BEz1RK6xslSNi8PlaLX2pe7x/KQG",
            ),
            (
                &format!("{long}xyz"),
                "bcrypt_sha256$$2a$06$Tg/oYyZTyAf.Nb3qSgN61OvY2zoRVUa2Pugv2ExVOUT2YmhvxUFUa",
            ),
        ] {
            assert_old_format(Scheme::DjangoBcryptSha256, password.as_bytes(), stored);
        }
        // passlib, passlib/tests/test_handlers_django.py: django_bcrypt_test.
        for (password, stored) in [
            (
                "",
                "bcrypt$$2a$06$DCq7YPn5Rq63x1Lad4cll.TV4S6ytwfsfvkgY8jIucDrjc8deX1s.",
            ),
            (
                UPASS_TABLE,
                "bcrypt$$2a$05$Z17AXnnlpzddNUvnC6cZNOSwMA/8oNiKnHTHTwLlBijfucQQlHjaG",
            ),
        ] {
            assert_old_format(Scheme::DjangoBcrypt, password.as_bytes(), stored);
        }
    }

    #[test]
    fn bcrypt_reference_vectors() {
        // passlib, passlib/tests/test_handlers_bcrypt.py, known_correct_hashes:
        // OpenWall crypt_blowfish 1.2's vectors (those OpenBSD agrees on),
        // py-bcrypt's (jBCrypt's), and passlib's own $2b$ one.
        let over_72 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\
                       0123456789chars after 72 are ignored";
        for (password, stored) in [
            (
                &b"U*U"[..],
                "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            ),
            (
                b"U*U*",
                "$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK",
            ),
            (
                b"",
                "$2a$05$CCCCCCCCCCCCCCCCCCCCC.7uG0VCzI2bS7j6ymqJi9CdcdxiRTWNy",
            ),
            (
                b"\xff\xa3345",
                "$2a$05$/OK.fbVrR/bpIqNJ5ianF.nRht2l/HRhr6zmCp9vYUvvsqynflf9e",
            ),
            (
                b"\xa3",
                "$2y$05$/OK.fbVrR/bpIqNJ5ianF.Sa7shbm4.OzKpvFnX1pQLmQW96oUlCq",
            ),
            (
                b"",
                "$2a$06$DCq7YPn5Rq63x1Lad4cll.TV4S6ytwfsfvkgY8jIucDrjc8deX1s.",
            ),
            (
                UPASS_TABLE.as_bytes(),
                "$2b$05$Z17AXnnlpzddNUvnC6cZNOSwMA/8oNiKnHTHTwLlBijfucQQlHjaG",
            ),
        ] {
            assert_old_format(Scheme::Bcrypt, password, stored);
        }
        // Past 72 bytes, bcrypt ignores the rest: a changed tail still matches.
        let stored = "$2a$05$abcdefghijklmnopqrstuu5s2v8.iXieOjg/.AySBTTZIIVFJeBui";
        assert!(verify(over_72.as_bytes(), stored, None).matches());
        assert!(verify(&over_72.as_bytes()[..72], stored, None).matches());
    }

    #[test]
    fn argon2_target_and_other_parameters() {
        let salt = SaltString::encode_b64(b"a fixed test salt").unwrap();
        let ours = Argon2::default()
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert_eq!(identify(&ours), Scheme::Target);
        let mut area = vec![Block::default(); Params::default().block_count()];
        assert_eq!(
            verify(b"pw", &ours, Some(&mut area)),
            Verdict::Match {
                needs_upgrade: false
            }
        );
        assert_eq!(verify(b"pW", &ours, Some(&mut area)), Verdict::Mismatch);
        for (algorithm, m, t) in [
            (Algorithm::Argon2id, 32768, 2),
            (Algorithm::Argon2id, 19456, 3),
            (Algorithm::Argon2i, 19456, 2),
            (Algorithm::Argon2d, 4096, 1),
        ] {
            let params = Params::new(m, t, 1, None).unwrap();
            let other = Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            assert_old_format(Scheme::Argon2, b"pw", &other);
        }
    }

    #[test]
    fn unusable_unknown_and_malformed_never_verify() {
        // Django's make_password(None): "!" and 40 random characters.
        for stored in [
            "!",
            "!xVk2Rz8TqWm3HnB7LpYc4dGf9JsAe6KoNu1Qi5Zt",
            "!pbkdf2_sha256$1$a$b",
        ] {
            assert_eq!(identify(stored), Scheme::Unusable);
            assert_eq!(
                verify(stored.as_bytes(), stored, None),
                Verdict::Unverifiable
            );
        }
        for stored in [
            "",
            "secret",
            "md5$seasalt$3f86d0d3d465b7b458c231bf3555c0e3",
            "$2x$05$abc",
        ] {
            assert_eq!(identify(stored), Scheme::Unknown, "{stored}");
            assert_eq!(verify(b"secret", stored, None), Verdict::Unverifiable);
        }
        for stored in [
            "pbkdf2_sha256$abc$seasalt$8xBlGd3jVgvJ+92hWPxi5ww0uuAuAnKgC45eudxro7c=",
            "pbkdf2_sha256$1$seasalt$not base64",
            "pbkdf2_sha256$1$seasalt$aDapRanzW8aHTz97v2TcfHzWD+I=",
            "pbkdf2_sha1$1$seasalt",
            "scrypt$1000$seasalt$8$1$aDapRanzW8aHTz97v2TcfHzWD+I=",
            "argon2$argon2id$v=19$m=8,t=1,p=1$bad",
            "bcrypt_sha256$$2a$06$short",
            "$argon2id$v=19$m=19456,t=2,p=1$",
        ] {
            assert_eq!(
                verify(b"secret", stored, None),
                Verdict::Unverifiable,
                "{stored}"
            );
        }
    }

    #[test]
    fn absurd_parameters_are_refused_without_computing() {
        let start = std::time::Instant::now();
        for stored in [
            "pbkdf2_sha256$10000001$seasalt$8xBlGd3jVgvJ+92hWPxi5ww0uuAuAnKgC45eudxro7c=",
            "pbkdf2_sha1$4294967295$seasalt2$aDapRanzW8aHTz97v2TcfHzWD+I=",
            "scrypt$2097152$seasalt$8$1$Qj3+9PPyRjSJIebHnG81TMjsqtaIGxNQG/aEB/NY\
             afTJ7tibgfYz71m0ldQESkXFRkdVCBhhY8mx7rQwite/Pw==",
            "scrypt$1048576$seasalt$8$8$Qj3+9PPyRjSJIebHnG81TMjsqtaIGxNQG/aEB/NY\
             afTJ7tibgfYz71m0ldQESkXFRkdVCBhhY8mx7rQwite/Pw==",
            "$2b$17$Z17AXnnlpzddNUvnC6cZNOSwMA/8oNiKnHTHTwLlBijfucQQlHjaG",
            "bcrypt_sha256$$2b$31$Tg/oYyZTyAf.Nb3qSgN61OySmyXA8FoY4PjGizjE1QSDfuL5MXNni",
            "$argon2id$v=19$m=2097152,t=1,p=1$c29tZXNhbHQ$AJFIsNZTMKTAewB4+ETN1A",
            "argon2$argon2id$v=19$m=1048576,t=5,p=1$c29tZXNhbHQ$AJFIsNZTMKTAewB4+ETN1A",
        ] {
            assert_eq!(
                verify(b"secret", stored, None),
                Verdict::Unverifiable,
                "{stored}"
            );
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}

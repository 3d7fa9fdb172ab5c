//! Password hashing with argon2id, off the async runtime and bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::rngs::OsRng;
use rocket::tokio::sync::Semaphore;
use rocket::tokio::task::spawn_blocking;

use crate::Error;

/// Runs argon2id (the `argon2` crate's defaults, which are OWASP's: 19 MiB,
/// 2 iterations, 1 lane) in `spawn_blocking`, at most `permits` at a time.
///
/// The semaphore is what keeps a flood of logins from exhausting memory (each
/// hash takes 19 MiB) or the blocking pool: waiting logins are parked tasks,
/// not threads.
#[derive(Clone)]
pub(crate) struct Hasher {
    permits: Arc<Semaphore>,
    /// argon2 operations started, for tests that prove one did not run.
    operations: Arc<AtomicU64>,
}

/// A hash of a password nobody has, verified when the username is unknown so
/// that unknown users cost the same time as known ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_blocking("advanced-token timing equaliser").expect("argon2 hash"))
}

fn hash_blocking(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => {
            log::error!("advanced_token: a stored password hash is not a valid PHC string");
            false
        }
    }
}

impl Hasher {
    pub(crate) fn new(permits: usize) -> Self {
        // Compute the dummy hash now, not on the first failed login.
        let _ = dummy_hash();
        Hasher {
            permits: Arc::new(Semaphore::new(permits.max(1))),
            operations: Arc::default(),
        }
    }

    async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Unavailable)?;
        self.operations.fetch_add(1, Ordering::Relaxed);
        spawn_blocking(f)
            .await
            .map_err(|e| Error::Database(format!("password hashing task failed: {e}")))
    }

    pub(crate) fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    /// The PHC string of `password`.
    pub(crate) async fn hash(&self, password: String) -> Result<String, Error> {
        self.run(move || hash_blocking(&password))
            .await?
            .map_err(|e| Error::InvalidInput(format!("cannot hash this password: {e}")))
    }

    /// Whether `password` matches `phc`. With `None` (no such user) it
    /// verifies against a dummy hash and returns `false`, taking the same
    /// time as a real check.
    pub(crate) async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, Error> {
        self.run(move || match phc {
            Some(phc) => verify_blocking(&password, &phc),
            None => {
                let _ = verify_blocking(&password, dummy_hash());
                false
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rocket::async_test]
    async fn hash_then_verify() {
        let h = Hasher::new(2);
        let phc = h.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify("correct horse".into(), Some(phc.clone())).await.unwrap());
        assert!(!h.verify("wrong".into(), Some(phc)).await.unwrap());
        assert!(!h.verify("correct horse".into(), None).await.unwrap());
        assert!(!h.verify("x".into(), Some("not a phc".into())).await.unwrap());
    }
}

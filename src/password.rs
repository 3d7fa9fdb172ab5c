//! Password hashing with argon2id, off the async runtime and bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;
use rocket::tokio::sync::{oneshot, Semaphore};

use crate::error::Error;
use crate::hashes::{self, Verdict};

/// Runs argon2id (the `argon2` crate's defaults, which are OWASP's: 19 MiB,
/// 2 iterations, 1 lane) on `permits` dedicated threads, each with one
/// preallocated 19 MiB work area, at the lowest scheduling priority.
///
/// * Bounded: a semaphore admits at most `permits` jobs; further logins wait
///   as parked tasks, holding no thread and no work area. Memory is
///   `permits × 19 MiB` however long the flood (allocating per hash instead
///   left freed memory cached in many threads' malloc arenas: a 300-login
///   flood grew the server by 351 MiB).
/// * Off the async runtime, like `spawn_blocking`, but on threads of its
///   own at nice 19: argon2 uses every idle cycle, yet the request workers
///   win the CPU whenever they have work, so a login flood does not starve
///   guarded requests (on `spawn_blocking` threads it tripled their p99).
#[derive(Clone)]
pub(crate) struct Hasher {
    permits: Arc<Semaphore>,
    jobs: crossbeam_channel::Sender<Job>,
    /// argon2 operations started, for tests that prove one did not run.
    operations: Arc<AtomicU64>,
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// One argon2 thread: lowest priority, one work area, jobs until the
/// [`Hasher`] is dropped.
fn worker(jobs: crossbeam_channel::Receiver<Job>) {
    let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
    let mut area: Vec<Block> = Vec::new();
    // Ends when the last sender (the `Hasher`) is dropped.
    for job in jobs {
        // A panicking job loses its reply (the caller gets an error), not
        // the thread.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut area)));
    }
}

fn context() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// A hash of a password nobody has, verified when the username is unknown so
/// that unknown users cost the same time as known ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let mut area = vec![Block::default(); Params::default().block_count()];
        hash_in(b"advanced-token timing equaliser", &mut area).expect("argon2 hash")
    })
}

/// The PHC string of `password`, computed in `area`.
fn hash_in(password: &[u8], area: &mut [Block]) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf)?;
    let mut out = [0u8; 32];
    let params = Params::default();
    context().hash_password_into_with_memory(
        password,
        salt_bytes,
        &mut out,
        &mut area[..params.block_count()],
    )?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the stored hash `stored` (any format of the
/// [`hashes`] chain), computed in `area` (or in a fresh allocation if the
/// stored parameters need more memory).
fn verify_in(password: &[u8], stored: &str, area: &mut [Block]) -> Verdict {
    hashes::verify(password, stored, Some(area))
}

impl Hasher {
    pub(crate) fn new(permits: usize) -> Self {
        // Compute the dummy hash now, not on the first failed login.
        let _ = dummy_hash();
        let permits = permits.max(1);
        // A multi-consumer channel: each idle thread takes the next job.
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..permits {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("advanced-token-argon2-{i}"))
                .spawn(move || worker(rx));
            if let Err(e) = spawned {
                log::error!("advanced_token: cannot start an argon2 thread: {e}");
            }
        }
        Hasher {
            permits: Arc::new(Semaphore::new(permits)),
            jobs: tx,
            operations: Arc::default(),
        }
    }

    async fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce(&mut [Block]) -> T + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Internal("the password hashing semaphore is closed"))?;
        self.operations.fetch_add(1, Ordering::Relaxed);
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |area: &mut Vec<Block>| {
            let need = Params::default().block_count();
            if area.len() < need {
                *area = vec![Block::default(); need];
            }
            let _ = reply.send(f(area));
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Internal("the password hashing threads have stopped"))?;
        result
            .await
            .map_err(|_| Error::Internal("a password hashing job failed"))
    }

    #[cfg(feature = "test-hooks")]
    pub(crate) fn operations(&self) -> u64 {
        self.operations.load(Ordering::Relaxed)
    }

    /// The PHC string of `password`.
    pub(crate) async fn hash(&self, password: String) -> Result<String, Error> {
        self.run(move |area| hash_in(password.as_bytes(), area))
            .await?
            .map_err(|e| Error::InvalidInput(format!("cannot hash this password: {e}")))
    }

    #[cfg(test)]
    /// Whether `password` matches `phc`. With `None` (no such user) it
    /// verifies against a dummy hash and returns `false`, taking the same
    /// time as a real check.
    pub(crate) async fn verify(
        &self,
        password: String,
        phc: Option<String>,
    ) -> Result<bool, Error> {
        Ok(self.verify_and_check_upgrade(password, phc).await?.0)
    }

    /// `(matches, needs_upgrade)` for `password` against `stored`, a hash in
    /// any format of the [`hashes`] chain: `needs_upgrade` when it matched a
    /// hash that is not argon2id with the current parameters, which the
    /// caller should then replace by [`Hasher::hash`]. With `None` (no such
    /// user), or a hash that cannot be checked (unusable, unknown, over a
    /// work cap), it verifies against a dummy hash and returns
    /// `(false, false)`, taking the time of a real argon2id check.
    pub(crate) async fn verify_and_check_upgrade(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<(bool, bool), Error> {
        self.run(move |area| {
            let verdict = match stored {
                Some(stored) => verify_in(password.as_bytes(), &stored, area),
                None => Verdict::Unverifiable,
            };
            if verdict == Verdict::Unverifiable {
                let _ = verify_in(password.as_bytes(), dummy_hash(), area);
            }
            (verdict.matches(), verdict.needs_upgrade())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[rocket::async_test]
    async fn hash_then_verify() {
        let h = Hasher::new(2);
        let phc = h.hash("correct horse".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h
            .verify("correct horse".into(), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!h.verify("wrong".into(), Some(phc)).await.unwrap());
        assert!(!h.verify("correct horse".into(), None).await.unwrap());
        assert!(!h
            .verify("x".into(), Some("not a phc".into()))
            .await
            .unwrap());
    }

    #[rocket::async_test]
    async fn compatible_with_the_argon2_crate() {
        let h = Hasher::new(1);
        // Ours verifies with the crate's verifier...
        let ours = h.hash("pw".into()).await.unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        // ...and the crate's hashes, with other parameters too, verify with ours.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(h.verify("pw".into(), Some(theirs)).await.unwrap());
        let big = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(32768, 1, 1, None).unwrap(),
        );
        let bigger = big.hash_password(b"pw", &salt).unwrap().to_string();
        assert!(h.verify("pw".into(), Some(bigger.clone())).await.unwrap());
        assert!(!h.verify("pW".into(), Some(bigger)).await.unwrap());
    }

    #[rocket::async_test]
    async fn other_formats_verify_and_ask_for_an_upgrade() {
        let h = Hasher::new(1);
        let ours = h.hash("lètmein".into()).await.unwrap();
        let check =
            |stored: &str| h.verify_and_check_upgrade("lètmein".into(), Some(stored.into()));
        assert_eq!(check(&ours).await.unwrap(), (true, false));
        // django/django, tests/auth_tests/test_hashers.py: test_low_level_pbkdf2.
        let django = "pbkdf2_sha256$390000$seasalt2$geC/uZ92nRXDSjSxeoiBqYyRcrLzMm8xK3ro1QS1uo8=";
        assert_eq!(check(django).await.unwrap(), (true, true));
        assert!(h
            .verify("lètmein".into(), Some(django.into()))
            .await
            .unwrap());
        assert!(!h
            .verify("letmein".into(), Some(django.into()))
            .await
            .unwrap());
        for never in [
            "!",
            "!unusable",
            "md5$seasalt$3f86d0d3d465b7b458c231bf3555c0e3",
        ] {
            assert_eq!(check(never).await.unwrap(), (false, false));
        }
        assert_eq!(
            h.verify_and_check_upgrade("lètmein".into(), None)
                .await
                .unwrap(),
            (false, false)
        );
    }
}

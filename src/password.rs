//! Password hashing with argon2id, off the async runtime and bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::rngs::OsRng;
use rocket::tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::Error;
use crate::hashes::{self, Verdict};

/// Runs argon2id (the `argon2` crate's defaults, which are OWASP's: 19 MiB,
/// 2 iterations, 1 lane) on `permits` dedicated threads, each with one
/// preallocated 19 MiB work area, at the lowest scheduling priority.
///
/// * Bounded: a semaphore admits at most `permits` jobs; further logins wait
///   as parked tasks, holding no thread and no work area. Memory is
///   `permits × 19 MiB` however long the flood (a work area allocated per
///   hash would leave freed memory cached in many threads' malloc arenas;
///   BENCHMARKS.md has the figures, `tests/suite/flood.rs` the bound).
/// * Off the async runtime, like `spawn_blocking`, but on threads of its
///   own at nice 19: argon2 uses every idle cycle, yet the request workers
///   win the CPU whenever they have work, so a login flood does not starve
///   guarded requests (BENCHMARKS.md compares it with `spawn_blocking`).
/// * Fair between accounts: checks for one key (a username digest) enter
///   the shared queue at most `permits` at a time; the rest wait in a line
///   of their own, so a flood of logins for one account cannot fill the
///   queue ahead of everyone else. Past [`MAX_WAITING_PER_KEY`] waiting in
///   that line, a check is refused with [`Error::HashQueueFull`] (429).
#[derive(Clone)]
pub(crate) struct Hasher {
    permits: Arc<Semaphore>,
    lines: Arc<Lines>,
    jobs: crossbeam_channel::Sender<Job>,
    /// argon2 operations started, for tests that prove one did not run.
    operations: Arc<AtomicU64>,
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// How many checks for one key may wait, beyond the `permits` in the shared
/// queue, before further ones are refused.
const MAX_WAITING_PER_KEY: usize = 1024;

/// The per-key lines in front of the shared queue.
struct Lines {
    /// Per key: a semaphore of `per_key` permits (the key's share of the
    /// shared queue), and how many checks hold or wait for one.
    keys: Mutex<HashMap<String, (Arc<Semaphore>, usize)>>,
    per_key: usize,
    max_waiting: usize,
}

/// A place in a key's line, then in the shared queue; leaves the line (and
/// forgets an idle key) on drop.
struct InLine<'a> {
    lines: &'a Lines,
    key: String,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Lines {
    fn new(per_key: usize, max_waiting: usize) -> Self {
        Lines {
            keys: Mutex::default(),
            per_key,
            max_waiting,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Semaphore>, usize)>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for one of `key`'s `per_key` places in the shared queue;
    /// [`Error::HashQueueFull`] when too many already wait for one.
    async fn enter(&self, key: &str) -> Result<InLine<'_>, Error> {
        let semaphore = {
            let mut map = self.map();
            let (semaphore, users) = map
                .entry(key.to_owned())
                .or_insert_with(|| (Arc::new(Semaphore::new(self.per_key)), 0));
            if *users >= self.per_key + self.max_waiting {
                return Err(Error::HashQueueFull);
            }
            *users += 1;
            semaphore.clone()
        };
        let mut place = InLine {
            lines: self,
            key: key.to_owned(),
            _permit: None,
        };
        let permit = semaphore
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("a password hashing line is closed"))?;
        place._permit = Some(permit);
        Ok(place)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let mut map = self.lines.map();
        if let Some((_, users)) = map.get_mut(&self.key) {
            *users -= 1;
            if *users == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// The argon2 threads: one set of `permits` threads per process for each
/// `permits` value, shared by every [`Hasher`] (one per Rocket instance),
/// each of which still admits at most `permits` jobs of its own. They live
/// as long as the process, so an app or a test suite that builds and drops
/// many Rocket instances does not start fresh threads each time (each new
/// thread got a fresh malloc arena, which kept its freed work area: several
/// MB per instance).
fn workers(permits: usize) -> crossbeam_channel::Sender<Job> {
    type Pools = Mutex<HashMap<usize, crossbeam_channel::Sender<Job>>>;
    static POOLS: OnceLock<Pools> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Pools::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    pools
        .entry(permits)
        .or_insert_with(|| spawn_workers(permits))
        .clone()
}

fn spawn_workers(permits: usize) -> crossbeam_channel::Sender<Job> {
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
    tx
}

/// One argon2 thread: lowest priority, one work area, jobs for as long as
/// the process runs.
fn worker(jobs: crossbeam_channel::Receiver<Job>) {
    let _ = thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
    let mut area: Vec<Block> = Vec::new();
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
        Hasher {
            permits: Arc::new(Semaphore::new(permits)),
            lines: Arc::new(Lines::new(permits, MAX_WAITING_PER_KEY)),
            jobs: workers(permits),
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

    /// [`Hasher::verify`] for a login as `key` (the username's digest): at
    /// most `permits` checks per key enter the shared queue, the rest wait
    /// in the key's own line (or get [`Error::HashQueueFull`] when it is
    /// full), so one account cannot fill the queue.
    pub(crate) async fn verify_as(
        &self,
        key: &str,
        password: String,
        phc: Option<String>,
    ) -> Result<(bool, bool), Error> {
        let _place = self.lines.enter(key).await?;
        self.verify_and_check_upgrade(password, phc).await
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

    /// Queues a job as `key` that records `name` when it runs, after
    /// waiting for `gate` if given; a pause lets it take its place in line.
    async fn queue(
        h: &Hasher,
        key: &'static str,
        name: &'static str,
        order: &Arc<Mutex<Vec<&'static str>>>,
        gate: Option<std::sync::mpsc::Receiver<()>>,
    ) -> rocket::tokio::task::JoinHandle<()> {
        let (h, order) = (h.clone(), order.clone());
        let task = rocket::tokio::spawn(async move {
            let _place = h.lines.enter(key).await.unwrap();
            h.run(move |_| {
                if let Some(gate) = gate {
                    let _ = gate.recv();
                }
                order.lock().unwrap().push(name);
            })
            .await
            .unwrap();
        });
        rocket::tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        task
    }

    #[rocket::async_test]
    async fn one_key_cannot_fill_the_queue() {
        // One argon2 thread, held by a1 until released; then a's other
        // checks and one of b's queue up. b's runs right after a1, not
        // after all of a's.
        let h = Hasher::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (release, gate) = std::sync::mpsc::channel();
        let mut tasks = vec![queue(&h, "a", "a1", &order, Some(gate)).await];
        for name in ["a2", "a3", "a4"] {
            tasks.push(queue(&h, "a", name, &order, None).await);
        }
        tasks.push(queue(&h, "b", "b1", &order, None).await);
        release.send(()).unwrap();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["a1", "b1", "a2", "a3", "a4"]);
        assert!(h.lines.map().is_empty(), "idle keys are forgotten");
    }

    #[rocket::async_test]
    async fn a_full_line_is_refused() {
        let lines = Arc::new(Lines::new(1, 1));
        let first = lines.enter("a").await.unwrap();
        let waiting = {
            let lines = lines.clone();
            rocket::tokio::spawn(async move { lines.enter("a").await.map(|_| ()) })
        };
        rocket::tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let refused = lines.enter("a").await.map(|_| ()).unwrap_err();
        assert!(matches!(refused, Error::HashQueueFull), "{refused:?}");
        assert_eq!(refused.status().code, 429);
        // Other keys are not affected.
        drop(lines.enter("b").await.unwrap());
        drop(first);
        waiting.await.unwrap().unwrap();
        assert!(lines.map().is_empty());
    }

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

//! The in-process cache of verified tokens, bounded in entries and in age,
//! and the bookkeeping that keeps it honest: what the revocation log said
//! (by token, by user, or everything) and when the log was last read.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{AppUser, UserId};
use crate::store::{LogEntry, TokenRow};
use crate::token::Digest;

/// What entries are keyed by: a digest's 32 bytes, held in the cache's own
/// slot. With 100,000 tokens in use at random every hit is a cold read; a
/// key and an entry held inline are one read, where a `String` key and a
/// shared entry were two more (BENCHMARKS.md).
type Key = [u8; 32];

/// The key of a digest in hex, as the database and the revocation log
/// name it: `None` (never cached) for anything but a SHA-256 in hex.
fn key(digest: &str) -> Option<Key> {
    Digest::from_hex(digest).map(|d| *d.bytes())
}

/// A verified token, and when the database read that verified it began:
/// a [`TokenRow`]'s fields, packed so that an entry with its key fills
/// three cache lines, not four (a hit at size is a cold read).
#[derive(Clone)]
struct Entry {
    token_id: i64,
    user_id: UserId,
    created_at: i64,
    last_used_at: i64,
    expires_at: Option<i64>,
    is_active: bool,
    rotation_locked: bool,
    /// Held inline up to 24 bytes, so that a hit reads no other memory.
    username: smallvec::SmallVec<[u8; 24]>,
    /// Shared: a hit hands it out without copying the name it holds.
    app: Option<Arc<AppUser>>,
    read_at: u64,
}

impl Entry {
    fn new(row: TokenRow, read_at: u64) -> Self {
        Entry {
            token_id: row.token_id,
            user_id: row.user_id,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            is_active: row.is_active,
            rotation_locked: row.rotation_locked,
            username: row.username.into_bytes().into(),
            app: row.app,
            read_at,
        }
    }

    fn into_row(self) -> TokenRow {
        // The bytes of a `String`: always UTF-8.
        let username = std::str::from_utf8(&self.username).expect("a String's bytes");
        TokenRow {
            token_id: self.token_id,
            user_id: self.user_id,
            username: username.into(),
            is_active: self.is_active,
            rotation_locked: self.rotation_locked,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            expires_at: self.expires_at,
            app: self.app,
        }
    }
}

/// The fewest entries a shard of the cache is given (unless it has one).
const MIN_SHARD: u64 = 4096;

/// The map of a cache that holds `capacity` tokens, sharded for
/// `parallelism` cores. quick_cache splits its capacity evenly between its
/// shards, and digests fill them unevenly: at 100,000 tokens in 8 shards
/// the fullest shard evicted while the cache held 99.7% of its capacity, so
/// a working set the size of `token_cache_capacity` sent 0.3% of requests
/// to the database. Each shard therefore gets room for four standard
/// deviations over its share (a shard's count is binomial, its variance
/// under its share): about 6% more than `capacity` at most, with shards of at
/// least [`MIN_SHARD`] entries, and none at all with a single shard.
fn entries(capacity: u64, parallelism: usize) -> quick_cache::sync::Cache<Key, Entry> {
    let capacity = capacity.max(1);
    let wanted = (parallelism.max(1) * 4).next_power_of_two() as u64;
    let fit = (capacity / MIN_SHARD).max(1);
    let shards = wanted.min(1 << fit.ilog2());
    let share = capacity.div_ceil(shards);
    let headroom = if shards == 1 {
        0
    } else {
        (4.0 * (share as f64).sqrt()).ceil() as u64
    };
    let options = quick_cache::OptionsBuilder::new()
        .shards(shards as usize)
        .estimated_items_capacity(capacity as usize)
        .weight_capacity((share + headroom) * shards)
        .build()
        .expect("shards and capacities are set");
    let (weighter, hasher, lifecycle) = Default::default();
    quick_cache::sync::Cache::with_options(options, weighter, hasher, lifecycle)
}

/// Verified tokens by digest. An entry is served only while the revocation
/// poll is fresh (it succeeded within one poll period): if the database
/// cannot be polled, a revocation elsewhere could be missed, so every
/// request goes to the database instead.
pub(crate) struct TokenCache {
    entries: quick_cache::sync::Cache<Key, Entry>,
    /// How long an entry is served after its read (cache clock, ms).
    ttl_ms: u64,
    /// When each user's tokens were last revoked (cache clock, ms): entries
    /// read before then are not served.
    /// Keyed by the id's text, as the revocation log stores it (so an
    /// app's `UserId::Text("42")` and the log's `42` are one user).
    users_revoked: moka::sync::Cache<String, u64>,
    /// The latest time in `users_revoked`: an entry read after it needs no
    /// lookup there.
    last_user_revoked: AtomicU64,
    /// Moves on every token-level invalidation; a lookup that started under
    /// an older generation does not leave its (possibly stale) row behind.
    generation: AtomicU64,
    epoch: Instant,
    fresh_until_ms: AtomicU64,
    poll: Duration,
    /// The log entries already applied, and when the log was last read.
    log: Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    seen: HashSet<i64>,
    /// Cache-clock ms of the last successful read; 0 before the first.
    last_read: u64,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens, each served for at most `ttl`
    /// before it is read from the database again, while polls every `poll`
    /// keep it fresh.
    pub(crate) fn new(capacity: u64, poll: Duration, ttl: Duration) -> Self {
        TokenCache {
            entries: entries(
                capacity,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            ttl_ms: ttl.as_millis() as u64,
            // An entry older than `ttl` has expired anyway.
            users_revoked: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl + poll)
                .build(),
            last_user_revoked: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            epoch: Instant::now(),
            fresh_until_ms: AtomicU64::new(0),
            poll,
            log: Mutex::default(),
        }
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// Milliseconds on the cache's own clock; pass the value taken just
    /// before a poll's query to [`TokenCache::apply_log()`], and the one
    /// taken before a lookup's query to [`TokenCache::insert()`].
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Records a successful poll whose query was sent at `read_at`. The
    /// cache serves for one poll period from then: a revocation committed
    /// after that read is seen by the next poll, and until that poll
    /// succeeds nothing cached is served. So a revocation made elsewhere
    /// takes effect here within `token_cache_poll` whatever happens to the
    /// poll.
    fn mark_fresh(&self, read_at: u64) {
        let until = read_at + self.poll.as_millis() as u64;
        self.fresh_until_ms.fetch_max(until, Ordering::SeqCst);
    }

    /// Whether entries may be served at `now` (cache clock, ms).
    fn usable(&self, now: u64) -> bool {
        // 0: never polled successfully.
        let until = self.fresh_until_ms.load(Ordering::SeqCst);
        until != 0 && now <= until
    }

    pub(crate) fn get(&self, digest: &Digest) -> Option<TokenRow> {
        let now = self.now_ms();
        if !self.usable(now) {
            return None;
        }
        let key = *digest.bytes();
        let entry = self.entries.get(&key)?;
        if now > entry.read_at + self.ttl_ms || self.user_revoked_since(&entry) {
            self.entries.remove(&key);
            return None;
        }
        Some(entry.into_row())
    }

    /// Whether the entry's user had their tokens revoked after its read.
    fn user_revoked_since(&self, entry: &Entry) -> bool {
        self.last_user_revoked.load(Ordering::SeqCst) >= entry.read_at
            && self
                .users_revoked
                .get(&entry.user_id.to_string())
                .is_some_and(|at| at >= entry.read_at)
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches a row whose database read began at `read_at` under
    /// generation `since`.
    pub(crate) fn insert(&self, digest: &str, row: TokenRow, read_at: u64, since: u64) {
        let Some(key) = key(digest) else {
            return;
        };
        self.entries.insert(key, Entry::new(row, read_at));
        // An invalidation between the read and now may predate the insert:
        // undo it. (Invalidations bump the generation first.)
        if self.generation() != since {
            self.entries.remove(&key);
        }
    }

    /// Drops one token.
    pub(crate) fn invalidate(&self, digest: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(key) = key(digest) {
            self.entries.remove(&key);
        }
    }

    /// Drops every token of one user read before now.
    pub(crate) fn revoke_user(&self, user: &UserId) {
        let now = self.now_ms();
        self.users_revoked.insert(user.to_string(), now);
        self.last_user_revoked.fetch_max(now, Ordering::SeqCst);
    }

    /// Drops everything.
    pub(crate) fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
    }

    /// Applies the revocation log entries of a read sent at `read_at`
    /// (entries already applied are skipped) and marks the cache fresh. A
    /// read that comes more than `gap` after the previous one may have
    /// missed entries since pruned: then everything goes.
    pub(crate) fn apply_log(&self, entries: &[LogEntry], read_at: u64, gap: Duration) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.last_read != 0 && read_at.saturating_sub(log.last_read) > gap.as_millis() as u64 {
            self.invalidate_all();
        }
        self.apply_new(&mut log, entries);
        // Forget what has left the window: it will not be read again.
        let current: HashSet<i64> = entries.iter().map(|e| e.0).collect();
        log.seen.retain(|seq| current.contains(seq));
        log.last_read = log.last_read.max(read_at);
        drop(log);
        self.mark_fresh(read_at);
    }

    /// Applies log entries a notification announced, read by sequence
    /// number (entries already applied are skipped). Only a head start on
    /// the poll: it marks nothing fresh and forgets nothing, so that the
    /// poll's reads of the whole window stay what bounds a revocation's
    /// delay whatever the notifications do.
    #[cfg(feature = "postgres")]
    pub(crate) fn apply_announced(&self, entries: &[LogEntry]) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        self.apply_new(&mut log, entries);
    }

    /// Applies the entries not applied before.
    fn apply_new(&self, log: &mut LogState, entries: &[LogEntry]) {
        for (seq, user, digest) in entries {
            if !log.seen.insert(*seq) {
                continue;
            }
            match (user, digest) {
                (_, Some(digest)) => self.invalidate(digest),
                (Some(user), None) => self.revoke_user(&UserId::from_stored(user.clone())),
                (None, None) => self.invalidate_all(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: i64) -> TokenRow {
        TokenRow {
            token_id: 1,
            user_id: UserId::Int(user),
            username: "alice".into(),
            is_active: true,
            rotation_locked: false,
            created_at: 0,
            last_used_at: 0,
            expires_at: None,
            app: None,
        }
    }

    /// A digest as the guard computes it.
    fn dg(name: &str) -> Digest {
        crate::token::digest(name)
    }

    fn cache() -> TokenCache {
        TokenCache::new(10, Duration::from_secs(3600), Duration::from_secs(3600))
    }

    #[test]
    fn serves_only_after_a_poll_and_not_across_invalidations() {
        let c = cache();
        let g = c.generation();
        c.insert(&dg("d").hex(), row(1), c.now_ms(), g);
        assert!(c.get(&dg("d")).is_none(), "never polled: not usable");
        c.apply_log(&[], c.now_ms(), Duration::from_secs(10));
        assert!(c.get(&dg("d")).is_some());
        // A row read before an invalidation is not kept.
        let g = c.generation();
        c.invalidate_all();
        c.insert(&dg("e").hex(), row(1), c.now_ms(), g);
        assert!(c.get(&dg("e")).is_none());
    }

    #[test]
    fn stale_polls_stop_serving() {
        // With the injectable read time, no sleeping: a poll read at 0
        // with a 50 ms period is stale once the clock is past 50 ms.
        let c = TokenCache::new(10, Duration::from_millis(50), Duration::from_secs(60));
        c.insert(&dg("d").hex(), row(1), 0, c.generation());
        c.apply_log(&[], 0, Duration::from_secs(10));
        let until = c.fresh_until_ms.load(Ordering::SeqCst);
        assert_eq!(until, 50, "fresh for one period from the read");
    }

    #[test]
    fn log_entries_drop_just_what_they_name() {
        let c = cache();
        let g = c.generation();
        let t0 = c.now_ms();
        for (d, u) in [("a1", 1), ("a2", 1), ("b1", 2)] {
            c.insert(&dg(d).hex(), row(u), t0, g);
        }
        c.apply_log(&[], c.now_ms(), Duration::from_secs(10));
        // One token of user 1 rotated away: only it goes.
        c.apply_log(
            &[(1, Some("1".into()), Some(dg("a1").to_string()))],
            c.now_ms(),
            Duration::from_secs(10),
        );
        assert!(c.get(&dg("a1")).is_none());
        assert!(c.get(&dg("a2")).is_some() && c.get(&dg("b1")).is_some());
        // User 2 logged out: only user 2's tokens go; the entry is applied
        // once however often the window returns it.
        let entries = [(2, Some("2".into()), None)];
        c.apply_log(&entries, c.now_ms(), Duration::from_secs(10));
        assert!(c.get(&dg("b1")).is_none());
        assert!(c.get(&dg("a2")).is_some());
        // A row of user 2 read after the revocation is served again.
        std::thread::sleep(Duration::from_millis(2));
        c.insert(&dg("b2").hex(), row(2), c.now_ms(), c.generation());
        c.apply_log(&entries, c.now_ms(), Duration::from_secs(10));
        assert!(
            c.get(&dg("b2")).is_some(),
            "an applied entry is not applied again"
        );
        // Everything.
        c.apply_log(&[(3, None, None)], c.now_ms(), Duration::from_secs(10));
        assert!(c.get(&dg("a2")).is_none() && c.get(&dg("b2")).is_none());
    }

    #[test]
    fn entries_are_not_served_past_their_ttl() {
        let c = TokenCache::new(10, Duration::from_secs(3600), Duration::from_millis(5));
        let read_at = c.now_ms();
        c.insert(&dg("d").hex(), row(1), read_at, c.generation());
        c.apply_log(&[], c.now_ms(), Duration::from_secs(10));
        // No sleep: wait for the cache's own clock to pass the TTL.
        while c.now_ms() <= read_at + 5 {
            std::hint::spin_loop();
        }
        assert!(c.get(&dg("d")).is_none(), "served past its TTL");
    }

    #[test]
    #[cfg(feature = "postgres")]
    fn announced_entries_are_applied_once_and_leave_freshness_to_the_poll() {
        let c = cache();
        let ten = Duration::from_secs(10);
        c.apply_announced(&[]);
        assert!(
            !c.usable(c.now_ms()),
            "an announcement made the cache fresh"
        );
        c.apply_log(&[], c.now_ms(), ten);
        c.insert(&dg("x").hex(), row(1), c.now_ms(), c.generation());
        let x = (1, None, Some(dg("x").hex().to_string()));
        c.apply_announced(std::slice::from_ref(&x));
        assert!(
            c.get(&dg("x")).is_none(),
            "an announced revocation is applied"
        );
        // A revoke-all announced, then read again by the poll (and by the
        // next announcement's read from a lower number) is applied once:
        // what was cached after it stays.
        let all = (2, None, None);
        c.apply_announced(&[x.clone(), all.clone()]);
        c.insert(&dg("y").hex(), row(1), c.now_ms(), c.generation());
        c.apply_log(&[x.clone(), all.clone()], c.now_ms(), ten);
        c.apply_announced(&[x.clone(), all.clone()]);
        // An announcement of something else forgets nothing either.
        let z = (3, None, Some(dg("z").hex().to_string()));
        c.apply_announced(std::slice::from_ref(&z));
        c.apply_log(&[x, all, z], c.now_ms(), ten);
        assert!(c.get(&dg("y")).is_some(), "an entry was applied twice");
    }

    #[test]
    fn a_cache_holds_its_capacity_however_its_shards_fill() {
        use rand::RngCore;
        for parallelism in [1, 2, 16, 64] {
            for capacity in [5, 1_000, 100_000] {
                let map = entries(capacity, parallelism);
                let mut keys = vec![[0u8; 32]; capacity as usize];
                for k in &mut keys {
                    rand::thread_rng().fill_bytes(k);
                    map.insert(*k, Entry::new(row(1), 0));
                }
                let kept = keys.iter().filter(|k| map.get(*k).is_some()).count();
                assert_eq!(
                    kept, capacity as usize,
                    "{parallelism} cores, capacity {capacity}"
                );
                // And not much more: the headroom is a few percent.
                let room = map.capacity();
                assert!(
                    room <= capacity + capacity / 16,
                    "{parallelism} cores: {room} for {capacity}"
                );
                assert!(
                    capacity > 1_000 || room == capacity,
                    "one shard, no headroom: {room}"
                );
            }
        }
    }

    #[test]
    fn an_entry_and_its_key_fit_three_cache_lines() {
        // With room for quick_cache's own few words of bookkeeping.
        let size = std::mem::size_of::<Key>() + std::mem::size_of::<Entry>();
        assert!(size <= 3 * 64 - 24, "{size} bytes");
        // What it holds comes back whole.
        let mut r = row(7);
        r.username = "a-username-longer-than-24-bytes".into();
        let back = Entry::new(r, 0).into_row();
        assert_eq!(back.username, "a-username-longer-than-24-bytes");
        assert_eq!(back.user_id, UserId::Int(7));
    }

    #[test]
    fn only_digest_sized_keys_are_cached() {
        let c = cache();
        c.apply_log(&[], c.now_ms(), Duration::from_secs(10));
        for odd in ["", "d", &"a".repeat(63), &"ab".repeat(33)] {
            c.insert(odd, row(1), c.now_ms(), c.generation());
            assert_eq!(c.entries.len(), 0, "{odd:?} was cached");
            c.invalidate(odd);
        }
        // Each digest is its own entry.
        c.insert(&dg("x").hex(), row(1), c.now_ms(), c.generation());
        c.insert(&dg("y").hex(), row(2), c.now_ms(), c.generation());
        assert_eq!(c.get(&dg("x")).map(|r| r.user_id), Some(UserId::Int(1)));
        assert_eq!(c.get(&dg("y")).map(|r| r.user_id), Some(UserId::Int(2)));
        c.invalidate(&dg("x").hex());
        assert!(c.get(&dg("x")).is_none() && c.get(&dg("y")).is_some());
    }

    #[test]
    fn a_user_revoked_by_the_text_of_its_id_is_the_same_user() {
        let c = cache();
        c.insert(&dg("t").hex(), row(42), c.now_ms(), c.generation());
        c.apply_log(&[], c.now_ms(), Duration::from_secs(10));
        assert!(c.get(&dg("t")).is_some());
        c.revoke_user(&UserId::Text("42".into()));
        assert!(c.get(&dg("t")).is_none(), "user 42's token served");
    }

    #[test]
    fn a_gap_in_the_polls_drops_everything() {
        let c = cache();
        c.insert(&dg("d").hex(), row(1), 0, c.generation());
        c.apply_log(&[], 1, Duration::from_millis(100));
        assert!(c.get(&dg("d")).is_some());
        c.apply_log(&[], 5_000, Duration::from_millis(100));
        assert!(
            c.get(&dg("d")).is_none(),
            "a read 5 s after the last, gap 100 ms"
        );
    }
}

//! The in-process cache of verified tokens, bounded in entries, and its
//! revocation bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::store::TokenRow;

/// Verified tokens by digest. An entry is served only while the revocation
/// poll is fresh (it succeeded within two poll periods): if the database
/// cannot be polled, a revocation elsewhere could be missed, so every
/// request goes to the database instead.
pub(crate) struct TokenCache {
    entries: moka::sync::Cache<String, TokenRow>,
    /// Moves on every invalidation; a lookup that started under an older
    /// generation does not leave its (possibly stale) row behind.
    generation: AtomicU64,
    epoch: Instant,
    fresh_until_ms: AtomicU64,
    poll: Duration,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens, each served for at most `ttl`
    /// before it is read from the database again, while polls every `poll`
    /// keep it fresh.
    pub(crate) fn new(capacity: u64, poll: Duration, ttl: Duration) -> Self {
        TokenCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            generation: AtomicU64::new(0),
            epoch: Instant::now(),
            fresh_until_ms: AtomicU64::new(0),
            poll,
        }
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.poll
    }

    /// Milliseconds on the cache's own clock; pass the value taken just
    /// before a poll's query to [`TokenCache::mark_fresh()`].
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Records a successful poll whose query was sent at `read_at` (from
    /// [`TokenCache::now_ms()`]). The cache serves for one poll period from
    /// then: a revocation committed after that read is seen by the next
    /// poll, and until that poll succeeds nothing cached is served. So a
    /// revocation made elsewhere takes effect here within `token_cache_poll`
    /// whatever happens to the poll (a slow or unreachable database makes
    /// requests go to the database, never makes the cache serve longer).
    pub(crate) fn mark_fresh(&self, read_at: u64) {
        let until = read_at + self.poll.as_millis() as u64;
        self.fresh_until_ms.fetch_max(until, Ordering::SeqCst);
    }

    fn usable(&self) -> bool {
        // 0: never polled successfully.
        let until = self.fresh_until_ms.load(Ordering::SeqCst);
        until != 0 && self.now_ms() <= until
    }

    pub(crate) fn get(&self, digest: &str) -> Option<TokenRow> {
        if self.usable() {
            self.entries.get(digest)
        } else {
            None
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches a row read from the database under generation `since`.
    pub(crate) fn insert(&self, digest: String, row: TokenRow, since: u64) {
        self.entries.insert(digest.clone(), row);
        // An invalidation between the read and now may predate the insert:
        // undo it. (Invalidations bump the generation first.)
        if self.generation() != since {
            self.entries.invalidate(&digest);
        }
    }

    pub(crate) fn invalidate(&self, digest: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate(digest);
    }

    pub(crate) fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.entries.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> TokenRow {
        TokenRow {
            token_id: 1,
            user_id: crate::backend::UserId::Int(1),
            username: "alice".into(),
            is_active: true,
            rotation_locked: false,
            created_at: 0,
            last_used_at: 0,
            expires_at: None,
            app: None,
        }
    }

    #[test]
    fn serves_only_while_fresh_and_not_across_invalidations() {
        let c = TokenCache::new(10, Duration::from_millis(50), Duration::from_secs(60));
        let g = c.generation();
        c.insert("d".into(), row(), g);
        assert!(c.get("d").is_none(), "never polled: not usable");
        c.mark_fresh(c.now_ms());
        assert!(c.get("d").is_some());
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get("d").is_none(), "stale poll: not usable");
        // Freshness counts from when the poll's query was sent, not from
        // when its answer came back.
        c.mark_fresh(c.now_ms().saturating_sub(60));
        assert!(c.get("d").is_none(), "a poll sent 60 ms ago is stale");
        c.mark_fresh(c.now_ms());
        // A row read before an invalidation is not kept.
        let g = c.generation();
        c.invalidate_all();
        c.insert("e".into(), row(), g);
        assert!(c.get("e").is_none());
        c.invalidate("d");
        assert!(c.get("d").is_none());
    }
}

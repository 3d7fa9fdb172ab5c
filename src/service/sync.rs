//! Keeping the token cache honest: the revocation log poll and, on
//! PostgreSQL, the `LISTEN` task that reads the entries announced, at once.
//! Both hold only a weak reference, so they end when the last handle (the
//! Rocket that manages it) is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rocket::tokio::time::{self, MissedTickBehavior};

use super::{AdvancedToken, Inner};

/// Slack, on top of the poll period and the database deadline, in the
/// window of log entries each poll reads: an entry is written when its
/// transaction runs and may commit up to `connect_timeout` later.
const LOG_MARGIN: Duration = Duration::from_secs(5);
/// How long log entries are kept (seconds): far longer than any window.
const LOG_KEEP: i64 = 3600;
/// How often (in polls) an instance prunes the log.
const PRUNE_EVERY: u32 = 60;
/// Notifications arriving this close together are read as one.
#[cfg(feature = "postgres")]
const LISTEN_COALESCE: Duration = Duration::from_millis(20);

impl AdvancedToken {
    /// With a cache: reads the revocation log now, then every
    /// `token_cache_poll`; on PostgreSQL also listens for new entries.
    pub(super) async fn start_background_tasks(&self) {
        if self.cache().is_none() {
            return;
        }
        self.poll_once().await;
        #[cfg(feature = "postgres")]
        if self.pool().backend() == crate::pool::Backend::Postgres {
            rocket::tokio::spawn(listen(Arc::downgrade(&self.inner)));
        }
        rocket::tokio::spawn(poll(Arc::downgrade(&self.inner)));
    }

    /// The window of log entries a poll reads (whole seconds, rounded up),
    /// and the longest time between two reads that cannot miss an entry
    /// (longer: the cache is dropped).
    fn log_window(&self) -> (i64, Duration) {
        let period = self.cache().map_or(Duration::ZERO, |c| c.poll_interval());
        let gap = period + LOG_MARGIN;
        ((gap + self.inner.db_timeout).as_secs() as i64 + 1, gap)
    }

    /// One read of the revocation log, applied to the cache. A failed read
    /// leaves the cache to go stale, so it stops serving within one period.
    async fn poll_once(&self) {
        let Some(cache) = self.cache() else {
            return;
        };
        let (secs, gap) = self.log_window();
        let read_at = cache.now_ms();
        match self.db(|s| s.revocations(secs)).await {
            Ok(entries) => cache.apply_log(&entries, read_at, gap),
            Err(e) => log::warn!("advanced_token: cannot read the revocation log: {e}"),
        }
    }

    /// Applies the log entries from sequence number `from` on, as
    /// notifications announced them: a read of what is new, where reading
    /// the whole window on every notification made each instance read
    /// every entry of the window up to 50 times a second under a stream of
    /// revocations. Still within the poll's window, so that an old or
    /// forged number cannot make entries the poll has forgotten apply
    /// again. `None` (a notification that names no number) reads the
    /// window as a poll does.
    #[cfg(feature = "postgres")]
    async fn read_announced(&self, from: Option<i64>) {
        let (Some(cache), Some(from)) = (self.cache(), from) else {
            return self.poll_once().await;
        };
        let secs = self.log_window().0;
        match self.db(|s| s.revocations_from(from, secs)).await {
            Ok(entries) => cache.apply_announced(&entries),
            Err(e) => log::warn!("advanced_token: cannot read the revocation log: {e}"),
        }
    }
}

/// Polls every period on the dot (not period + query time): the cache
/// serves for one period from each poll's read, so a late poll only sends a
/// few requests to the database.
async fn poll(weak: Weak<Inner>) {
    let Some(period) = weak
        .upgrade()
        .and_then(|i| i.cache.as_ref().map(|c| c.poll_interval()))
    else {
        return;
    };
    let mut ticks = time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate
    for n in 1u32.. {
        ticks.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        let at = AdvancedToken { inner };
        at.poll_once().await;
        if n % PRUNE_EVERY == 0 {
            if let Err(e) = at.db(|s| s.prune_revocations(LOG_KEEP)).await {
                log::warn!("advanced_token: cannot prune the revocation log: {e}");
            }
        }
    }
}

/// On PostgreSQL, LISTENs for the notification every log entry sends
/// (migration 6), and reads the log at once; the poll stays as the bound if
/// a notification is lost. The listener has a connection of its own.
#[cfg(feature = "postgres")]
async fn listen(weak: Weak<Inner>) {
    use crate::store::postgres::REVOCATION_CHANNEL;
    let Some((pool, period)) = weak.upgrade().and_then(|i| {
        let period = i.cache.as_ref()?.poll_interval();
        // A pool of one connection of its own, with the main pool's
        // options (and so its TLS, and no startup parameter pgbouncer
        // refuses).
        let opts = i.pool.postgres()?.connect_options();
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*opts).clone());
        Some((own, period))
    }) else {
        return;
    };
    let mut listener: Option<sqlx::postgres::PgListener> = None;
    while weak.strong_count() > 0 {
        let Some(l) = listener.as_mut() else {
            listener = connect_listener(&pool, REVOCATION_CHANNEL).await;
            if listener.is_none() {
                time::sleep(period).await;
            }
            continue;
        };
        match time::timeout(period, l.recv()).await {
            Ok(Ok(first)) => {
                // A burst of entries is one read, from the lowest number
                // announced (a transaction may commit after a later one):
                // gather what arrives in the next moment first.
                let mut from = announced(&first);
                let burst = time::sleep(LISTEN_COALESCE);
                rocket::tokio::pin!(burst);
                while let Ok(Ok(n)) = time::timeout_at(burst.deadline(), l.recv()).await {
                    from = from.zip(announced(&n)).map(|(a, b)| a.min(b));
                }
                let Some(inner) = weak.upgrade() else { return };
                AdvancedToken { inner }.read_announced(from).await;
            }
            Ok(Err(e)) => {
                log::warn!("advanced_token: revocation listener: {e}");
                listener = None;
            }
            Err(_elapsed) => {}
        }
    }
}

/// The sequence number a notification names (migration 6's trigger sends
/// the new entry's).
#[cfg(feature = "postgres")]
fn announced(n: &sqlx::postgres::PgNotification) -> Option<i64> {
    n.payload().parse().ok()
}

#[cfg(feature = "postgres")]
async fn connect_listener(
    pool: &sqlx::PgPool,
    channel: &str,
) -> Option<sqlx::postgres::PgListener> {
    let connected = async {
        let mut l = sqlx::postgres::PgListener::connect_with(pool).await?;
        l.listen(channel).await?;
        Ok::<_, sqlx::Error>(l)
    };
    match connected.await {
        Ok(l) => Some(l),
        Err(e) => {
            log::warn!("advanced_token: cannot LISTEN for revocations: {e}");
            None
        }
    }
}

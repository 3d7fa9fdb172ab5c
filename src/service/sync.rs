//! Keeping the token cache honest: the revocation poll and, on PostgreSQL,
//! the `LISTEN` task. Both hold only a weak reference, so they end when the
//! last handle (the Rocket that manages it) is dropped.

use std::sync::{Arc, Weak};

use rocket::tokio::time::{self, MissedTickBehavior};

use super::{AdvancedToken, Inner};

impl AdvancedToken {
    /// With a cache: reads the revocation counter now, then every
    /// `token_cache_poll`; on PostgreSQL also listens for revocations.
    pub(super) async fn start_background_tasks(&self) {
        let Some(cache) = self.cache() else {
            return;
        };
        let read_at = cache.now_ms();
        let last = self.db(|s| s.revocation_counter()).await.ok();
        if last.is_some() {
            cache.mark_fresh(read_at);
        }
        #[cfg(feature = "postgres")]
        if self.pool().backend() == crate::pool::Backend::Postgres {
            rocket::tokio::spawn(listen(Arc::downgrade(&self.inner)));
        }
        rocket::tokio::spawn(poll(Arc::downgrade(&self.inner), last));
    }

    /// One poll: drops the cache if the counter moved since `last`, and
    /// marks the cache fresh from the moment the query was sent. A failed
    /// poll (or a missing counter row) leaves the cache to go stale, so it
    /// stops serving within one period.
    async fn poll_once(&self, last: &mut Option<i64>) {
        let Some(cache) = self.cache() else {
            return;
        };
        let read_at = cache.now_ms();
        match self.db(|s| s.revocation_counter()).await {
            Ok(counter) => {
                if *last != Some(counter) {
                    cache.invalidate_all();
                    *last = Some(counter);
                }
                cache.mark_fresh(read_at);
            }
            Err(e) => log::warn!("advanced_token: cannot poll revocations: {e}"),
        }
    }
}

/// Polls every period on the dot (not period + query time): the cache
/// serves for one period from each poll's read, so a late poll only sends a
/// few requests to the database.
async fn poll(weak: Weak<Inner>, mut last: Option<i64>) {
    let Some(period) = weak
        .upgrade()
        .and_then(|i| i.cache.as_ref().map(|c| c.poll_interval()))
    else {
        return;
    };
    let mut ticks = time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate
    loop {
        ticks.tick().await;
        let Some(inner) = weak.upgrade() else { return };
        AdvancedToken { inner }.poll_once(&mut last).await;
    }
}

/// On PostgreSQL, LISTENs for the notification every revocation sends
/// (migration 4), so other instances' revocations arrive at once; the poll
/// stays as the bound if a notification is lost. The listener has a
/// connection of its own, outside the pool.
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
            Ok(Ok(_notification)) => {
                let Some(inner) = weak.upgrade() else { return };
                AdvancedToken { inner }.forget_all();
            }
            Ok(Err(e)) => {
                log::warn!("advanced_token: revocation listener: {e}");
                listener = None;
            }
            Err(_elapsed) => {}
        }
    }
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

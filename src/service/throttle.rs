//! Login attempts under way in this process, per key (username digest or
//! client IP), so that concurrent attempts count against the failure limit
//! before they have failed. A key's state lives only while someone uses it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use rocket::tokio::sync::Notify;

use crate::error::Error;

#[derive(Debug, Default)]
pub(super) struct InFlight(Mutex<HashMap<String, Arc<Slots>>>);

#[derive(Debug, Default)]
struct Slots {
    /// Attempts admitted and not yet in the database's count, and how many
    /// times that count has changed under us (an attempt recorded or
    /// finished).
    state: Mutex<(i64, u64)>,
    finished: Notify,
}

/// One attempt at a key, waiting or admitted. Frees its slot, and forgets
/// an idle key, on drop (a cancelled wait included).
pub(super) struct Slot<'a> {
    map: &'a InFlight,
    key: String,
    /// `None` only while dropping.
    slots: Option<Arc<Slots>>,
    admitted: bool,
    /// Its attempt is in the database's count now (see `recorded`).
    recorded: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl InFlight {
    /// Waits until `failures + attempts under way < max`, where `failures`
    /// (read from the database by `count`, which also answers `Throttled`)
    /// is re-read whenever an attempt finished in the meantime. So of any
    /// burst, at most `max` minus the recorded failures reach argon2 at
    /// once, and each later one sees their failures.
    /// Returns the slot and the failures it was admitted with.
    pub(super) async fn admit<F, Fut>(
        &self,
        key: String,
        max: u32,
        count: F,
    ) -> Result<(Slot<'_>, i64), Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<i64, Error>>,
    {
        // Every clone of a key's `Arc` is made and dropped under the map's
        // lock, so a slot that finds only the map's reference left knows
        // that nobody else wants the key.
        let slots = lock(&self.0).entry(key.clone()).or_default().clone();
        let mut slot = Slot {
            map: self,
            key,
            slots: Some(slots),
            admitted: false,
            recorded: false,
        };
        loop {
            let admitted = {
                let slots = slot.slots();
                let seen = lock(&slots.state).1;
                let failures = count().await?;
                let notified = slots.finished.notified();
                rocket::tokio::pin!(notified);
                notified.as_mut().enable();
                let decision = {
                    let mut state = lock(&slots.state);
                    if state.1 != seen {
                        None // someone finished while we counted: count again
                    } else if failures + state.0 < i64::from(max) {
                        state.0 += 1;
                        Some(true)
                    } else {
                        Some(false)
                    }
                };
                match decision {
                    Some(true) => Some(failures),
                    Some(false) => {
                        notified.await;
                        None
                    }
                    None => None,
                }
            };
            if let Some(failures) = admitted {
                slot.admitted = true;
                return Ok((slot, failures));
            }
        }
    }
}

impl Slot<'_> {
    fn slots(&self) -> &Slots {
        self.slots.as_deref().expect("present until drop")
    }

    /// The attempt has been written to the database, whose count others
    /// read: it stops counting as under way here (it would count twice).
    pub(super) fn recorded(&mut self) {
        if self.admitted && !self.recorded {
            self.recorded = true;
            let mut state = lock(&self.slots().state);
            state.0 -= 1;
            // A count read before the record committed missed it: whoever
            // is counting now must count again.
            state.1 += 1;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.admitted {
            let mut state = lock(&self.slots().state);
            if !self.recorded {
                state.0 -= 1;
            }
            state.1 += 1;
            drop(state);
            self.slots().finished.notify_waiters();
        }
        let mut map = lock(&self.map.0);
        drop(self.slots.take());
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[rocket::async_test]
    async fn counts_attempts_and_forgets_idle_keys() {
        let in_flight = InFlight::default();
        let ok = || async { Ok(0) };
        // With 2 failures on record and a limit of 3, one attempt at a time.
        let two = || async { Ok(2) };
        let (first, failures) = in_flight.admit("k".into(), 3, two).await.unwrap();
        assert_eq!(failures, 2);
        let second = in_flight.admit("k".into(), 3, two);
        rocket::tokio::pin!(second);
        let waited = rocket::tokio::time::timeout(Duration::from_millis(50), &mut second).await;
        assert!(waited.is_err(), "admitted past the limit");
        drop(first);
        let (second, _) = second.await.unwrap();
        // A wait that is cancelled (the client went away) frees its key too.
        let cancelled = rocket::tokio::time::timeout(
            Duration::from_millis(20),
            in_flight.admit("k".into(), 3, two),
        )
        .await;
        assert!(cancelled.is_err(), "admitted past the limit");
        drop(second);
        // An attempt refused by the count leaves nothing behind either.
        let refused = in_flight
            .admit("k".into(), 3, || async {
                Err::<i64, _>(Error::Throttled(1))
            })
            .await;
        assert!(refused.is_err());
        let (kept, _) = in_flight.admit("other".into(), 3, ok).await.unwrap();
        drop(kept);
        assert!(lock(&in_flight.0).is_empty());
    }

    /// Many attempts at one key finishing at once, on many threads: the map
    /// must end empty (two slots dropping together used to both see the
    /// other's reference and both keep the key).
    #[test]
    fn concurrent_drops_forget_the_key() {
        let rt = rocket::tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        let in_flight = Arc::new(InFlight::default());
        rt.block_on(async {
            for _ in 0..200 {
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        let f = in_flight.clone();
                        rocket::tokio::spawn(async move {
                            let slot = f.admit("k".into(), 100, || async { Ok(0) }).await;
                            drop(slot);
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            }
        });
        assert!(lock(&in_flight.0).is_empty(), "a key leaked");
    }
}

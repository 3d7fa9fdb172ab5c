//! Many `Client`s in one process do not leak (README, "Testing your app"):
//! the crate's background tasks, argon2 threads and pool end when their
//! Rocket is dropped.
//!
//! Process-wide figures (RSS, threads) are only meaningful without the
//! suite's other tests running beside them, so the test re-runs this test
//! binary for itself alone, in a child process, and measures there.
//!
//! Twice: with glibc's malloc kept from retaining freed memory
//! (`MALLOC_MMAP_THRESHOLD_` fixed, so large blocks are returned to the
//! system when freed), where anything the crate leaked per `Client` would
//! show; and with the default malloc, which once kept 2.6 to 5.2 MB per
//! `Client`: each one started argon2 threads of its own, whose fresh malloc
//! arenas kept the freed 19 MiB work areas. The argon2 threads are now one
//! set per process, so RSS must stay flat in both.

use std::time::Duration;

use rocket::tokio::runtime::Handle;
use serde_json::json;

use crate::common::{at, check, client, run, wait_until, Backend, TestDb};

const CHILD: &str = "ADVANCED_TOKEN_TEST_LEAK_CHILD";
/// Set in the child whose RSS growth is checked.
const STRICT: &str = "ADVANCED_TOKEN_TEST_LEAK_STRICT";
const PW: &str = "correct horse battery";
/// Clients built and dropped after the warm-up.
const CLIENTS: usize = 30;
/// Allowed RSS growth over those clients with malloc's retention off (a
/// leak of the size once seen, ~10 MB per client, would be ~300 MB; 24 kB
/// per client was measured).
const MAX_GROWTH_KB: u64 = 8 * 1024;

/// `VmRSS` and `Threads` of this process, from /proc/self/status.
fn status() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    (field("VmRSS:"), field("Threads:"))
}

/// One app's life: launch on a fresh SQLite database, create a user, log
/// in, one guarded request (a cache miss, then a hit), drop.
async fn one_client() {
    let db = TestDb::new(Backend::Sqlite).await;
    let client = client(&db, json!({ "hash_concurrency": 2 })).await;
    let at = at(&client);
    at.create_user("alice", PW).await.unwrap();
    let token = at.login("alice", PW).await.unwrap();
    assert_eq!(check(&client, &token).await.code, 200);
    assert_eq!(check(&client, &token).await.code, 200);
    drop(client);
}

/// Runs this test alone in a child process with `env`; fails if it fails.
fn child(env: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", "leak::many_clients_do_not_leak"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .envs(env.iter().copied())
        .output()
        .expect("the child test runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("clients: RSS"))
        .collect();
    println!("{env:?}: {}", summary.join(""));
    assert!(out.status.success(), "the child test failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the child test did not run:\n{text}"
    );
}

#[test]
fn many_clients_do_not_leak() {
    if std::env::var_os(CHILD).is_none() {
        child(&[(STRICT, "1"), ("MALLOC_MMAP_THRESHOLD_", "131072")]);
        child(&[(STRICT, "1")]);
        return;
    }
    run(async {
        let tasks = || Handle::current().metrics().num_alive_tasks();
        let idle_tasks = tasks();
        // Warm-up: one-time allocations (the dummy hash, the process's
        // argon2 threads and their malloc arenas, Rocket's and sqlx's
        // statics) are not a leak.
        for _ in 0..5 {
            one_client().await;
        }
        let settle = Duration::from_secs(10);
        // Tokio's blocking-pool threads idle for 10 s before they end.
        rocket::tokio::time::sleep(settle + Duration::from_secs(2)).await;
        let (_, idle_threads) = status();
        wait_until("the warm-up's tasks end", settle, || async {
            tasks() <= idle_tasks
        })
        .await;
        let (rss_before, _) = status();
        for _ in 0..CLIENTS {
            one_client().await;
        }
        wait_until("every client's background tasks end", settle, || async {
            tasks() <= idle_tasks
        })
        .await;
        // Tokio's blocking-pool threads idle for 10 s before they end.
        wait_until("every client's threads end", settle * 3, || async {
            status().1 <= idle_threads
        })
        .await;
        let (rss_after, threads) = status();
        let growth = rss_after.saturating_sub(rss_before);
        println!(
            "{CLIENTS} clients: RSS {rss_before} kB -> {rss_after} kB (+{growth} kB, \
             {} kB per client); tasks {} (idle {idle_tasks}); threads {threads} \
             (idle {idle_threads})",
            growth / CLIENTS as u64,
            tasks()
        );
        assert!(
            std::env::var_os(STRICT).is_none() || growth <= MAX_GROWTH_KB,
            "RSS grew by {growth} kB over {CLIENTS} clients"
        );
    });
}

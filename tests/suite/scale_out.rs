//! Scale-out topologies (issue 13): one `advanced-token serve` process per
//! node of a 3-node MariaDB Galera cluster, and PostgreSQL behind pgbouncer.
//!
//! The servers come from `.ci/galera.sh` and `.ci/pgbouncer.sh`; the tests
//! run when these variables are set at build time (see `build.rs`), and are
//! reported as ignored otherwise:
//!
//! - `ADVANCED_TOKEN_TEST_GALERA`: the three nodes' URLs, comma-separated,
//!   each naming database `test` (`bash .ci/galera.sh urls`).
//! - `ADVANCED_TOKEN_TEST_PGBOUNCER`: a URL through a session-mode pgbouncer
//!   with its default settings (`bash .ci/pgbouncer.sh url`).
//! - `ADVANCED_TOKEN_TEST_PGBOUNCER_TX`: the same through a transaction-mode
//!   pgbouncer (`bash .ci/pgbouncer.sh url-tx`).
//!
//! Every test makes a database of its own on the cluster (or behind the
//! pgbouncer) and drops it at the end. The Galera tests run one at a time:
//! one of them cuts a node off from the quorum, which stalls writes on the
//! whole cluster for the failure-detection timeout.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rocket::tokio;
use serde_json::{json, Value};

use crate::flood::http;

// ----- the servers under test --------------------------------------------

/// An `advanced-token serve` process; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ROCKET_DATABASES` for one URL. `connect_timeout` is above Galera's
/// failure-detection timeout (`evs.suspect_timeout`, 5 s), as the README
/// is to advise.
fn databases(url: &str) -> String {
    format!("{{advanced_token={{url=\"{url}\",connect_timeout=10}}}}")
}

/// Spawns a server on `url`; does not wait for it.
fn spawn(url: &str, settings: &str) -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr.log");
    let child = Command::new(env!("CARGO_BIN_EXE_advanced-token"))
        .arg("serve")
        .current_dir(dir.path())
        .env("ROCKET_PORT", port.to_string())
        .env("ROCKET_ADDRESS", "127.0.0.1")
        .env("ROCKET_LOG_LEVEL", "critical")
        .env("ROCKET_DATABASES", databases(url))
        .env("ROCKET_ADVANCED_TOKEN", settings)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start the server");
    Server {
        child,
        port,
        stderr,
        _dir: dir,
    }
}

impl Server {
    fn stderr(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.stderr) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits until the server listens (`Ok`) or exits (`Err` with its
    /// exit status and standard error).
    async fn ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("exited with {status}: {}", self.stderr().trim()));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "neither listening nor exited after 60 s: {}",
                    self.stderr().trim()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts a server and waits until it listens, failing the test otherwise.
async fn start(url: &str, settings: &str) -> Server {
    let mut s = spawn(url, settings);
    if let Err(e) = s.ready().await {
        panic!("the server on {} did not launch: {e}", redact(url));
    }
    s
}

fn redact(url: &str) -> String {
    url.to_owned() // the test URLs carry no password
}

/// Runs an `advanced-token` admin command on `url`.
fn cli(url: &str, args: &[&str]) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_advanced-token"))
        .args(args)
        .current_dir(dir.path())
        .env("ROCKET_DATABASES", databases(url))
        .env("ROCKET_LOG_LEVEL", "critical")
        .stdin(Stdio::null())
        .output()
        .expect("run advanced-token");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "`advanced-token {}` exited with {}: {}",
            args.join(" "),
            out.status,
            stderr.trim()
        ))
    }
}

fn cli_ok(url: &str, args: &[&str]) -> String {
    cli(url, args).unwrap_or_else(|e| panic!("{e}"))
}

async fn login(port: u16, user: &str) -> Result<String, (u16, String)> {
    let (status, body) = http(
        port,
        "POST",
        "/auth/login/",
        None,
        Some(&json!({"username": user, "password": "pw-long-enough"})),
    )
    .await;
    if status != 200 {
        return Err((status, body));
    }
    Ok(token_of(&body))
}

fn token_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn hello(port: u16, token: &str) -> (u16, String) {
    http(port, "GET", "/api/hello/", Some(token), None).await
}

/// Polls until `f` returns true, for at most `limit`; returns how long it took.
async fn until<F, Fut>(limit: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Replaces the database name of a server URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{db}{query}", &base[..host_end])
}

fn unique_name() -> String {
    use rand::Rng;
    format!("advtok_test_{:016x}", rand::thread_rng().gen::<u64>())
}

/// Runs `f` on a runtime of its own on another thread: for clean-up in
/// `Drop`, which runs inside the test's runtime.
fn block_on_aside<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join();
}

// ----- Galera ------------------------------------------------------------

mod galera {
    use super::*;
    use sqlx::{Connection, Executor, MySqlConnection, Row};

    /// Galera tests run one at a time (see the module's documentation).
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// The three nodes' server URLs (database `test`).
    fn nodes() -> Vec<String> {
        let v = std::env::var("ADVANCED_TOKEN_TEST_GALERA")
            .expect("ADVANCED_TOKEN_TEST_GALERA is set at build time but not at run time");
        let urls: Vec<String> = v.split(',').map(|s| s.trim().to_owned()).collect();
        assert_eq!(
            urls.len(),
            3,
            "ADVANCED_TOKEN_TEST_GALERA must hold three URLs, comma-separated: {v:?}"
        );
        urls
    }

    async fn admin(node_url: &str) -> MySqlConnection {
        MySqlConnection::connect(node_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the Galera node {node_url}: {e}"))
    }

    pub async fn status(node_url: &str, name: &str) -> String {
        let mut c = admin(node_url).await;
        let row = sqlx::query(&format!("SHOW STATUS LIKE '{name}'"))
            .fetch_one(&mut c)
            .await
            .unwrap();
        row.get::<String, _>(1)
    }

    /// A fresh database on the cluster: its URL on each node. Dropped at the
    /// end (through node 1: DDL replicates to all).
    pub struct ClusterDb {
        pub urls: Vec<String>,
        name: String,
        admin_url: String,
        _turn: tokio::sync::MutexGuard<'static, ()>,
    }

    impl ClusterDb {
        pub async fn new() -> ClusterDb {
            let turn = ONE_AT_A_TIME.lock().await;
            let nodes = nodes();
            for n in &nodes {
                assert_eq!(
                    status(n, "wsrep_local_state_comment").await,
                    "Synced",
                    "node {n} is not Synced at the start of the test"
                );
            }
            let name = unique_name();
            admin(&nodes[0])
                .await
                .execute(format!("CREATE DATABASE `{name}`").as_str())
                .await
                .unwrap();
            // CREATE DATABASE is replicated in total order, but applied on
            // the other nodes a moment later: wait until each has it, so
            // that a server sees it at once.
            let urls: Vec<String> = nodes.iter().map(|n| with_database(n, &name)).collect();
            for url in &urls {
                let started = Instant::now();
                while MySqlConnection::connect(url).await.is_err() {
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "{url}: the new database never appeared"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            ClusterDb {
                urls,
                name,
                admin_url: nodes[0].clone(),
                _turn: turn,
            }
        }
    }

    impl Drop for ClusterDb {
        fn drop(&mut self) {
            let (url, name) = (self.admin_url.clone(), self.name.clone());
            block_on_aside(async move {
                if let Ok(mut c) = MySqlConnection::connect(&url).await {
                    let _ = c
                        .execute(format!("DROP DATABASE IF EXISTS `{name}`").as_str())
                        .await;
                }
            });
        }
    }

    /// Settings for the servers: many tokens per user, no throttling (the
    /// tests log in a lot, from one IP).
    const SETTINGS: &str = "{login_throttle=false,max_tokens_per_user=100000}";

    /// One server per node, launched one after another (so that the launch
    /// race, tested on its own below, does not fail the other tests).
    async fn one_per_node(db: &ClusterDb, settings: &str) -> Vec<Server> {
        let mut out = Vec::new();
        for url in &db.urls {
            out.push(start(url, settings).await);
        }
        out
    }

    #[rocket::async_test]
    #[cfg_attr(
        not(advtok_test_galera),
        ignore = "set ADVANCED_TOKEN_TEST_GALERA to run"
    )]
    async fn galera_three_instances_launched_at_once_on_an_empty_database() {
        let mut failures = Vec::new();
        for round in 1..=5 {
            let db = ClusterDb::new().await;
            // The same moment: three processes spawned back to back, each
            // migrating the empty database through its own node.
            let mut servers: Vec<Server> = db.urls.iter().map(|u| spawn(u, SETTINGS)).collect();
            for (i, s) in servers.iter_mut().enumerate() {
                if let Err(e) = s.ready().await {
                    failures.push(format!("round {round}, node {}: {e}", i + 1));
                }
            }
            drop(servers);
        }
        assert!(
            failures.is_empty(),
            "{} of 15 launches failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[rocket::async_test]
    #[cfg_attr(
        not(advtok_test_galera),
        ignore = "set ADVANCED_TOKEN_TEST_GALERA to run"
    )]
    async fn galera_token_issued_on_node_1_is_accepted_at_once_by_the_others() {
        let db = ClusterDb::new().await;
        cli_ok(
            &db.urls[0],
            &["create-user", "alice", "--password", "pw-long-enough"],
        );
        let servers = one_per_node(&db, SETTINGS).await;
        let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
        // Four workers, 250 rounds each: log in through node 1's instance,
        // then at once use the token on node 2's or node 3's.
        let mut workers = Vec::new();
        for w in 0..4usize {
            let ports = ports.clone();
            workers.push(tokio::spawn(async move {
                let mut failed = Vec::new();
                for i in 0..250usize {
                    let token = match login(ports[0], "alice").await {
                        Ok(t) => t,
                        Err((s, b)) => {
                            failed.push(format!("login on node 1: {s} {b}"));
                            continue;
                        }
                    };
                    let other = 1 + (w + i) % 2;
                    let (s, b) = hello(ports[other], &token).await;
                    if s != 200 {
                        failed.push(format!("node {}: {s} {b}", other + 1));
                    }
                }
                failed
            }));
        }
        let mut failed = Vec::new();
        for w in workers {
            failed.extend(w.await.unwrap());
        }
        let sample: Vec<_> = failed.iter().take(5).collect();
        assert!(
            failed.is_empty(),
            "{} of 1000 fresh tokens were refused on another node; first: {sample:?}",
            failed.len()
        );
    }

    /// A user per node, rotating its token on that node's instance as fast
    /// as it can until `stop`; returns the failures (anything but 200, and
    /// 401 right after a revoke-all, which is answered by logging in again).
    fn rotate_until(
        port: u16,
        user: String,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
        tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            let mut token = login(port, &user).await.expect("rotator's login");
            let (mut done, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let (s, b) = http(port, "PUT", "/auth/token/", Some(&token), None).await;
                match s {
                    200 => {
                        token = token_of(&b);
                        done += 1;
                    }
                    // revoke-all-tokens took the token: log in again.
                    401 => match login(port, &user).await {
                        Ok(t) => token = t,
                        Err((s, b)) => failed.push(format!("re-login: {s} {b}")),
                    },
                    _ => failed.push(format!("rotation: {s} {b}")),
                }
            }
            (done, failed)
        })
    }

    #[rocket::async_test]
    #[cfg_attr(
        not(advtok_test_galera),
        ignore = "set ADVANCED_TOKEN_TEST_GALERA to run"
    )]
    async fn galera_admin_writes_succeed_while_rotations_run_on_every_node() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let db = ClusterDb::new().await;
        for u in ["alice", "r1", "r2", "r3"] {
            cli_ok(
                &db.urls[0],
                &["create-user", u, "--password", "pw-long-enough"],
            );
        }
        // Rotations in a tight loop: past the default per-user rate limit.
        let settings = SETTINGS.replace('}', ",rotation_max_per_minute=100000}");
        let servers = one_per_node(&db, &settings).await;
        let stop = Arc::new(AtomicBool::new(false));
        let rotators: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(i, s)| rotate_until(s.port, format!("r{}", i + 1), stop.clone()))
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The admin commands, round-robin over the nodes, three times over.
        let commands: [&[&str]; 6] = [
            &["set-password", "alice", "--password", "pw-long-enough"],
            &["deactivate", "alice"],
            &["activate", "alice"],
            &["lock-token", "alice"],
            &["unlock-token", "alice"],
            &["revoke-all-tokens", "--force"],
        ];
        let mut admin_failures = Vec::new();
        let mut n = 0;
        for _ in 0..3 {
            for args in commands {
                let url = db.urls[n % 3].clone();
                n += 1;
                let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
                let r = tokio::task::spawn_blocking(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    cli(&url, &args)
                })
                .await
                .unwrap();
                if let Err(e) = r {
                    admin_failures.push(format!("node {}: {e}", (n - 1) % 3 + 1));
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        let mut rotations = 0;
        let mut rotation_failures = Vec::new();
        for r in rotators {
            let (done, failed) = r.await.unwrap();
            rotations += done;
            rotation_failures.extend(failed);
        }
        eprintln!("{rotations} rotations ran during {n} admin commands");
        assert!(
            admin_failures.is_empty() && rotation_failures.is_empty(),
            "{} of {n} admin commands failed: {admin_failures:#?}\n{} rotations failed (first 5): {:#?}",
            admin_failures.len(),
            rotation_failures.len(),
            rotation_failures.iter().take(5).collect::<Vec<_>>()
        );
        assert!(rotations > 0, "no rotation ran");
    }

    /// Cuts a node off from the quorum (`gmcast.isolate=1`); rejoins it when
    /// dropped, even if the test fails, and waits until it is Synced again.
    struct Isolated {
        node_url: String,
    }

    async fn set_isolate(node_url: &str, on: bool) {
        admin(node_url)
            .await
            .execute(
                format!(
                    "SET GLOBAL wsrep_provider_options = 'gmcast.isolate={}'",
                    u8::from(on)
                )
                .as_str(),
            )
            .await
            .unwrap();
    }

    async fn wait_synced(node_url: &str) -> Duration {
        let started = Instant::now();
        loop {
            if let Ok(mut c) = MySqlConnection::connect(node_url).await {
                let rows = sqlx::query(
                    "SHOW STATUS WHERE Variable_name IN ('wsrep_local_state_comment', 'wsrep_cluster_size')",
                )
                .fetch_all(&mut c)
                .await
                .unwrap_or_default();
                let get = |name: &str| {
                    rows.iter()
                        .find(|r| r.get::<String, _>(0) == name)
                        .map(|r| r.get::<String, _>(1))
                };
                if get("wsrep_local_state_comment").as_deref() == Some("Synced")
                    && get("wsrep_cluster_size").as_deref() == Some("3")
                {
                    return started.elapsed();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{node_url} did not rejoin within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    impl Isolated {
        async fn new(node_url: &str) -> Isolated {
            set_isolate(node_url, true).await;
            let me = Isolated {
                node_url: node_url.to_owned(),
            };
            // The node notices within evs.suspect_timeout (5 s).
            let started = Instant::now();
            while status(node_url, "wsrep_ready").await != "OFF" {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the node never left the quorum"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            me
        }
    }

    impl Drop for Isolated {
        fn drop(&mut self) {
            let url = self.node_url.clone();
            block_on_aside(async move {
                set_isolate(&url, false).await;
                wait_synced(&url).await;
            });
        }
    }

    #[rocket::async_test]
    #[cfg_attr(
        not(advtok_test_galera),
        ignore = "set ADVANCED_TOKEN_TEST_GALERA to run"
    )]
    async fn galera_node_cut_off_from_the_quorum_answers_503_and_recovers() {
        let db = ClusterDb::new().await;
        cli_ok(
            &db.urls[0],
            &["create-user", "alice", "--password", "pw-long-enough"],
        );
        // No token cache: every guarded request asks the database.
        let servers = one_per_node(&db, "{login_throttle=false,token_cache=false}").await;
        let token = login(servers[0].port, "alice").await.unwrap();
        let node3 = nodes()[2].clone();
        let third = servers[2].port;
        assert_eq!(hello(third, &token).await.0, 200);

        let cut = Isolated::new(&node3).await;
        // Node 3's instance: 503 (try again), not 500, for the guard, a
        // login and a rotation.
        let (s, b) = hello(third, &token).await;
        assert_eq!(s, 503, "guarded request on the cut-off node: {s} {b}");
        let (s, b) = http(
            third,
            "POST",
            "/auth/login/",
            None,
            Some(&json!({"username": "alice", "password": "pw-long-enough"})),
        )
        .await;
        assert_eq!(s, 503, "login on the cut-off node: {s} {b}");
        // The others carry on.
        for port in [servers[0].port, servers[1].port] {
            let (s, b) = hello(port, &token).await;
            assert_eq!(s, 200, "a node in the quorum: {s} {b}");
            login(port, "alice").await.unwrap();
        }

        drop(cut); // rejoins, and waits until Synced
        let took = until(
            Duration::from_secs(30),
            "node 3's instance recovers",
            || async { hello(third, &token).await.0 == 200 },
        )
        .await;
        eprintln!("node 3's instance answered 200 again {took:?} after the node was Synced");
        login(third, "alice").await.unwrap();
    }

    /// The cluster's control script, for the test that kills a node.
    fn galera_sh(args: &[&str]) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/galera.sh");
        let out = Command::new("bash")
            .arg(script)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "galera.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Restarts node 3 (index 2) if the test dies before it does.
    struct Killed(bool);
    impl Drop for Killed {
        fn drop(&mut self) {
            if !self.0 {
                galera_sh(&["restart", "2"]);
            }
        }
    }

    #[rocket::async_test]
    #[cfg_attr(
        not(advtok_test_galera),
        ignore = "set ADVANCED_TOKEN_TEST_GALERA to run"
    )]
    async fn galera_node_killed_under_load_loses_no_token() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let db = ClusterDb::new().await;
        cli_ok(
            &db.urls[0],
            &["create-user", "alice", "--password", "pw-long-enough"],
        );
        let servers = one_per_node(&db, SETTINGS).await;
        let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();

        // Load on nodes 1 and 2: logins, each token checked at once on the
        // other node; every token that was issued is kept.
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for w in 0..2usize {
            let (ports, stop) = (ports.clone(), stop.clone());
            load.push(tokio::spawn(async move {
                let (mut issued, mut failed) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::SeqCst) {
                    match login(ports[w], "alice").await {
                        Ok(t) => {
                            let (s, b) = hello(ports[1 - w], &t).await;
                            if s != 200 {
                                failed.push(format!(
                                    "check on node {} of token {}…: {s} {b}",
                                    2 - w,
                                    &t[..8]
                                ));
                            }
                            issued.push(t);
                        }
                        Err((s, b)) => failed.push(format!("login on node {}: {s} {b}", w + 1)),
                    }
                }
                (issued, failed)
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut killed = Killed(false);
        tokio::task::spawn_blocking(|| galera_sh(&["kill", "2"]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(8)).await;
        tokio::task::spawn_blocking(|| galera_sh(&["restart", "2"]))
            .await
            .unwrap();
        killed.0 = true;
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        let (mut issued, mut failed) = (Vec::new(), Vec::new());
        for l in load {
            let (i, f) = l.await.unwrap();
            issued.extend(i);
            failed.extend(f);
        }
        assert!(!issued.is_empty(), "no login succeeded during the test");
        // Node 3's instance may have lost its connections: give it time.
        let third = ports[2];
        until(
            Duration::from_secs(30),
            "node 3's instance answers again",
            || async { hello(third, &issued[0]).await.0 == 200 },
        )
        .await;
        // No token lost: every issued token works on every node, including
        // the one that rejoined.
        let mut lost = Vec::new();
        for t in &issued {
            for (node, &p) in ports.iter().enumerate() {
                if hello(p, t).await.0 != 200 {
                    lost.push(format!("token {}… on node {}", &t[..8], node + 1));
                }
            }
        }
        let sample: Vec<_> = failed.iter().take(5).collect();
        eprintln!(
            "{} tokens issued during the kill; {} failed requests (first: {sample:?})",
            issued.len(),
            failed.len()
        );
        assert!(
            lost.is_empty(),
            "{} (token, node) checks failed after the rejoin: {lost:?}",
            lost.len()
        );
        // The nodes 1 and 2 instances kept answering: at most the stall of
        // failure detection, never an error page other than 503.
        assert!(
            failed.iter().all(|f| f.contains(": 503")),
            "failures other than 503 while a node was down: {sample:?}"
        );
    }
}

// ----- pgbouncer ---------------------------------------------------------

mod pgbouncer {
    use super::*;
    use sqlx::postgres::{PgConnectOptions, PgConnection};
    use sqlx::{ConnectOptions, Connection, Executor, Row};

    /// Connects through pgbouncer: without the `extra_float_digits` startup
    /// parameter, which a default pgbouncer refuses.
    pub async fn connect(url: &str) -> PgConnection {
        url.parse::<PgConnectOptions>()
            .unwrap()
            .extra_float_digits(None)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect through pgbouncer at {url}: {e}"))
    }

    fn var(name: &str) -> String {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| panic!("{name} is set at build time but not at run time"))
    }

    /// A fresh database reached through the pgbouncer at `server` (pgbouncer's
    /// `* =` entry makes it reachable at once).
    pub struct BouncedDb {
        pub url: String,
        server: String,
        name: String,
    }

    impl BouncedDb {
        pub async fn new(server: &str) -> BouncedDb {
            let name = unique_name();
            connect(server)
                .await
                .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                .await
                .unwrap();
            BouncedDb {
                url: with_database(server, &name),
                server: server.to_owned(),
                name,
            }
        }
    }

    impl Drop for BouncedDb {
        fn drop(&mut self) {
            let (server, name) = (self.server.clone(), self.name.clone());
            block_on_aside(async move {
                let _ = connect(&server)
                    .await
                    .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await;
            });
        }
    }

    #[rocket::async_test]
    #[cfg_attr(
        not(advtok_test_pgbouncer),
        ignore = "set ADVANCED_TOKEN_TEST_PGBOUNCER to run"
    )]
    async fn pgbouncer_session_mode_two_instances_revocation_and_notify() {
        let db = BouncedDb::new(&var("ADVANCED_TOKEN_TEST_PGBOUNCER")).await;
        cli_ok(
            &db.url,
            &["create-user", "alice", "--password", "pw-long-enough"],
        );
        // A 30 s poll: a revocation seen within a second came by NOTIFY,
        // through pgbouncer.
        let settings = "{login_throttle=false,token_cache_poll=30.0,max_tokens_per_user=1000}";
        let a = start(&db.url, settings).await;
        let b = start(&db.url, settings).await;
        // Let both listeners connect and LISTEN.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rejected = |port: u16, token: String| async move { hello(port, &token).await.0 == 401 };

        // Issued on A, used on B; logout on B is seen by A.
        let t1 = login(a.port, "alice").await.unwrap();
        assert_eq!(hello(a.port, &t1).await.0, 200);
        assert_eq!(hello(b.port, &t1).await.0, 200);
        let (s, body) = http(b.port, "POST", "/auth/logout/", Some(&t1), None).await;
        assert_eq!(s, 200, "{body}");
        let took = until(
            Duration::from_secs(2),
            "logout on B, seen by A (NOTIFY)",
            || rejected(a.port, t1.clone()),
        )
        .await;
        eprintln!("logout on B seen by A after {took:?}");

        // Rotation on A kills the old token on B.
        let t2 = login(b.port, "alice").await.unwrap();
        assert_eq!(hello(b.port, &t2).await.0, 200);
        let (s, body) = http(a.port, "PUT", "/auth/token/", Some(&t2), None).await;
        assert_eq!(s, 200, "{body}");
        let t3 = token_of(&body);
        until(
            Duration::from_secs(2),
            "rotation on A, seen by B (NOTIFY)",
            || rejected(b.port, t2.clone()),
        )
        .await;
        assert_eq!(hello(b.port, &t3).await.0, 200);

        // revoke-all-tokens from the command line, through pgbouncer too.
        assert_eq!(hello(a.port, &t3).await.0, 200);
        cli_ok(&db.url, &["revoke-all-tokens", "--force"]);
        for (name, port) in [("A", a.port), ("B", b.port)] {
            until(
                Duration::from_secs(2),
                &format!("revoke-all, seen by {name}"),
                || rejected(port, t3.clone()),
            )
            .await;
        }

        // Some concurrency through the pool: 40 logins, 20 per instance.
        let mut logins = Vec::new();
        for i in 0..40 {
            let port = if i % 2 == 0 { a.port } else { b.port };
            logins.push(tokio::spawn(async move { login(port, "alice").await }));
        }
        for l in logins {
            let t = l.await.unwrap().unwrap_or_else(|e| panic!("login: {e:?}"));
            assert_eq!(hello(a.port, &t).await.0, 200);
        }
    }

    #[rocket::async_test]
    #[cfg_attr(
        not(advtok_test_pgbouncer_tx),
        ignore = "set ADVANCED_TOKEN_TEST_PGBOUNCER_TX to run"
    )]
    async fn pgbouncer_transaction_mode_is_refused_at_launch() {
        let db = BouncedDb::new(&var("ADVANCED_TOKEN_TEST_PGBOUNCER_TX")).await;
        let mut s = spawn(&db.url, "{}");
        match s.ready().await {
            Ok(()) => panic!(
                "the server launched behind a transaction-mode pgbouncer; it must refuse, naming pool_mode = session"
            ),
            Err(e) => assert!(
                e.contains("pool_mode = session"),
                "refused, but without naming `pool_mode = session`: {e}"
            ),
        }
    }

    /// Two connections of one client, each asking for its backend's pid:
    /// if the second is served by the first one's backend while the first
    /// is still connected, the pooler hands backends around between
    /// transactions, i.e. it is not in session mode. Simple-query protocol
    /// only (an `&str` with no arguments), as named prepared statements do
    /// not survive transaction pooling.
    async fn backends_are_shared(url: &str, tries: usize) -> bool {
        let mut c1 = connect(url).await;
        let mut c2 = connect(url).await;
        let mut shared = false;
        for _ in 0..tries {
            let p1: i32 = c1
                .fetch_one("SELECT pg_backend_pid()")
                .await
                .unwrap()
                .get(0);
            let p2: i32 = c2
                .fetch_one("SELECT pg_backend_pid()")
                .await
                .unwrap()
                .get(0);
            shared |= p1 == p2;
        }
        let _ = c1.close().await;
        let _ = c2.close().await;
        shared
    }

    /// Not a test of the crate: the detection the crate can use at launch
    /// (issue 13), shown to tell the two modes apart.
    #[rocket::async_test]
    #[cfg_attr(
        not(all(advtok_test_pgbouncer, advtok_test_pgbouncer_tx)),
        ignore = "set ADVANCED_TOKEN_TEST_PGBOUNCER and ADVANCED_TOKEN_TEST_PGBOUNCER_TX to run"
    )]
    async fn pgbouncer_pool_mode_can_be_told_apart_with_two_connections() {
        let tx = var("ADVANCED_TOKEN_TEST_PGBOUNCER_TX");
        let session = var("ADVANCED_TOKEN_TEST_PGBOUNCER");
        assert!(
            backends_are_shared(&tx, 5).await,
            "transaction mode not detected"
        );
        assert!(
            !backends_are_shared(&session, 20).await,
            "session mode taken for transaction mode"
        );
        // One connection alone cannot tell: in transaction mode an idle
        // pool gives it the same backend every time.
        let mut c = connect(&tx).await;
        let a: i32 = c.fetch_one("SELECT pg_backend_pid()").await.unwrap().get(0);
        let b: i32 = c.fetch_one("SELECT pg_backend_pid()").await.unwrap().get(0);
        eprintln!("one connection through transaction mode: pid {a} then {b}");
    }
}

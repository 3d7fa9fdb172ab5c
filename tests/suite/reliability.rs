//! Database outages: a TCP proxy in front of the server that the test cuts
//! and restores. The guard and the routes answer 503 within the connect
//! timeout, and the same process recovers once the database is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocket::http::{ContentType, Status};
use rocket::local::asynchronous::Client;
use rocket::tokio::io::{AsyncReadExt, AsyncWriteExt};
use rocket::tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use rocket::tokio::net::{TcpListener, TcpStream};
use rocket::tokio::task::JoinHandle;
use serde_json::json;

use crate::common::{at, auth, body_json, check, login, Backend, TestDb};

/// A TCP proxy to `target` that can be cut (every connection dropped, new
/// ones refused) and restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    trap: Arc<Trap>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let frozen = Arc::new(AtomicBool::new(false));
        let trap = Arc::new(Trap::default());
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns2, frozen2, trap2) =
            (up.clone(), conns.clone(), frozen.clone(), trap.clone());
        let accept = rocket::tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let (frozen, trap) = (frozen2.clone(), trap2.clone());
                let handle = rocket::tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(&target).await {
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        rocket::tokio::join!(
                            pump(ri, wo, frozen.clone(), trap.clone(), true),
                            pump(ro, wi, frozen, trap, false)
                        );
                    }
                });
                conns2.lock().unwrap().push(handle);
            }
        });
        Proxy {
            port,
            up,
            frozen,
            trap,
            conns,
            _accept: accept,
        }
    }

    /// Keeps every connection open but forwards nothing: a server that has
    /// stopped answering.
    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }

    /// From the moment a client sends bytes containing `pattern` (once),
    /// the server's replies are held until [`Proxy::release`]: the server
    /// has run the statement, the client has not heard back.
    fn hold_replies_after(&self, pattern: &'static [u8]) {
        *self.trap.pattern.lock().unwrap() = Some(pattern);
    }

    fn release(&self) {
        *self.trap.pattern.lock().unwrap() = None;
        self.trap.sprung.store(false, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// See [`Proxy::hold_replies_after`].
#[derive(Default)]
struct Trap {
    pattern: Mutex<Option<&'static [u8]>>,
    sprung: AtomicBool,
}

impl Trap {
    /// Springs if `sent` (client to server) contains the pattern.
    fn check(&self, sent: &[u8]) {
        let mut pattern = self.pattern.lock().unwrap();
        if let Some(p) = *pattern {
            if sent.windows(p.len()).any(|w| w == p) {
                self.sprung.store(true, Ordering::SeqCst);
                *pattern = None;
            }
        }
    }
}

/// Copies bytes one way (`upstream`: client to server), holding them while
/// the proxy is frozen, and the server's replies while the trap is sprung.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    trap: Arc<Trap>,
    upstream: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if upstream {
            trap.check(&buf[..n]);
        }
        while frozen.load(Ordering::SeqCst) || (!upstream && trap.sprung.load(Ordering::SeqCst)) {
            rocket::tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `scheme://user@host:port/db?q` → the same through 127.0.0.1:`port`,
/// and the original `host:port`.
fn via_proxy(url: &str, port: u16) -> (String, String) {
    let start = url.find("://").unwrap() + 3;
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let proxied = format!(
        "{}{}127.0.0.1:{}{}",
        &url[..start],
        userinfo,
        port,
        &url[end..]
    );
    (proxied, hostport.to_owned())
}

/// The requests that need the database, and what an outage answers them.
const UNAVAILABLE: &str = "The authentication database is unavailable. Try again later.";

/// How long past `connect_timeout` an answer may take on 2 busy cores.
const MARGIN: Duration = Duration::from_millis(1500);

/// Sends one request; returns its status, its body and how long it took.
async fn timed(
    client: &Client,
    method: &str,
    path: &str,
    token: &str,
) -> (Status, serde_json::Value, Duration) {
    let started = Instant::now();
    let req = match method {
        "GET" => client.get(path.to_owned()),
        "PUT" => client.put(path.to_owned()),
        _ => client.post(path.to_owned()),
    };
    let req = if path.contains("login") {
        req.header(ContentType::JSON)
            .body(json!({"username": "alice", "password": "pw-long-enough"}).to_string())
    } else {
        req.header(auth(token))
    };
    let res = req.dispatch().await;
    let took = started.elapsed();
    let status = res.status();
    assert_eq!(
        res.content_type(),
        Some(ContentType::JSON),
        "{method} {path}"
    );
    (status, body_json(res).await, took)
}

/// Requests that do not need the database are answered as usual during an
/// outage: a malformed token or none is still 401, not 503.
async fn no_database_needed(client: &Client) {
    for (header, detail) in [
        ("Token not-a-token", "Invalid token."),
        ("Token", "Invalid token header. No credentials provided."),
    ] {
        let res = client
            .get("/auth/token/")
            .header(rocket::http::Header::new("Authorization", header))
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::Unauthorized, "{header}");
        assert_eq!(body_json(res).await, json!({ "detail": detail }));
    }
    let res = client.get("/api/hello/").dispatch().await;
    assert_eq!(res.status(), Status::Unauthorized);
}

/// Puts a new proxy in front of `db`'s server and points `db.url` at it;
/// returns the proxy and the direct URL (put it back before `db` drops).
async fn behind_proxy(db: &mut TestDb) -> (Proxy, String) {
    let default_port = if db.backend == Backend::Postgres {
        5432
    } else {
        3306
    };
    let (_, mut target) = via_proxy(&db.url, 0);
    if !target.contains(':') {
        target = format!("{target}:{default_port}");
    }
    let proxy = Proxy::start(target).await;
    let direct = db.url.clone();
    db.url = via_proxy(&direct, proxy.port).0;
    (proxy, direct)
}

async fn outage(backend: Backend, cache: bool) {
    let mut db = TestDb::new(backend).await;
    let (proxy, direct) = behind_proxy(&mut db).await;

    let connect_timeout = 2;
    let poll = 0.5;
    let figment = db
        .figment(json!({"token_cache": cache, "token_cache_poll": poll}))
        .merge(("databases.advanced_token.connect_timeout", connect_timeout));
    let client = Client::tracked(crate::common::app(figment, None))
        .await
        .unwrap();
    at(&client)
        .create_user("alice", "pw-long-enough")
        .await
        .unwrap();
    let token = login(&client, "alice", "pw-long-enough").await;
    assert_eq!(check(&client, &token).await, Status::Ok);
    let deadline = Duration::from_secs(connect_timeout) + MARGIN;

    for mode in ["cut", "frozen"] {
        if mode == "cut" {
            proxy.cut()
        } else {
            proxy.freeze()
        }
        if cache {
            // The cache serves until its last successful poll is one period
            // old, then stops: the guard goes to the database and answers
            // 503. Each such request takes up to connect_timeout.
            let started = Instant::now();
            let bound = Duration::from_secs_f64(poll) + deadline + MARGIN;
            loop {
                let (status, _, _) = timed(&client, "GET", "/auth/token/", &token).await;
                if status == Status::ServiceUnavailable {
                    break;
                }
                assert_eq!(status, Status::Ok);
                assert!(
                    started.elapsed() < bound,
                    "{mode}: the cache kept serving for {:?} without a poll",
                    started.elapsed()
                );
                rocket::tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        no_database_needed(&client).await;
        for (method, path) in [
            ("GET", "/auth/token/"),
            ("GET", "/api/hello/"),
            ("PUT", "/auth/token/"),
            ("GET", "/auth/logout/"),
            ("POST", "/auth/login/"),
        ] {
            let (status, body, took) = timed(&client, method, path, &token).await;
            assert_eq!(
                status,
                Status::ServiceUnavailable,
                "{mode}: {method} {path}"
            );
            assert_eq!(body, json!({ "detail": UNAVAILABLE }), "{method} {path}");
            assert!(
                took < deadline,
                "{mode}: {method} {path} took {took:?}, connect_timeout {connect_timeout} s"
            );
        }

        // Back up: the same process recovers, without a restart.
        proxy.restore();
        proxy.thaw();
        let started = Instant::now();
        loop {
            if check(&client, &token).await == Status::Ok {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "no recovery");
            rocket::tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(check(&client, &token).await, Status::Ok);
        login(&client, "alice", "pw-long-enough").await;
    }
    db.url = direct;
}

/// A transaction whose `BEGIN` the 503 deadline cuts short leaves nothing
/// open behind it. The server runs the `BEGIN`; its answer is held past the
/// deadline. sqlx 0.7.4's MySQL driver counts a transaction only once
/// `BEGIN` has answered, so it returned the connection to the pool inside
/// a transaction nobody would end: later reads on it saw a frozen snapshot
/// (a token issued since answered 401), and its writes were never
/// committed. (On a Galera node `BEGIN` waits for the cluster, which is
/// how a node-kill test lost a token.)
async fn begin_cut_short(backend: Backend) {
    let mut db = TestDb::new(backend).await;
    if backend == Backend::Postgres {
        // In clear, so that the proxy can see the `BEGIN`.
        let sep = if db.url.contains('?') { '&' } else { '?' };
        db.url = format!("{}{sep}sslmode=disable", db.url);
    }
    let (proxy, direct) = behind_proxy(&mut db).await;
    let figment = db
        .figment(json!({"token_cache": false}))
        .merge(("databases.advanced_token.connect_timeout", 1))
        // One connection: the one the cut-short `BEGIN` ran on.
        .merge(("databases.advanced_token.max_connections", 1));
    let client = Client::tracked(crate::common::app(figment, None))
        .await
        .unwrap();
    let at_proxy = at(&client);
    let id = at_proxy
        .create_user("alice", "pw-long-enough")
        .await
        .unwrap();
    let old = login(&client, "alice", "pw-long-enough").await;

    proxy.hold_replies_after(b"BEGIN");
    let cut = at_proxy.issue_token(id).await;
    assert!(
        matches!(cut, Err(rocket_advanced_token::Error::Unavailable(_))),
        "{cut:?}"
    );
    proxy.release();
    // The connection is back in the pool: this read is its first since.
    assert_eq!(check(&client, &old).await, Status::Ok);
    // Another instance, straight to the server, issues a token.
    db.url = direct;
    let other = Client::tracked(crate::common::app(db.figment(json!({})), None))
        .await
        .unwrap();
    let new = login(&other, "alice", "pw-long-enough").await;
    for round in 0..3 {
        assert_eq!(
            check(&client, &new).await,
            Status::Ok,
            "round {round}: a token issued after the cut-short BEGIN"
        );
    }
    // And what this instance writes, the other sees.
    let issued = at_proxy.issue_token(id).await.unwrap();
    assert_eq!(check(&other, &issued).await, Status::Ok);
}

/// SQLite: another process holds the write lock (`BEGIN EXCLUSIVE`, as a
/// long backup or a stuck writer would). What needs to write answers 503
/// within `connect_timeout` (SQLite's busy timeout); reads go on (WAL);
/// a malformed token is still 401; once the lock is gone, all works again.
async fn sqlite_locked(cache: bool) {
    use sqlx::Connection;
    let db = TestDb::new(Backend::Sqlite).await;
    let connect_timeout = 2;
    let figment = db
        .figment(json!({"token_cache": cache}))
        .merge(("databases.advanced_token.connect_timeout", connect_timeout));
    let client = Client::tracked(crate::common::app(figment, None))
        .await
        .unwrap();
    at(&client)
        .create_user("alice", "pw-long-enough")
        .await
        .unwrap();
    let token = login(&client, "alice", "pw-long-enough").await;
    let deadline = Duration::from_secs(connect_timeout) + MARGIN;

    let mut locker = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    no_database_needed(&client).await;
    for (method, path) in [
        ("PUT", "/auth/token/"),
        ("GET", "/auth/logout/"),
        ("POST", "/auth/login/"),
    ] {
        let (status, body, took) = timed(&client, method, path, &token).await;
        assert_eq!(
            status,
            Status::ServiceUnavailable,
            "{method} {path}: {body}"
        );
        assert_eq!(body, json!({ "detail": UNAVAILABLE }), "{method} {path}");
        assert!(
            took < deadline,
            "{method} {path} took {took:?}, connect_timeout {connect_timeout} s"
        );
    }
    // Reading needs no write lock.
    assert_eq!(check(&client, &token).await, Status::Ok);
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    locker.close().await.unwrap();
    let res = client
        .put("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    let new = body_json(res).await["token"].as_str().unwrap().to_owned();
    assert_eq!(check(&client, &new).await, Status::Ok);
    login(&client, "alice", "pw-long-enough").await;
}

backend_test!(
    Postgres,
    fn outage_postgres() {
        outage(Backend::Postgres, false).await;
    }
);

backend_test!(
    Postgres,
    fn outage_postgres_cached() {
        outage(Backend::Postgres, true).await;
    }
);

backend_test!(
    MySql,
    fn outage_mysql() {
        outage(Backend::MySql, false).await;
    }
);

backend_test!(
    MySql,
    fn outage_mysql_cached() {
        outage(Backend::MySql, true).await;
    }
);

backend_test!(
    Sqlite,
    fn outage_sqlite_write_lock() {
        sqlite_locked(false).await;
    }
);

backend_test!(
    Sqlite,
    fn outage_sqlite_write_lock_cached() {
        sqlite_locked(true).await;
    }
);

backend_test!(
    Postgres,
    fn begin_cut_short_postgres() {
        begin_cut_short(Backend::Postgres).await;
    }
);

backend_test!(
    MySql,
    fn begin_cut_short_mysql() {
        begin_cut_short(Backend::MySql).await;
    }
);

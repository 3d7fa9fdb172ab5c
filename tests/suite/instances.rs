//! Several instances on one database, as real server processes on two
//! ports, plus the command line as a third process.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::run_cli_ok;
use crate::common::{Backend, TestDb};
use crate::flood::{http, start};

async fn login(port: u16) -> String {
    let (status, body) = http(
        port,
        "POST",
        "/auth/login/",
        None,
        Some(&json!({"username": "alice", "password": "pw-long-enough"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn status(port: u16, token: &str) -> u16 {
    http(port, "GET", "/api/hello/", Some(token), None).await.0
}

/// Waits until `port` rejects `token`; returns the seconds it took.
async fn until_rejected(port: u16, token: &str) -> f64 {
    let started = Instant::now();
    while status(port, token).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never rejected"
        );
        rocket::tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed().as_secs_f64()
}

async fn two_processes(backend: Backend, cache: bool) {
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
    run_cli_ok(
        &db,
        &["create-user", "alice", "--password", "pw-long-enough"],
    );
    let settings = format!("{{token_cache={cache},token_cache_poll=0.5}}");
    let a = start(&db, &settings).await;
    let b = start(&db, &settings).await;
    // Without the cache every revocation is seen at once; with it, within
    // the poll period (0.5 s) plus the checking loop's own step (a 20 ms
    // pause and an HTTP request).
    let bound = if cache { 0.5 + 0.15 } else { 0.0 };
    let seen =
        |took: f64, what: &str| assert!(took <= bound + 0.05, "{what}: {took:.2}s (cache {cache})");

    // A token issued by A works on B; logout on B kills it on A.
    let t1 = login(a.port).await;
    assert_eq!(status(a.port, &t1).await, 200);
    assert_eq!(status(b.port, &t1).await, 200);
    assert_eq!(
        http(b.port, "POST", "/auth/logout/", Some(&t1), None)
            .await
            .0,
        200
    );
    seen(until_rejected(a.port, &t1).await, "logout on B, seen by A");

    // Rotation on A kills the old token on B.
    let t2 = login(b.port).await;
    assert_eq!(status(b.port, &t2).await, 200);
    let (code, body) = http(a.port, "PUT", "/auth/token/", Some(&t2), None).await;
    assert_eq!(code, 200, "{body}");
    let t3 = serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    seen(
        until_rejected(b.port, &t2).await,
        "rotation on A, seen by B",
    );
    assert_eq!(status(b.port, &t3).await, 200);

    // revoke-all-tokens from the command line is seen by both.
    assert_eq!(status(a.port, &t3).await, 200);
    run_cli_ok(&db, &["revoke-all-tokens", "--force"]);
    seen(
        until_rejected(a.port, &t3).await,
        "revoke-all-tokens, seen by A",
    );
    seen(
        until_rejected(b.port, &t3).await,
        "revoke-all-tokens, seen by B",
    );
}

macro_rules! instances {
    ($($name:ident: $backend:ident, $cache:expr;)*) => {
        $(
            #[rocket::async_test]
            async fn $name() {
                two_processes(Backend::$backend, $cache).await;
            }
        )*
    };
}

instances! {
    two_servers_sqlite: Sqlite, false;
    two_servers_sqlite_cached: Sqlite, true;
    two_servers_postgres: Postgres, false;
    two_servers_postgres_cached: Postgres, true;
    two_servers_mysql: MySql, false;
    two_servers_mysql_cached: MySql, true;
}

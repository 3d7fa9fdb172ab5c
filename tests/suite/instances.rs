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

/// Waits until `port` rejects `token`; returns `None` when the first
/// request already was, or the seconds it took.
async fn until_rejected(port: u16, token: &str) -> Option<f64> {
    let started = Instant::now();
    if status(port, token).await == 401 {
        return None;
    }
    while status(port, token).await != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never rejected"
        );
        rocket::tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(started.elapsed().as_secs_f64())
}

async fn two_processes(backend: Backend, cache: bool) {
    let db = TestDb::new(backend).await;
    run_cli_ok(
        &db,
        &["create-user", "alice", "--password", "pw-long-enough"],
    )
    .await;
    let settings = format!("{{token_cache={cache},token_cache_poll=0.5}}");
    let a = start(&db, &settings).await;
    let b = start(&db, &settings).await;
    // Without the cache every revocation is seen at once: the very first
    // request after it is refused (no time bound needed). With it, within
    // the poll period (0.5 s), with a margin for the checking loop's own
    // steps on 2 busy cores.
    let seen = |took: Option<f64>, what: &str| match took {
        None => {}
        Some(took) => assert!(
            cache && took <= 0.5 + 1.0,
            "{what}: refused after {took:.2}s (cache {cache})"
        ),
    };

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
    run_cli_ok(&db, &["revoke-all-tokens", "--force"]).await;
    seen(
        until_rejected(a.port, &t3).await,
        "revoke-all-tokens, seen by A",
    );
    seen(
        until_rejected(b.port, &t3).await,
        "revoke-all-tokens, seen by B",
    );
}

/// Races across two server processes on one database: of concurrent
/// rotations of one token spread over both, exactly one wins (the
/// conditional update); a burst of wrong passwords spread over both gets at
/// most 2 × the limit past the throttle (the in-process bookkeeping is per
/// instance, the counts in the database are shared).
async fn races(backend: Backend) {
    let db = TestDb::new(backend).await;
    run_cli_ok(
        &db,
        &["create-user", "alice", "--password", "pw-long-enough"],
    )
    .await;
    run_cli_ok(&db, &["create-user", "bob", "--password", "pw-long-enough"]).await;
    let settings = "{login_max_failures=5,login_max_failures_per_ip=1000,token_cache_poll=0.5}";
    let a = start(&db, settings).await;
    let b = start(&db, settings).await;
    let ports = [a.port, b.port];

    // Rotation: both servers know (and cache) the token, then 20 rotations
    // of it at once, alternating between them.
    let token = login(a.port).await;
    assert_eq!(status(a.port, &token).await, 200);
    assert_eq!(status(b.port, &token).await, 200);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (port, token) = (ports[i % 2], token.clone());
        tasks.push(rocket::tokio::spawn(async move {
            http(port, "PUT", "/auth/token/", Some(&token), None).await
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (code, body) = t.await.unwrap();
        match code {
            200 => winners.push(
                serde_json::from_str::<Value>(&body).unwrap()["token"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            ),
            401 => {}
            other => panic!("a racing rotation got {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    let rows = db
        .query_strings("SELECT COUNT(*) FROM advanced_token_tokens")
        .await;
    assert_eq!(
        rows[0][0].as_deref(),
        Some("1"),
        "never two live successors"
    );
    for port in ports {
        assert_eq!(status(port, &winners[0]).await, 200);
        until_rejected(port, &token).await;
    }

    // Throttling: 40 wrong passwords for bob at once, over both servers.
    let wrong = json!({"username": "bob", "password": "wrong"});
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (port, wrong) = (ports[i % 2], wrong.clone());
        tasks.push(rocket::tokio::spawn(async move {
            http(port, "POST", "/auth/login/", None, Some(&wrong)).await
        }));
    }
    let (mut refused, mut throttled) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            (401, _) => refused += 1,
            (429, _) => throttled += 1,
            (other, body) => panic!("a throttled login got {other}: {body}"),
        }
    }
    assert!(
        (5..=10).contains(&refused),
        "{refused} wrong passwords reached argon2 over 2 instances, limit 5 each"
    );
    assert_eq!(refused + throttled, 40);
    // And the right password is throttled on both now.
    let right = json!({"username": "bob", "password": "pw-long-enough"});
    for port in ports {
        let (code, body) = http(port, "POST", "/auth/login/", None, Some(&right)).await;
        assert_eq!(code, 429, "{body}");
    }
}

macro_rules! races {
    ($($name:ident: $backend:ident;)*) => {
        $(
            backend_test!($backend, fn $name() {
                races(Backend::$backend).await;
            });
        )*
    };
}

races! {
    races_across_two_servers_sqlite: Sqlite;
    races_across_two_servers_postgres: Postgres;
    races_across_two_servers_mysql: MySql;
}

macro_rules! instances {
    ($($name:ident: $backend:ident, $cache:expr;)*) => {
        $(
            backend_test!($backend, fn $name() {
                two_processes(Backend::$backend, $cache).await;
            });
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

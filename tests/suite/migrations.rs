//! The crate's migrations coexist with the application's own sqlx
//! migrations on the same database, whichever runs first.

use std::path::Path;

use rocket::local::asynchronous::Client;
use serde_json::json;
use sqlx::migrate::Migrator;

use crate::common::{app, at, Backend, TestDb};

/// How many migrations the crate's own users table has: every file but the
/// 01xx ones (those are for an app's own users table).
fn builtin_migrations() -> i64 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("01")
        })
        .count() as i64
}

async fn app_migrations(dir: &Path, db: &TestDb) {
    let migrator = Migrator::new(dir).await.expect("app migrations");
    match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            migrator.run(&pool).await.expect("app migrations run");
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            migrator.run(&pool).await.expect("app migrations run");
            pool.close().await;
        }
        Backend::MySql => {
            let pool = sqlx::MySqlPool::connect(&db.url).await.unwrap();
            migrator.run(&pool).await.expect("app migrations run");
            pool.close().await;
        }
    }
}

async fn launch_and_use(db: &TestDb) {
    let client = Client::tracked(app(db.figment(json!({})), None))
        .await
        .expect("launch");
    let at = at(&client);
    if at.list_users().await.unwrap().is_empty() {
        at.create_user("alice", "pw-long-enough").await.unwrap();
    }
    at.login("alice", "pw-long-enough").await.unwrap();
    at.close().await;
}

async fn both_orders(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("20240101000000_app_things.sql"),
        "CREATE TABLE app_things (id BIGINT PRIMARY KEY, name VARCHAR(100) NOT NULL);",
    )
    .unwrap();

    // The app's migrations first, then ours, then the app's again.
    let db = TestDb::new(backend).await;
    app_migrations(dir.path(), &db).await;
    launch_and_use(&db).await;
    app_migrations(dir.path(), &db).await;
    launch_and_use(&db).await;
    assert_eq!(db.count("app_things").await, 0);
    assert_eq!(
        db.count("_sqlx_migrations").await,
        1,
        "only the app's migration is in sqlx's table"
    );

    // Ours first, then the app's, then ours again.
    let db = TestDb::new(backend).await;
    launch_and_use(&db).await;
    app_migrations(dir.path(), &db).await;
    launch_and_use(&db).await;
    assert_eq!(db.count("_sqlx_migrations").await, 1);
    assert_eq!(
        db.count("advanced_token_migrations").await,
        builtin_migrations()
    );
}

backend_test!(
    Sqlite,
    fn coexist_with_app_migrations_sqlite() {
        both_orders(Backend::Sqlite).await;
    }
);

backend_test!(
    Postgres,
    fn coexist_with_app_migrations_postgres() {
        both_orders(Backend::Postgres).await;
    }
);

backend_test!(
    MySql,
    fn coexist_with_app_migrations_mysql() {
        both_orders(Backend::MySql).await;
    }
);

/// Several processes migrating one fresh database at the same moment (a
/// rolling deploy): every one succeeds and each migration is applied once.
async fn concurrent_processes(backend: Backend) {
    use crate::common::{wait_with_deadline, PROCESS_DEADLINE};
    use std::process::{Command, Stdio};
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..6)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_advanced-token"))
                .args(["list-users", "--json"])
                .current_dir(dir.path())
                .env(
                    "ROCKET_DATABASES",
                    format!("{{advanced_token={{url=\"{}\"}}}}", db.url),
                )
                .env("ROCKET_LOG_LEVEL", "critical")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start advanced-token")
        })
        .collect();
    let outputs = rocket::tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| wait_with_deadline(c, PROCESS_DEADLINE))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for out in outputs {
        assert!(
            out.status.success(),
            "a concurrent migration failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    }
    assert_eq!(
        db.count("advanced_token_migrations").await,
        builtin_migrations()
    );
    launch_and_use(&db).await;
}

backend_test!(
    Sqlite,
    fn concurrent_migrations_sqlite() {
        concurrent_processes(Backend::Sqlite).await;
    }
);

backend_test!(
    Postgres,
    fn concurrent_migrations_postgres() {
        concurrent_processes(Backend::Postgres).await;
    }
);

backend_test!(
    MySql,
    fn concurrent_migrations_mysql() {
        concurrent_processes(Backend::MySql).await;
    }
);

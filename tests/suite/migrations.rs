//! The crate's migrations coexist with the application's own sqlx
//! migrations on the same database, whichever runs first.

use std::path::Path;

use rocket::local::asynchronous::Client;
use serde_json::json;
use sqlx::migrate::Migrator;

use crate::common::{app, at, Backend, TestDb};

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
    let Some(db) = TestDb::new(backend).await else {
        return;
    };
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
    let db = TestDb::new(backend).await.unwrap();
    launch_and_use(&db).await;
    app_migrations(dir.path(), &db).await;
    launch_and_use(&db).await;
    assert_eq!(db.count("_sqlx_migrations").await, 1);
    // Every migration of the crate's own users table (the 01xx ones are for
    // an app's own users table).
    let ours = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("01")
        })
        .count();
    assert_eq!(db.count("advanced_token_migrations").await, ours as i64);
}

#[rocket::async_test]
async fn coexist_with_app_migrations_sqlite() {
    both_orders(Backend::Sqlite).await;
}

#[rocket::async_test]
async fn coexist_with_app_migrations_postgres() {
    both_orders(Backend::Postgres).await;
}

#[rocket::async_test]
async fn coexist_with_app_migrations_mysql() {
    both_orders(Backend::MySql).await;
}

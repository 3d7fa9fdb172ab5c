//! An app that keeps its users in its own table (issue 14): the shape of
//! `examples/own_users.rs` on every backend — one database named `app`, the
//! table named in configuration, `GET /me` from the guard's user — and an
//! app's own `UserBackend` with UUID ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rocket::http::Status;
use rocket::local::asynchronous::Client;
use rocket::serde::json::Json;
use rocket::{get, routes};
use rocket_advanced_token::{
    AdvancedToken, AppUser, AuthUser, Error, LoginUser, UserBackend, UserId,
};
use serde_json::{json, Value};

use crate::common::*;

const PW: &str = "correct horse battery staple";

/// The example's `GET /me`: from the guard's user, no query of its own.
#[get("/me")]
fn me(user: AuthUser) -> Json<Value> {
    let fields = user.fields().cloned().unwrap_or_default();
    Json(json!({
        "id": user.id,
        "email": fields.get("email"),
        "display_name": fields.get("display_name"),
    }))
}

/// The example's table, as its own migration creates it.
fn ddl(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            include_str!("../../examples/own_users_migrations/sqlite/20261129000000_app_users.sql")
        }
        Backend::Postgres => include_str!(
            "../../examples/own_users_migrations/postgres/20261129000000_app_users.sql"
        ),
        Backend::MySql => {
            include_str!("../../examples/own_users_migrations/mysql/20261129000000_app_users.sql")
        }
    }
}

/// The app over `db`, which it knows as `databases.app` only.
async fn app_client(db: &TestDb, settings: Value) -> Client {
    let mut cfg = json!({
        "database": "app",
        "users": {
            "table": "app_users",
            "login": "email",
            "password_hash": "password_hash",
            "active": "active",
            "fields": ["email", "display_name"],
        },
    });
    for (k, v) in settings.as_object().cloned().unwrap_or_default() {
        cfg[k] = v;
    }
    let figment = base_figment()
        .merge(("log_level", "critical"))
        .merge((
            "databases.app",
            json!({"url": db.url, "max_connections": 16, "connect_timeout": 5}),
        ))
        .merge(("advanced_token", cfg));
    let rocket = rocket::custom(figment)
        .attach(AdvancedToken::fairing())
        .mount("/auth", rocket_advanced_token::routes())
        .mount("/", routes![me]);
    Client::tracked(rocket).await.expect("the app launches")
}

/// Creates the table and one user; returns the user's id.
async fn ada(db: &TestDb, client: &Client, hash: Option<&str>) -> i64 {
    db.exec(ddl(db.backend)).await;
    let hash = match hash {
        Some(h) => h.to_owned(),
        None => at(client).hash_password(PW).await.unwrap(),
    };
    db.exec(&format!(
        "INSERT INTO app_users (email, password_hash, active, display_name) \
         VALUES ('ada@example.com', '{hash}', TRUE, 'Ada')"
    ))
    .await;
    let sql = match db.backend {
        Backend::MySql => "SELECT CAST(id AS SIGNED) FROM app_users",
        _ => "SELECT CAST(id AS BIGINT) FROM app_users",
    };
    let id = db.query_strings(sql).await;
    id[0][0].as_ref().unwrap().parse().unwrap()
}

async fn get(client: &Client, path: &str, token: &str) -> (Status, Value) {
    let res = client.get(path).header(auth(token)).dispatch().await;
    let status = res.status();
    (status, body_json(res).await)
}

/// Whether the crate created a users table of its own.
async fn crate_users_table_exists(db: &TestDb) -> bool {
    let sql = match db.backend {
        Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE name = 'advanced_token_users'",
        Backend::Postgres => {
            "SELECT COUNT(*) FROM pg_tables WHERE tablename = 'advanced_token_users'"
        }
        Backend::MySql => {
            "SELECT COUNT(*) FROM information_schema.tables \
                           WHERE table_schema = DATABASE() AND table_name = 'advanced_token_users'"
        }
    };
    db.query_strings(sql).await[0][0].as_deref() != Some("0")
}

pub async fn login_and_me_from_the_apps_table(db: TestDb) {
    let client = app_client(&db, json!({})).await;
    let id = ada(&db, &client, None).await;
    let token = login(&client, "ada@example.com", PW).await;
    assert_eq!(
        get(&client, "/me", &token).await,
        (
            Status::Ok,
            json!({"id": id, "email": "ada@example.com", "display_name": "Ada"})
        )
    );
    assert_eq!(
        get(&client, "/auth/token/", &token).await,
        (Status::Ok, json!({"username": "ada@example.com"}))
    );
    assert!(
        !crate_users_table_exists(&db).await,
        "the crate made a users table"
    );
    // The token references the app's id.
    let rows = db
        .query_strings("SELECT user_id FROM advanced_token_tokens")
        .await;
    assert_eq!(rows[0][0].as_deref(), Some(id.to_string().as_str()));
    // Wrong password, unknown email: the usual 401.
    assert_eq!(
        login_raw(&client, "ada@example.com", "nope").await.0,
        Status::Unauthorized
    );
    assert_eq!(
        login_raw(&client, "bob@example.com", PW).await.0,
        Status::Unauthorized
    );
    // Rotation locks are the crate's to keep, in its own table.
    at(&client).lock_rotation("ada@example.com").await.unwrap();
    let res = client
        .put("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::MethodNotAllowed);
    // Logout deletes the user's tokens.
    let res = client
        .post("/auth/logout/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(check(&client, &token).await, Status::Unauthorized);
}

pub async fn deactivation_in_the_apps_table(db: TestDb) {
    // Without the cache: at once.
    let uncached = app_client(&db, json!({"token_cache": false})).await;
    let id = ada(&db, &uncached, None).await;
    let token = login(&uncached, "ada@example.com", PW).await;
    db.exec("UPDATE app_users SET active = FALSE").await;
    assert_eq!(
        get(&uncached, "/me", &token).await,
        (
            Status::Unauthorized,
            json!({"detail": "User inactive or deleted."})
        )
    );
    assert_eq!(
        login_raw(&uncached, "ada@example.com", PW).await.0,
        Status::Unauthorized
    );
    db.exec("UPDATE app_users SET active = TRUE").await;

    // With the cache: served until the app says the user changed, then at
    // once here, and on another instance within its poll.
    let a = app_client(&db, json!({})).await;
    let b = app_client(&db, json!({"token_cache_poll": 0.2})).await;
    for c in [&a, &b] {
        assert_eq!(get(c, "/me", &token).await.0, Status::Ok);
    }
    db.exec("UPDATE app_users SET active = FALSE").await;
    assert_eq!(
        get(&a, "/me", &token).await.0,
        Status::Ok,
        "served from the cache"
    );
    at(&a).user_changed(id).await.unwrap();
    assert_eq!(get(&a, "/me", &token).await.0, Status::Unauthorized);
    wait_until(
        "the other instance sees user_changed",
        Duration::from_secs(10),
        || async { get(&b, "/me", &token).await.0 == Status::Unauthorized },
    )
    .await;

    // A user deleted from the app's table: the token means nothing.
    db.exec("DELETE FROM app_users").await;
    at(&a).user_changed(id).await.unwrap();
    assert_eq!(
        get(&a, "/me", &token).await,
        (Status::Unauthorized, json!({"detail": "Invalid token."}))
    );
}

pub async fn old_hashes_upgrade_on_login(db: TestDb) {
    // django/django, tests/auth_tests/test_hashers.py, test_pbkdf2: the
    // password "lètmein" with salt "seasalt".
    let django = "pbkdf2_sha256$390000$seasalt$8xBlGd3jVgvJ+92hWPxi5ww0uuAuAnKgC45eudxro7c=";
    let client = app_client(&db, json!({})).await;
    ada(&db, &client, Some(django)).await;
    login(&client, "ada@example.com", "lètmein").await;
    let stored = db
        .query_strings("SELECT password_hash FROM app_users")
        .await;
    let stored = stored[0][0].clone().unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    login(&client, "ada@example.com", "lètmein").await;
    // An unusable Django password never logs in.
    db.exec("UPDATE app_users SET password_hash = '!unusable'")
        .await;
    assert_eq!(
        login_raw(&client, "ada@example.com", "!unusable").await.0,
        Status::Unauthorized
    );
}

/// An app's own backend, with UUIDs for ids and a profile type of its own.
#[derive(Clone, Debug, PartialEq)]
struct Profile {
    plan: String,
}

struct MemUsers(HashMap<String, (String, String, Profile)>);

#[rocket::async_trait]
impl UserBackend for MemUsers {
    async fn by_login(&self, login: &str) -> Result<Option<LoginUser>, Error> {
        Ok(self.0.get(login).map(|(id, hash, _)| LoginUser {
            id: UserId::Text(id.clone()),
            password_hash: hash.clone(),
            is_active: true,
        }))
    }

    async fn by_id(&self, id: &UserId) -> Result<Option<AppUser>, Error> {
        let found = self
            .0
            .iter()
            .find(|(_, (uid, _, _))| *uid == id.to_string());
        Ok(found.map(|(login, (_, _, profile))| AppUser {
            username: login.clone(),
            is_active: true,
            data: Arc::new(profile.clone()),
        }))
    }
}

#[get("/plan")]
fn plan(user: AuthUser) -> String {
    user.user::<Profile>()
        .map(|p| p.plan.clone())
        .unwrap_or_default()
}

pub async fn an_apps_backend_with_uuid_ids(db: TestDb) {
    let uuid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    // bcrypt's reference vector ($2a$, "U*U", cost 5: OpenWall crypt_blowfish).
    let hash = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
    let users = MemUsers(HashMap::from([(
        "grace".to_owned(),
        (
            uuid.to_owned(),
            hash.to_owned(),
            Profile { plan: "pro".into() },
        ),
    )]));
    let figment = db.figment(json!({}));
    let rocket = rocket::custom(figment)
        .attach(AdvancedToken::fairing().users(users))
        .mount("/auth", rocket_advanced_token::routes())
        .mount("/", routes![plan]);
    let client = Client::tracked(rocket).await.unwrap();
    let token = login(&client, "grace", "U*U").await;
    let res = client.get("/plan").header(auth(&token)).dispatch().await;
    assert_eq!(res.into_string().await.as_deref(), Some("pro"));
    let rows = db
        .query_strings("SELECT user_id FROM advanced_token_tokens")
        .await;
    assert_eq!(rows[0][0].as_deref(), Some(uuid));
    assert!(!crate_users_table_exists(&db).await);
    let listed = at(&client).list_tokens("grace").await.unwrap();
    assert_eq!(listed.len(), 1);
    let res = client
        .put("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(check(&client, &token).await, Status::Unauthorized);
}

/// A database set up for one mode refuses the other, with a message.
pub async fn a_database_keeps_its_mode(db: TestDb) {
    drop(client(&db, json!({})).await);
    let figment = db.figment(json!({"users": {"table": "app_users"}}));
    match Client::tracked(app(figment, None)).await {
        Ok(_) => panic!("launched on a database of the crate's own users"),
        Err(e) => assert!(
            matches!(e.kind(), rocket::error::ErrorKind::FailedFairings(_)),
            "{e:?}"
        ),
    }
}

mod shared_pool {
    use rocket::local::asynchronous::Client;
    use rocket_advanced_token::rocket_db_pools::{self, sqlx, Database};
    use rocket_advanced_token::{AdvancedToken, Error};
    use serde_json::json;

    use crate::common::*;

    #[derive(Database)]
    #[database("app")]
    struct App(sqlx::SqlitePool);

    /// `TokenFairing::database::<App>()`: one URL, one pool. The crate runs
    /// its migrations and queries through the app's own pool: closing that
    /// pool closes the crate's too.
    #[test]
    fn the_apps_pool_is_shared() {
        run(async {
            let db = TestDb::new(Backend::Sqlite).await;
            let figment = base_figment()
                .merge(("log_level", "critical"))
                .merge(("databases.app", json!({"url": db.url})));
            let rocket = rocket::custom(figment)
                .attach(App::init())
                .attach(AdvancedToken::fairing().database::<App>())
                .mount("/auth", rocket_advanced_token::routes());
            let client = Client::tracked(rocket)
                .await
                .expect("launch on the app's pool");
            let at = at(&client);
            assert!(at.database().starts_with("sqlite:"), "{}", at.database());
            at.create_user("alice", "correct horse battery")
                .await
                .unwrap();
            assert_eq!(db.count("advanced_token_users").await, 1);
            App::fetch(client.rocket()).unwrap().close().await;
            assert!(matches!(at.list_users().await, Err(Error::Unavailable(_))));
        });
    }

    /// Without the app's database attached first, launch aborts.
    #[test]
    fn the_apps_database_must_be_attached_first() {
        run(async {
            let db = TestDb::new(Backend::Sqlite).await;
            let figment = base_figment()
                .merge(("log_level", "off"))
                .merge(("databases.app", json!({"url": db.url})));
            let rocket = rocket::custom(figment).attach(AdvancedToken::fairing().database::<App>());
            match Client::tracked(rocket).await {
                Ok(_) => panic!("launched without the app's database"),
                Err(e) => assert!(
                    matches!(e.kind(), rocket::error::ErrorKind::FailedFairings(_)),
                    "{e:?}"
                ),
            }
        });
    }
}

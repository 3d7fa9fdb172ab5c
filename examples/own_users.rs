//! An app that keeps its users in its own table and lets the crate issue
//! and check tokens for them: one database (`app`), one pool, no table of
//! users in the crate.
//!
//! ```sh
//! ROCKET_DATABASES='{app={url="sqlite://app.sqlite?mode=rwc"}}' cargo run --example own_users
//! curl -s localhost:8000/signup -H 'Content-Type: application/json' \
//!      -d '{"email": "ada@example.com", "password": "correct horse", "display_name": "Ada"}'
//! curl -s localhost:8000/auth/login/ -H 'Content-Type: application/json' \
//!      -d '{"username": "ada@example.com", "password": "correct horse"}'
//! curl -s localhost:8000/me -H "Authorization: Token $TOKEN"
//! # {"display_name":"Ada","email":"ada@example.com","id":1}
//! ```
//!
//! Any URL works: `postgres://...` or `mysql://...` as well.

use rocket::fairing::AdHoc;
use rocket::figment::providers::Serialized;
use rocket::http::Status;
use rocket::serde::json::Json;
use rocket::{get, post, routes, Build, Rocket};
use rocket_advanced_token::sqlx::migrate::Migrator;
use rocket_advanced_token::{AdvancedToken, AuthUser, DbPool, Error};
use serde::Deserialize;
use serde_json::{json, Value};

/// `GET /me`: the user the token belongs to, straight from the guard (the
/// columns named in `advanced_token.users.fields` come with it).
#[get("/me")]
fn me(user: AuthUser) -> Json<Value> {
    let fields = user.fields().cloned().unwrap_or_default();
    Json(json!({
        "id": user.id,
        "email": fields.get("email"),
        "display_name": fields.get("display_name"),
    }))
}

#[derive(Deserialize)]
struct Signup {
    email: String,
    password: String,
    display_name: String,
}

/// `POST /signup`: the app writes its own table; the crate hashes.
#[post("/signup", data = "<form>")]
async fn signup(at: &AdvancedToken, form: Json<Signup>) -> Result<Status, Error> {
    let hash = at.hash_password(&form.password).await?;
    let insert = "INSERT INTO app_users (email, password_hash, active, display_name) VALUES ";
    let done = match at.pool() {
        DbPool::Sqlite(p) => {
            sqlx_insert(p, &format!("{insert}(?1, ?2, TRUE, ?3)"), &form, &hash).await
        }
        DbPool::Postgres(p) => {
            sqlx_insert(p, &format!("{insert}($1, $2, TRUE, $3)"), &form, &hash).await
        }
        DbPool::MySql(p) => sqlx_insert(p, &format!("{insert}(?, ?, TRUE, ?)"), &form, &hash).await,
        _ => unreachable!("every backend is compiled in"),
    };
    match done {
        Ok(()) => Ok(Status::Created),
        Err(rocket_advanced_token::sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Ok(Status::Conflict)
        }
        Err(e) => Err(e.into()),
    }
}

async fn sqlx_insert<DB: rocket_advanced_token::sqlx::Database>(
    pool: &rocket_advanced_token::sqlx::Pool<DB>,
    sql: &str,
    form: &Signup,
    hash: &str,
) -> Result<(), rocket_advanced_token::sqlx::Error>
where
    for<'c> &'c mut DB::Connection: rocket_advanced_token::sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as rocket_advanced_token::sqlx::database::HasArguments<'q>>::Arguments:
        rocket_advanced_token::sqlx::IntoArguments<'q, DB>,
    for<'q> String:
        rocket_advanced_token::sqlx::Encode<'q, DB> + rocket_advanced_token::sqlx::Type<DB>,
{
    rocket_advanced_token::sqlx::query(sql)
        .bind(form.email.clone())
        .bind(hash.to_owned())
        .bind(form.display_name.clone())
        .execute(pool)
        .await?;
    Ok(())
}

/// The app's own migration, on the pool the crate opened for `app`.
async fn migrate(rocket: Rocket<Build>) -> Result<Rocket<Build>, Rocket<Build>> {
    let Some(at) = rocket.state::<AdvancedToken>() else {
        return Err(rocket);
    };
    let pool = at.pool().clone();
    let backend = match &pool {
        DbPool::Sqlite(_) => "sqlite",
        DbPool::Postgres(_) => "postgres",
        DbPool::MySql(_) => "mysql",
        _ => return Err(rocket),
    };
    let dir = format!(
        "{}/examples/own_users_migrations/{backend}",
        env!("CARGO_MANIFEST_DIR")
    );
    let run = async {
        let migrator = Migrator::new(std::path::Path::new(&dir)).await?;
        match &pool {
            DbPool::Sqlite(p) => migrator.run(p).await,
            DbPool::Postgres(p) => migrator.run(p).await,
            DbPool::MySql(p) => migrator.run(p).await,
            _ => unreachable!(),
        }
    };
    match run.await {
        Ok(()) => Ok(rocket),
        Err(e) => {
            eprintln!("own_users: cannot migrate: {e}");
            Err(rocket)
        }
    }
}

/// The app: its users table is named in configuration (defaults below, which
/// `Rocket.toml` or `ROCKET_ADVANCED_TOKEN` may override).
fn app(rocket: Rocket<Build>) -> Rocket<Build> {
    let users = json!({
        "table": "app_users",
        "login": "email",
        "password_hash": "password_hash",
        "active": "active",
        "fields": ["email", "display_name"],
    });
    let figment = rocket
        .figment()
        .clone()
        .join(Serialized::default("advanced_token.database", "app"))
        .join(Serialized::default("advanced_token.users", users));
    rocket
        .configure(figment)
        .attach(AdvancedToken::fairing())
        .attach(AdHoc::try_on_ignite("app migrations", migrate))
        .mount("/auth", rocket_advanced_token::routes())
        .mount("/", routes![me, signup])
}

#[rocket::launch]
fn rocket() -> _ {
    app(rocket::build())
}

//! The calls a real app needs: password checks, lockouts, lookups, hashes
//! made elsewhere, the password policy, audit events and error shaping, on
//! every backend (instantiated in main.rs).

use std::sync::{Arc, Mutex};

use rocket::http::{ContentType, Status};
use rocket::local::asynchronous::Client;
use rocket::{get, patch, routes};
use rocket_advanced_token::{AdvancedToken, AuditEvent, AuditKind, AuthUser, Error, TokenFairing};
use serde_json::{json, Value};

use crate::common::*;

const PW: &str = "correct horse battery staple";

#[get("/plain")]
fn plain(user: AuthUser) -> String {
    user.username
}

#[get("/own")]
fn own(user: Result<AuthUser, Error>) -> (Status, String) {
    match user {
        Ok(u) => (Status::Ok, u.username),
        Err(_) => (Status::Unauthorized, "mine".into()),
    }
}

#[get("/optional")]
fn optional(user: Option<AuthUser>) -> (Status, &'static str) {
    match user {
        Some(_) => (Status::Ok, "yes"),
        None => (Status::Unauthorized, "mine too"),
    }
}

#[get("/login")]
fn login_page() -> &'static str {
    "the app's login form"
}

/// An app route at one of the crate's paths that takes JSON only: other
/// PATCH requests fall through to the crate's 405.
#[patch("/token", format = "json", data = "<body>")]
fn patch_token_json(body: &str) -> String {
    format!("the app's patch: {body}")
}

async fn custom(db: &TestDb, settings: Value, fairing: TokenFairing) -> Client {
    let rocket = rocket::custom(db.figment(settings))
        .attach(fairing)
        .mount("/auth", rocket_advanced_token::routes())
        .mount("/api", routes![plain, own, optional]);
    Client::tracked(rocket).await.expect("app launches")
}

pub async fn verify_password_checks_without_a_token(db: TestDb) {
    let client = client(&db, json!({})).await;
    let at = at(&client);
    at.create_user("alice", PW).await.unwrap();
    assert!(at.verify_password("alice", PW).await.unwrap());
    assert!(!at.verify_password("alice", "wrong password").await.unwrap());
    assert!(!at.verify_password("nobody", PW).await.unwrap());
    assert_eq!(
        db.count("advanced_token_tokens").await,
        0,
        "no token issued"
    );
    // Inactive users do not verify.
    at.deactivate_user("alice").await.unwrap();
    assert!(!at.verify_password("alice", PW).await.unwrap());
    at.activate_user("alice").await.unwrap();
    // Failures count against the login throttle: past it, Throttled, never
    // LoginFailed; and a login is throttled too.
    for _ in 0..5 {
        assert!(!at.verify_password("alice", "wrong password").await.unwrap());
    }
    assert!(matches!(
        at.verify_password("alice", PW).await,
        Err(Error::Throttled(_))
    ));
    assert_eq!(
        login_raw(&client, "alice", PW).await.0,
        Status::TooManyRequests
    );
}

pub async fn lockouts_can_be_cleared(db: TestDb) {
    let client = client(&db, json!({})).await;
    let at = at(&client);
    at.create_user("alice", PW).await.unwrap();
    let lock = || async {
        for _ in 0..5 {
            login_raw(&client, "alice", "wrong password").await;
        }
        assert_eq!(
            login_raw(&client, "alice", PW).await.0,
            Status::TooManyRequests
        );
    };
    lock().await;
    at.reset_throttle("alice").await.unwrap();
    login(&client, "alice", PW).await;
    lock().await;
    at.set_password("alice", "a new password").await.unwrap();
    login(&client, "alice", "a new password").await;
    for _ in 0..5 {
        login_raw(&client, "alice", "wrong password").await;
    }
    at.deactivate_user("alice").await.unwrap();
    at.activate_user("alice").await.unwrap();
    login(&client, "alice", "a new password").await;
}

pub async fn users_can_be_looked_up(db: TestDb) {
    let client = client(&db, json!({})).await;
    let at = at(&client);
    let id = at.create_user("alice", PW).await.unwrap();
    login(&client, "alice", PW).await;
    let by_name = at.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(by_name.id, id);
    assert_eq!(by_name.username, "alice");
    assert!(by_name.is_active);
    assert_eq!(by_name.info.as_ref().unwrap().live_tokens, 1);
    let by_id = at.user_by_id(id).await.unwrap().unwrap();
    assert_eq!(by_id.username, "alice");
    assert!(at.user_by_id(id + 1000).await.unwrap().is_none());
    assert!(at.user_by_id("text-id").await.unwrap().is_none());
    assert!(at.user_by_username("nobody").await.unwrap().is_none());
}

pub async fn users_from_hashes_made_elsewhere(db: TestDb) {
    let client = client(&db, json!({})).await;
    let at = at(&client);
    // bcrypt's reference vector for "U*U*".
    let bcrypt = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.VGOzA784oUp/Z0DY336zx7pLYAy0lwK";
    at.create_user_with_hash("alice", bcrypt).await.unwrap();
    login(&client, "alice", "U*U*").await;
    assert!(matches!(
        at.create_user_with_hash("bob", "plaintext").await,
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        at.create_user_with_hash("alice", bcrypt).await,
        Err(Error::UsernameTaken(_))
    ));
    at.create_user("carol", PW).await.unwrap();
    let t = login(&client, "carol", PW).await;
    let revoked = at.set_password_hash("carol", bcrypt).await.unwrap();
    assert_eq!(revoked, 1);
    assert_eq!(check(&client, &t).await, Status::Unauthorized);
    login(&client, "carol", "U*U*").await;
    assert!(at.set_password_hash("carol", "nope").await.is_err());
}

pub async fn password_policy(db: TestDb) {
    let client = client(&db, json!({})).await;
    let at = at(&client);
    let weak = at.create_user("alice", "short").await.unwrap_err();
    assert!(matches!(weak, Error::WeakPassword(_)));
    assert_eq!(weak.status(), Status::BadRequest);
    assert!(weak.to_string().contains("at least 8 characters"), "{weak}");
    assert!(at.hash_password("short").await.is_err());
    at.create_user("alice", "eight ch").await.unwrap();
    assert!(at.set_password("alice", "1234567").await.is_err());
    drop(client);

    // A longer minimum, and the app's own rule.
    let fairing = AdvancedToken::fairing().password_policy(|pw| {
        match pw.chars().any(|c| c.is_ascii_digit()) {
            true => Ok(()),
            false => Err("it needs a digit.".into()),
        }
    });
    let client = custom(&db, json!({"min_password_length": 12}), fairing).await;
    let at = crate::common::at(&client);
    let e = at.create_user("bob", "eleven char").await.unwrap_err();
    assert!(e.to_string().contains("at least 12"), "{e}");
    let e = at.create_user("bob", "twelve chars").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "This password is not allowed: it needs a digit."
    );
    at.create_user("bob", "twelve chars 1").await.unwrap();
    // Existing passwords keep working.
    login(&client, "alice", "eight ch").await;

    // The same rules outside Rocket (an app's admin command line).
    let fairing = AdvancedToken::fairing().password_policy(|_| Err("never.".into()));
    let admin = fairing.connect(&db.figment(json!({}))).await.unwrap();
    let e = admin
        .create_user("carol", "long enough 1")
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "This password is not allowed: never.");
    admin.close().await;
}

pub async fn audit_events_name_ids_never_secrets(db: TestDb) {
    let events: Arc<Mutex<Vec<AuditEvent>>> = Arc::default();
    let sink = events.clone();
    let fairing = AdvancedToken::fairing().on_audit(move |e| sink.lock().unwrap().push(e.clone()));
    let client = custom(&db, json!({}), fairing).await;
    let at = at(&client);
    let id = at.create_user("alice", PW).await.unwrap();
    let t1 = login(&client, "alice", PW).await;
    let ip: std::net::SocketAddr = "192.0.2.7:4000".parse().unwrap();
    client
        .post("/auth/login/")
        .remote(ip)
        .header(ContentType::JSON)
        .body(json!({"username": "alice", "password": "wrong password"}).to_string())
        .dispatch()
        .await;
    let res = client
        .put("/auth/token/")
        .remote(ip)
        .header(auth(&t1))
        .dispatch()
        .await;
    let t2 = body_json(res).await["token"].as_str().unwrap().to_owned();
    client
        .delete("/auth/token/")
        .header(auth(&t2))
        .dispatch()
        .await;
    at.reset_throttle("alice").await.unwrap();
    at.lock_rotation("alice").await.unwrap();
    let t3 = login(&client, "alice", PW).await;
    client
        .get("/auth/logout/")
        .header(auth(&t3))
        .dispatch()
        .await;

    let events = events.lock().unwrap().clone();
    let kinds: Vec<AuditKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditKind::UserCreated,
            AuditKind::LoginSucceeded,
            AuditKind::LoginFailed,
            AuditKind::Rotated,
            AuditKind::Revoked,
            AuditKind::ThrottleReset,
            AuditKind::RotationLocked,
            AuditKind::LoginSucceeded,
            AuditKind::LoggedOut,
        ]
    );
    assert_eq!(events[1].user_id, Some(id.into()));
    // The login names its token; the rotation keeps the token's id.
    assert!(events[1].token_id.is_some());
    assert_eq!(events[3].token_id, events[1].token_id);
    assert_eq!(events[2].ip, Some(ip.ip()), "{:?}", events[2]);
    assert!(events[3].token_id.is_some());
    assert_eq!(events[3].ip, Some(ip.ip()));
    let digests = db
        .query_strings("SELECT digest FROM advanced_token_tokens")
        .await;
    for e in &events {
        let text = format!("{e} {e:?}");
        for secret in [&t1, &t2, &t3, &PW.to_owned(), &"wrong password".to_owned()] {
            assert!(!text.contains(secret.as_str()), "{text}");
        }
        for d in digests.iter().flatten().flatten() {
            assert!(!text.contains(d.as_str()), "{text}");
        }
    }
}

pub async fn app_responses_are_never_rewritten(db: TestDb) {
    let client = custom(&db, json!({}), AdvancedToken::fairing()).await;
    // The plain guard's catcher answer gets the crate's body.
    let res = client.get("/api/plain").dispatch().await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(res.headers().get_one("WWW-Authenticate"), Some("Token"));
    assert!(res.headers().get_one("Set-Cookie").is_none());
    assert_eq!(
        body_json(res).await,
        json!({"detail": "Authentication credentials were not provided."})
    );
    // A client sending a cookie of the marker's name changes nothing.
    let res = client
        .get("/api/plain")
        .cookie(rocket::http::Cookie::new("__advanced_token_guard", "1"))
        .header(auth(&"0".repeat(64)))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(res.headers().get_one("WWW-Authenticate"), Some("Token"));
    assert!(res.headers().get_one("Set-Cookie").is_none());
    assert_eq!(body_json(res).await, json!({"detail": "Invalid token."}));
    // The app's own answers from Result<AuthUser, Error> and Option<AuthUser>
    // are left alone, and the guard's marker never reaches the client.
    for (uri, body) in [("/api/own", "mine"), ("/api/optional", "mine too")] {
        let res = client
            .get(uri)
            .header(auth(&"0".repeat(64)))
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::Unauthorized);
        assert!(res.headers().get_one("WWW-Authenticate").is_none());
        assert!(res.headers().get_one("Set-Cookie").is_none());
        assert_eq!(res.into_string().await.unwrap(), body);
    }
    // Nor from a success: `Option<AuthUser>` answering 200 for a bad token.
    let plain = crate::common::client(&db, json!({})).await;
    let res = plain
        .get("/api/maybe")
        .header(auth(&"0".repeat(64)))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert!(res.headers().get_one("Set-Cookie").is_none());
    assert_eq!(body_json(res).await, json!({"username": null}));
    // rewrite_guard_failures = false: Rocket's own catcher answer stays.
    let off = custom(
        &db,
        json!({"rewrite_guard_failures": false}),
        AdvancedToken::fairing(),
    )
    .await;
    let res = off
        .get("/api/plain")
        .header(rocket::http::Accept::JSON)
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert!(res.headers().get_one("WWW-Authenticate").is_none());
    let body = body_json(res).await;
    assert_eq!(body["error"]["code"], 401, "{body}");
}

pub async fn error_bodies_can_be_shaped(db: TestDb) {
    let fairing = AdvancedToken::fairing()
        .error_body(|e| json!({"error": {"status": e.status().code, "message": e.to_string()}}));
    let client = custom(&db, json!({}), fairing).await;
    let res = client.get("/auth/token/").dispatch().await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(res.headers().get_one("WWW-Authenticate"), Some("Token"));
    assert_eq!(
        body_json(res).await,
        json!({"error": {"status": 401, "message": "Authentication credentials were not provided."}})
    );
    let res = client.get("/api/plain").dispatch().await;
    assert_eq!(body_json(res).await["error"]["status"], 401);
    let res = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .body(json!({"username": "x", "password": "wrong password"}).to_string())
        .dispatch()
        .await;
    assert_eq!(
        body_json(res).await["error"]["message"],
        "Unable to log in with provided credentials."
    );
}

/// With the app's own users table: the session routes and the lookups go
/// through the app's users.
pub async fn sessions_and_lookups_with_the_apps_users(db: TestDb) {
    db.exec(
        "CREATE TABLE app_users (id BIGINT PRIMARY KEY, email VARCHAR(200) NOT NULL, \
         password_hash VARCHAR(300) NOT NULL, active BOOLEAN NOT NULL)",
    )
    .await;
    let settings = json!({
        "token_cache": false,
        "users": {"table": "app_users", "login": "email", "password_hash": "password_hash", "active": "active"},
    });
    let client = client(&db, settings).await;
    let at = at(&client);
    let hash = at.hash_password(PW).await.unwrap();
    for (id, email) in [(7, "a@example.com"), (8, "b@example.com")] {
        db.exec(&format!(
            "INSERT INTO app_users (id, email, password_hash, active) VALUES ({id}, '{email}', '{hash}', TRUE)"
        ))
        .await;
    }
    let a1 = login(&client, "a@example.com", PW).await;
    let a2 = login(&client, "a@example.com", PW).await;
    let b1 = login(&client, "b@example.com", PW).await;
    let res = client
        .get("/auth/tokens/")
        .header(auth(&a1))
        .dispatch()
        .await;
    let list = body_json(res).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    let bob_id = at.list_tokens("b@example.com").await.unwrap()[0].id;
    let res = client
        .delete(format!("/auth/tokens/{bob_id}/"))
        .header(auth(&a1))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::NotFound);
    let res = client
        .delete("/auth/token/")
        .header(auth(&a2))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(check(&client, &a2).await, Status::Unauthorized);
    assert_eq!(check(&client, &a1).await, Status::Ok);
    assert_eq!(check(&client, &b1).await, Status::Ok);

    let user = at.user_by_id(7).await.unwrap().unwrap();
    assert_eq!(user.username, "a@example.com");
    assert!(user.is_active && user.app.is_some() && user.info.is_none());
    let user = at.user_by_username("b@example.com").await.unwrap().unwrap();
    assert_eq!(user.id, 8);
    assert!(at.user_by_id(9).await.unwrap().is_none());
    assert!(at.verify_password("a@example.com", PW).await.unwrap());
    assert!(!at
        .verify_password("a@example.com", "wrong password")
        .await
        .unwrap());
    // The crate's own table calls are refused, with a clear message.
    assert!(matches!(
        at.create_user_with_hash("c@example.com", &hash).await,
        Err(Error::Config(_))
    ));
}

/// An app can serve its own route on one of the crate's paths where the
/// crate only answers 405 (an HTML login form at `GET login/`): the crate's
/// routes rank after the app's static ones. (They used to rank alike, and
/// Rocket refused to launch the two colliding routes.)
pub async fn the_apps_own_route_takes_a_405s_place(db: TestDb) {
    let rocket = rocket::custom(db.figment(json!({})))
        .attach(AdvancedToken::fairing())
        .mount("/auth", rocket_advanced_token::routes())
        .mount("/auth", routes![login_page, patch_token_json]);
    let client = Client::tracked(rocket).await.expect("app launches");
    at(&client).create_user("alice", PW).await.unwrap();
    for path in ["/auth/login", "/auth/login/"] {
        let res = client.get(path).dispatch().await;
        assert_eq!(res.status(), Status::Ok);
        assert_eq!(res.into_string().await.unwrap(), "the app's login form");
    }
    // The crate still logs in.
    let token = login(&client, "alice", PW).await;
    assert!(!token.is_empty());
    // `Allow` names the app's GET with the crate's POST, in the 405 and
    // in `OPTIONS`.
    let res = client.put("/auth/login/").dispatch().await;
    assert_eq!(res.status(), Status::MethodNotAllowed);
    let both = Some("POST, GET, HEAD, OPTIONS");
    assert_eq!(res.headers().get_one("Allow"), both);
    let res = client.options("/auth/login").dispatch().await;
    assert_eq!(res.status(), Status::NoContent);
    assert_eq!(res.headers().get_one("Allow"), both);
    // Other paths are untouched.
    let res = client.options("/auth/tokens/").dispatch().await;
    assert_eq!(res.headers().get_one("Allow"), Some("GET, HEAD, OPTIONS"));
    // An app route that takes only some requests of its method: the path
    // serves PATCH, but a 405 to a PATCH it did not take never names PATCH.
    let res = client
        .patch("/auth/token/")
        .header(ContentType::JSON)
        .body("{}")
        .dispatch()
        .await;
    assert_eq!(res.into_string().await.unwrap(), "the app's patch: {}");
    let res = client.options("/auth/token").dispatch().await;
    let with_patch = Some("GET, PUT, DELETE, PATCH, HEAD, OPTIONS");
    assert_eq!(res.headers().get_one("Allow"), with_patch);
    let res = client.patch("/auth/token/").body("x").dispatch().await;
    assert_eq!(res.status(), Status::MethodNotAllowed);
    let without = Some("GET, PUT, DELETE, HEAD, OPTIONS");
    assert_eq!(res.headers().get_one("Allow"), without);
}

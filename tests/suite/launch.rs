//! Launch: bad configuration and a missing fairing abort it.

use rocket::error::ErrorKind;
use rocket::local::asynchronous::Client;
use rocket::{get, routes};
use rocket_advanced_token::{AdvancedToken, AuthUser};
use serde_json::{json, Value};

use crate::common::{app, base_figment, Backend, TestDb};

async fn launch_error(figment: rocket::figment::Figment) -> rocket::Error {
    match Client::tracked(app(figment, None)).await {
        Ok(_) => panic!("launch should have failed"),
        Err(e) => e,
    }
}

fn assert_fairing_failed(e: &rocket::Error) {
    match e.kind() {
        ErrorKind::FailedFairings(failures) => assert_eq!(failures[0].name, "Advanced Token"),
        other => panic!("unexpected launch error: {other:?}"),
    }
}

#[test]
fn bad_config_aborts_launch() {
    crate::common::run(bad_config_aborts_launch_body())
}

async fn bad_config_aborts_launch_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    let bad: [Value; 6] = [
        json!({"bearer_prefix": ""}),
        json!({"bearer_prefix": "To ken"}),
        json!({"bearer_prefix": 5}),
        json!({"token_ttl": "soon"}),
        json!({"max_tokens_per_user": 0}),
        json!({"no_such_key": true}),
    ];
    for settings in bad {
        let e = launch_error(db.figment(settings.clone())).await;
        assert_fairing_failed(&e);
    }
    // And the good defaults launch.
    Client::tracked(app(db.figment(json!({})), None))
        .await
        .unwrap();
}

#[test]
fn bad_database_config_aborts_launch() {
    crate::common::run(bad_database_config_aborts_launch_body())
}

async fn bad_database_config_aborts_launch_body() {
    let base = base_figment().merge(("log_level", "off"));
    // No database at all.
    assert_fairing_failed(
        &launch_error(base.clone().merge(("databases.advanced_token", json!({})))).await,
    );
    // A scheme we do not speak.
    let redis = base.clone().merge((
        "databases.advanced_token",
        json!({"url": "redis://127.0.0.1/"}),
    ));
    assert_fairing_failed(&launch_error(redis).await);
    // Nobody listening.
    let down = base.merge((
        "databases.advanced_token",
        json!({"url": "postgres://user:hunter2@127.0.0.1:1/db", "connect_timeout": 2}),
    ));
    assert_fairing_failed(&launch_error(down).await);
}

#[test]
fn connect_errors_name_the_key_or_host_but_not_the_password() {
    crate::common::run(connect_errors_name_the_key_or_host_but_not_the_password_body())
}

async fn connect_errors_name_the_key_or_host_but_not_the_password_body() {
    let base = base_figment();
    let e = AdvancedToken::connect(&base.clone().merge(("databases.advanced_token", json!({}))))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("databases.advanced_token.url"),
        "{e}"
    );
    let f = base.clone().merge((
        "databases.advanced_token",
        json!({"url": "postgres://user:hunter2@127.0.0.1:1/db", "connect_timeout": 2}),
    ));
    let e = AdvancedToken::connect(&f).await.unwrap_err().to_string();
    assert!(e.contains("127.0.0.1:1"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let f = base
        .merge((
            "databases.advanced_token",
            json!({"url": "sqlite::memory:"}),
        ))
        .merge(("advanced_token", json!({"bearer_prefix": "a b"})));
    let e = AdvancedToken::connect(&f).await.unwrap_err().to_string();
    assert!(e.contains("advanced_token.bearer_prefix"), "{e}");
}

#[get("/guarded")]
fn guarded(user: AuthUser) -> String {
    user.username
}

#[test]
fn missing_fairing_is_caught_by_sentinels() {
    crate::common::run(missing_fairing_is_caught_by_sentinels_body())
}

/// Launches without the fairing and checks the abort: the crate's routes
/// alone, and the guard in an app's own handler.
async fn missing_fairing_is_caught_by_sentinels_body() {
    // Rocket's logger is global to the process: log only when run alone as
    // the child of `missing_fairing_message_says_what_to_do`.
    let child = std::env::var_os("ADVTOK_LOG_CHILD").is_some();
    let figment = base_figment()
        .merge(("log_level", if child { "normal" } else { "off" }))
        .merge(("cli_colors", false));
    let rocket = rocket::custom(figment.clone()).mount("/auth", rocket_advanced_token::routes());
    match Client::tracked(rocket).await {
        Err(e) => match e.kind() {
            ErrorKind::SentinelAborts(sentries) => assert!(
                sentries
                    .iter()
                    .any(|s| s.type_name.contains("rocket_advanced_token")),
                "{sentries:?}"
            ),
            other => panic!("unexpected launch error: {other:?}"),
        },
        Ok(_) => panic!("launch without the fairing should abort"),
    }
    let rocket = rocket::custom(figment).mount("/", routes![guarded]);
    match Client::tracked(rocket).await {
        Err(e) => match e.kind() {
            ErrorKind::SentinelAborts(sentries) => {
                let s = sentries
                    .iter()
                    .find(|s| s.type_name.ends_with("AuthUser"))
                    .unwrap_or_else(|| panic!("{sentries:?}"));
                assert!(s.location.0.ends_with("launch.rs"), "{:?}", s.location);
            }
            other => panic!("unexpected launch error: {other:?}"),
        },
        Ok(_) => panic!("launch without the fairing should abort"),
    }
}

/// The message the abort logs. Rocket's logger is global to a process, so
/// the test above runs again in a child process of this test binary, alone
/// and with its output to the pipe, and the message is read from there.
#[test]
fn missing_fairing_message_says_what_to_do() {
    use crate::common::{OutputWithin, PROCESS_DEADLINE};
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "launch::missing_fairing_is_caught_by_sentinels",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ADVTOK_LOG_CHILD", "1")
        .output_within(PROCESS_DEADLINE);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    assert!(
        text.contains(
            "its fairing is not attached: add `.attach(rocket_advanced_token::AdvancedToken::fairing())`"
        ),
        "{text}"
    );
}

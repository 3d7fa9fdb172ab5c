//! The `advanced-token` binary, run as a process against a test database.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use rocket::http::Status;
use serde_json::{json, Value};

use crate::common::{
    check, client, client_with_clock, login, login_raw, wait_with_deadline, Backend, FakeClock,
    OutputWithin, TestDb, PROCESS_DEADLINE,
};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// How long one command may take before the test fails.
const CLI_DEADLINE: Duration = Duration::from_secs(60);

fn cli(db: &TestDb, settings: &str, args: &[&str], stdin: Option<&str>) -> Run {
    cli_url(&db.url, settings, args, stdin)
}

fn cli_url(url: &str, settings: &str, args: &[&str], stdin: Option<&str>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_advanced-token"));
    cmd.args(args)
        .current_dir(dir.path())
        .env(
            "ROCKET_DATABASES",
            format!("{{advanced_token={{url=\"{url}\"}}}}"),
        )
        .env("ROCKET_ADVANCED_TOKEN", settings)
        .env("ROCKET_LOG_LEVEL", "critical")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run advanced-token");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = wait_with_deadline(child, CLI_DEADLINE);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a command on `db` and fails the test unless it succeeds. The
/// process runs on a blocking thread, so the test's runtime (the cache poll,
/// the PostgreSQL listener, request handlers) keeps running meanwhile.
pub async fn run_cli_ok(db: &TestDb, args: &[&str]) -> String {
    let url = db.url.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    rocket::tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(cli_url(&url, "{}", &args, None))
    })
    .await
    .unwrap()
}

fn ok(run: Run) -> String {
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    run.stdout
}

/// Fails with exit code 1 and exactly one line on stderr, no panic.
fn user_error(run: Run, needle: &str) {
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(needle),
        "{:?} not in {:?}",
        needle,
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"));
}

#[test]
fn users_and_passwords() {
    crate::common::run(users_and_passwords_body())
}

async fn users_and_passwords_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    let out = ok(cli(
        &db,
        "{}",
        &["create-user", "alice", "--password", "pw one two"],
        None,
    ));
    assert!(out.contains("alice"));
    user_error(
        cli(
            &db,
            "{}",
            &["create-user", "alice", "--password", "another one"],
            None,
        ),
        "already exists",
    );
    // The password policy: 8 characters at least, by default.
    user_error(
        cli(
            &db,
            "{}",
            &["create-user", "carol", "--password", "short"],
            None,
        ),
        "at least 8 characters",
    );
    ok(cli(
        &db,
        "{}",
        &["create-user", "bob", "--password-stdin"],
        Some("from stdin\n"),
    ));
    user_error(
        cli(&db, "{}", &["create-user", "carol"], None),
        "--password-stdin",
    );
    user_error(
        cli(
            &db,
            "{}",
            &["create-user", "bad name", "--password", "x"],
            None,
        ),
        "whitespace",
    );

    let client = client(&db, json!({"token_cache": false})).await;
    let alice = login(&client, "alice", "pw one two").await;
    let bob = login(&client, "bob", "from stdin").await;

    // set-password revokes the user's tokens.
    let out = ok(cli(
        &db,
        "{}",
        &["set-password", "bob", "--password-stdin"],
        Some("new pw two\r\n"),
    ));
    assert!(out.contains("revoked 1 token(s)"), "{out}");
    assert_eq!(check(&client, &bob).await, Status::Unauthorized);
    assert_eq!(
        login_raw(&client, "bob", "from stdin").await.0,
        Status::Unauthorized
    );
    login(&client, "bob", "new pw two").await;

    // deactivate / activate.
    ok(cli(&db, "{}", &["deactivate", "alice"], None));
    assert_eq!(check(&client, &alice).await, Status::Unauthorized);
    ok(cli(&db, "{}", &["activate", "alice"], None));
    assert_eq!(check(&client, &alice).await, Status::Ok);

    // delete-user.
    ok(cli(&db, "{}", &["delete-user", "bob"], None));
    assert_eq!(
        login_raw(&client, "bob", "new pw two").await.0,
        Status::Unauthorized
    );

    // Unknown users.
    for cmd in [
        "set-password",
        "deactivate",
        "activate",
        "delete-user",
        "lock-token",
        "unlock-token",
        "revoke-tokens",
        "list-tokens",
    ] {
        let args: Vec<&str> = if cmd == "set-password" {
            vec![cmd, "nobody", "--password", "long enough"]
        } else {
            vec![cmd, "nobody"]
        };
        user_error(cli(&db, "{}", &args, None), "No user named \"nobody\"");
    }
}

#[test]
fn tokens_and_listings() {
    crate::common::run(tokens_and_listings_body())
}

async fn tokens_and_listings_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    ok(cli(
        &db,
        "{}",
        &["create-user", "alice", "--password", "pw-long-enough"],
        None,
    ));
    ok(cli(
        &db,
        "{}",
        &["create-user", "bob", "--password", "pw-long-enough"],
        None,
    ));
    // The cache off, so that the effect of each command is visible at once
    // (the cache's bound is tested in the behaviour suite).
    let client = client(&db, json!({"token_cache": false})).await;
    let a1 = login(&client, "alice", "pw-long-enough").await;
    let a2 = login(&client, "alice", "pw-long-enough").await;
    let b1 = login(&client, "bob", "pw-long-enough").await;

    // lock-token / unlock-token.
    ok(cli(&db, "{}", &["lock-token", "alice"], None));
    let res = client
        .put("/auth/token/")
        .header(crate::common::auth(&a1))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::MethodNotAllowed);

    let table = ok(cli(&db, "{}", &["list-users"], None));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["USERNAME", "ACTIVE", "LOCKED", "TOKENS"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["alice", "yes", "yes", "2"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["bob", "yes", "no", "1"]
    );
    ok(cli(&db, "{}", &["unlock-token", "alice"], None));
    let users: Value =
        serde_json::from_str(&ok(cli(&db, "{}", &["list-users", "--json"], None))).unwrap();
    assert_eq!(users[0]["username"], "alice");
    assert_eq!(users[0]["rotation_locked"], false);
    assert_eq!(users[0]["live_tokens"], 2);

    let listing = ok(cli(&db, "{}", &["list-tokens", "alice"], None));
    assert_eq!(listing.lines().count(), 3, "{listing}");
    assert!(listing.starts_with("ID"));
    let json_listing = ok(cli(&db, "{}", &["list-tokens", "alice", "--json"], None));
    let tokens: Value = serde_json::from_str(&json_listing).unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 2);
    let digests = db
        .query_strings("SELECT digest FROM advanced_token_tokens")
        .await;
    for text in [&table, &listing, &json_listing] {
        for t in [&a1, &a2, &b1] {
            assert!(!text.contains(t.as_str()));
        }
        for d in digests.iter().flatten().flatten() {
            assert!(!text.contains(d.as_str()));
        }
    }

    // revoke-tokens: one user.
    let out = ok(cli(&db, "{}", &["revoke-tokens", "alice"], None));
    assert!(out.contains("Revoked 2 token(s)"), "{out}");
    assert_eq!(check(&client, &a2).await, Status::Unauthorized);
    assert_eq!(check(&client, &b1).await, Status::Ok);

    // revoke-all-tokens needs --force, and changes nothing without it.
    let run = cli(&db, "{}", &["revoke-all-tokens"], None);
    user_error(run, "--force");
    assert_eq!(check(&client, &b1).await, Status::Ok);
    let out = ok(cli(&db, "{}", &["revoke-all-tokens", "--force"], None));
    assert!(out.contains("Revoked 1 token(s)"), "{out}");
    assert_eq!(check(&client, &b1).await, Status::Unauthorized);
}

#[test]
fn purge_expired_prints_the_count() {
    crate::common::run(purge_expired_prints_the_count_body())
}

async fn purge_expired_prints_the_count_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    ok(cli(
        &db,
        "{}",
        &["create-user", "alice", "--password", "pw-long-enough"],
        None,
    ));
    // Two tokens issued an hour ago (a clock set back by hand) with a
    // 100 s TTL: expired by the real clock the command line uses. And one
    // issued now, which must survive.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let clock = FakeClock::new();
    clock.advance(now - 3600 - clock.now());
    let past = client_with_clock(&db, json!({"token_ttl": 100}), &clock).await;
    login(&past, "alice", "pw-long-enough").await;
    login(&past, "alice", "pw-long-enough").await;
    let client = client(&db, json!({"token_ttl": 100})).await;
    let live = login(&client, "alice", "pw-long-enough").await;
    let out = ok(cli(&db, "{token_ttl=100}", &["purge-expired"], None));
    assert!(out.contains("Purged 2"), "{out}");
    let out = ok(cli(&db, "{token_ttl=100}", &["purge-expired"], None));
    assert!(out.contains("Purged 0"), "{out}");
    assert_eq!(check(&client, &live).await, Status::Ok);
}

#[test]
fn bad_arguments_and_config() {
    crate::common::run(bad_arguments_and_config_body())
}

async fn bad_arguments_and_config_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    let run = cli(&db, "{}", &["no-such-command"], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("Usage"), "{}", run.stderr);
    let run = cli(&db, "{}", &["create-user"], None);
    assert_eq!(run.code, 2);
    let help = ok(cli(&db, "{}", &["--help"], None));
    for cmd in [
        "serve",
        "create-user",
        "revoke-all-tokens",
        "purge-expired",
        "list-tokens",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
    // A bad setting names its key, for admin commands and for the server.
    user_error(
        cli(&db, "{bearer_prefix=\"\"}", &["list-users"], None),
        "advanced_token.bearer_prefix",
    );
    let run = cli(&db, "{bearer_prefix=\"a b\"}", &["serve"], None);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("advanced_token.bearer_prefix"),
        "{}",
        run.stderr
    );
    // An unreachable database names the host, not the password.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_advanced-token"));
    let out = cmd
        .arg("list-users")
        .current_dir(tempfile::tempdir().unwrap().path())
        .env(
            "ROCKET_DATABASES",
            "{advanced_token={url=\"postgres://u:hunter2@127.0.0.1:1/x\",connect_timeout=1}}",
        )
        .output_within(PROCESS_DEADLINE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("127.0.0.1:1") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}

/// `revoke-all-tokens` without `--force` is refused before the database is
/// opened: nothing is created, and an unreachable database does not hide
/// the reason.
#[test]
fn revoke_all_without_force_touches_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never.sqlite");
    for url in [
        format!("sqlite://{}?mode=rwc", file.display()),
        "postgres://nobody@127.0.0.1:1/none".to_owned(),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_advanced-token"))
            .arg("revoke-all-tokens")
            .current_dir(dir.path())
            .env(
                "ROCKET_DATABASES",
                format!("{{advanced_token={{url=\"{url}\"}}}}"),
            )
            .env("ROCKET_LOG_LEVEL", "critical")
            .output_within(PROCESS_DEADLINE);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--force"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    assert!(!file.exists(), "the SQLite file was created");
}

#[test]
fn rotation_locks_throttle_resets_and_single_revocations() {
    crate::common::run(rotation_locks_throttle_resets_and_single_revocations_body())
}

async fn rotation_locks_throttle_resets_and_single_revocations_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    ok(cli(
        &db,
        "{}",
        &["create-user", "alice", "--password", "pw-long-enough"],
        None,
    ));
    let client = client(&db, json!({"token_cache": false})).await;
    let a1 = login(&client, "alice", "pw-long-enough").await;
    let a2 = login(&client, "alice", "pw-long-enough").await;

    // The new names and the old ones (aliases).
    for (lock, unlock) in [
        ("lock-rotation", "unlock-rotation"),
        ("lock-token", "unlock-token"),
    ] {
        let out = ok(cli(&db, "{}", &[lock, "alice"], None));
        assert_eq!(out.trim(), "Locked token rotation for \"alice\".");
        let users = ok(cli(&db, "{}", &["list-users", "--json"], None));
        assert!(users.contains("\"rotation_locked\": true"), "{users}");
        let out = ok(cli(&db, "{}", &[unlock, "alice"], None));
        assert_eq!(out.trim(), "Unlocked token rotation for \"alice\".");
    }

    // reset-throttle lifts a lockout.
    for _ in 0..5 {
        login_raw(&client, "alice", "wrong password").await;
    }
    assert_eq!(
        login_raw(&client, "alice", "pw-long-enough").await.0,
        Status::TooManyRequests
    );
    let out = ok(cli(&db, "{}", &["reset-throttle", "alice"], None));
    assert_eq!(out.trim(), "Cleared the login lockout of \"alice\".");
    let a3 = login(&client, "alice", "pw-long-enough").await;

    // list-tokens shows times in ISO 8601, UTC.
    let listing = ok(cli(&db, "{}", &["list-tokens", "alice"], None));
    let row: Vec<&str> = listing.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row.len(), 4, "{listing}");
    for time in &row[1..3] {
        assert_eq!(time.len(), 20, "{listing}");
        assert!(
            time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{listing}"
        );
    }
    assert_eq!(row[3], "never");

    // revoke-token: one token by id.
    let id = row[0];
    let out = ok(cli(&db, "{}", &["revoke-token", id], None));
    assert_eq!(out.trim(), format!("Revoked token {id}."));
    let alive = [
        check(&client, &a1).await,
        check(&client, &a2).await,
        check(&client, &a3).await,
    ];
    assert_eq!(
        alive.iter().filter(|s| **s == Status::Unauthorized).count(),
        1,
        "{alive:?}"
    );
    user_error(cli(&db, "{}", &["revoke-token", id], None), "Not found.");
}

/// A relative SQLite path in Rocket.toml is relative to that file, wherever
/// the command runs; a new database file is reported with its absolute
/// path.
#[test]
fn sqlite_paths_in_rocket_toml_are_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Rocket.toml"),
        "[default.databases.advanced_token]\nurl = \"sqlite://app.sqlite?mode=rwc\"\n",
    )
    .unwrap();
    let sub = dir.path().join("src");
    std::fs::create_dir(&sub).unwrap();
    let run = |cwd: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_advanced-token"))
            .arg("list-users")
            .current_dir(cwd)
            .env_remove("ROCKET_DATABASES")
            .env_remove("ROCKET_CONFIG")
            .env("ROCKET_LOG_LEVEL", "critical")
            .output()
            .unwrap()
    };
    let first = run(&sub);
    assert_eq!(first.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&first.stderr);
    let file = dir.path().join("app.sqlite");
    assert!(file.exists(), "not next to Rocket.toml");
    assert!(!sub.join("app.sqlite").exists());
    assert!(
        stderr.contains("created a new SQLite database at")
            && stderr.contains(&file.display().to_string()),
        "{stderr}"
    );
    // The second run, from elsewhere, opens the same file: nothing new.
    let second = run(dir.path());
    assert_eq!(second.status.code(), Some(0));
    assert!(
        second.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}

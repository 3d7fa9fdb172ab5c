//! A login flood against the real server process: argon2 is bounded by
//! `hash_concurrency`, so memory stays bounded, every correct login still
//! succeeds, and guarded requests keep being served meanwhile.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rocket::tokio::io::{AsyncReadExt, AsyncWriteExt};
use rocket::tokio::net::TcpStream;
use serde_json::{json, Value};

use crate::common::{Backend, OutputWithin, TestDb, PROCESS_DEADLINE};

/// argon2id's memory per operation with the crate's parameters.
const ARGON2_MIB: u64 = 19;

pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn start(db: &TestDb, settings: &str) -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_advanced-token"))
        .arg("serve")
        .current_dir(dir.path())
        .env("ROCKET_PORT", port.to_string())
        .env("ROCKET_ADDRESS", "127.0.0.1")
        .env("ROCKET_LOG_LEVEL", "off")
        .env(
            "ROCKET_DATABASES",
            format!("{{advanced_token={{url=\"{}\"}}}}", db.url),
        )
        .env("ROCKET_ADVANCED_TOKEN", settings)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let server = Server { child, port };
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        rocket::tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

/// How long one HTTP exchange with a test server may take.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(60);

/// A minimal HTTP/1.1 request; returns the status and the body. Fails the
/// test after [`HTTP_DEADLINE`] rather than hanging.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    rocket::tokio::time::timeout(HTTP_DEADLINE, http_exchange(port, method, path, auth, body))
        .await
        .unwrap_or_else(|_| {
            panic!("{method} {path} on port {port}: no answer within {HTTP_DEADLINE:?}")
        })
}

async fn http_exchange(
    port: u16,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = auth {
        req.push_str(&format!("Authorization: Token {token}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The threads of a process: (name, nice, CPU ticks used), from
/// /proc/<pid>/task/*/stat.
fn threads(pid: u32) -> Vec<(String, i64, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(task.unwrap().path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let open = stat.find('(').unwrap();
        let close = stat.rfind(')').unwrap();
        let name = stat[open + 1..close].to_owned();
        // Fields from the third on: state, ppid, ... utime (14), stime
        // (15), ... nice (19).
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let field = |n: usize| fields[n - 3].parse::<i64>().unwrap();
        out.push((name, field(19), (field(14) + field(15)) as u64));
    }
    out
}

/// The argon2 threads are named `advanced-token-argon2-N`, which the kernel
/// shortens to 15 bytes.
fn is_argon2(name: &str) -> bool {
    name == "advanced-token-"
}

/// A field of /proc/<pid>/status, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

#[test]
fn login_flood_is_bounded_and_does_not_starve_guarded_requests() {
    crate::common::run(login_flood_is_bounded_and_does_not_starve_guarded_requests_body())
}

async fn login_flood_is_bounded_and_does_not_starve_guarded_requests_body() {
    let db = TestDb::new(Backend::Sqlite).await;
    let permits = 2u64;
    let settings =
        format!("{{hash_concurrency={permits},login_throttle=false,max_tokens_per_user=1000}}");
    let server = start(&db, &settings).await;
    let port = server.port;
    let pid = server.child.id();

    // A user, a token, and a warm server.
    let out = Command::new(env!("CARGO_BIN_EXE_advanced-token"))
        .args(["create-user", "alice", "--password", "pw-long-enough"])
        .env(
            "ROCKET_DATABASES",
            format!("{{advanced_token={{url=\"{}\"}}}}", db.url),
        )
        .current_dir(tempfile::tempdir().unwrap().path())
        .output_within(PROCESS_DEADLINE);
    assert!(out.status.success());
    let creds = json!({"username": "alice", "password": "pw-long-enough"});
    let wrong = json!({"username": "alice", "password": "nope"});
    let (status, body) = http(port, "POST", "/auth/login/", None, Some(&creds)).await;
    assert_eq!(status, 200, "{body}");
    let token = serde_json::from_str::<Value>(&body).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..5 {
        http(port, "GET", "/api/hello/", Some(&token), None).await;
        http(port, "POST", "/auth/login/", None, Some(&wrong)).await;
    }
    let baseline = proc_kib(pid, "VmRSS:");

    // argon2 runs on `permits` threads of its own at nice 19, the request
    // workers at the normal priority: what keeps a flood from starving
    // guarded requests. (On spawn_blocking threads argon2 would run at
    // nice 0, the regression BENCHMARKS.md measured.)
    let before = threads(pid);
    let argon2: Vec<_> = before.iter().filter(|t| is_argon2(&t.0)).collect();
    assert_eq!(argon2.len() as u64, permits, "argon2 threads: {before:?}");
    assert!(
        argon2.iter().all(|t| t.1 == 19),
        "not at nice 19: {argon2:?}"
    );
    let normal: Vec<_> = before.iter().filter(|t| !is_argon2(&t.0)).collect();
    assert!(normal.iter().all(|t| t.1 == 0), "not at nice 0: {normal:?}");

    // The flood: 300 concurrent logins, one in six with a wrong password.
    let flood_started = Instant::now();
    let mut logins = Vec::new();
    for i in 0..300 {
        let body = if i % 6 == 0 {
            wrong.clone()
        } else {
            creds.clone()
        };
        logins.push(rocket::tokio::spawn(async move {
            (
                i % 6 != 0,
                http(port, "POST", "/auth/login/", None, Some(&body)).await,
            )
        }));
    }
    // Meanwhile, guarded requests.
    let guarded = {
        let token = token.clone();
        rocket::tokio::spawn(async move {
            let mut done = Vec::new();
            for _ in 0..40 {
                let t = Instant::now();
                let (status, _) = http(port, "GET", "/api/hello/", Some(&token), None).await;
                done.push((status, t.elapsed(), Instant::now()));
                rocket::tokio::time::sleep(Duration::from_millis(25)).await;
            }
            done
        })
    };
    let mut ok = 0;
    for l in logins {
        let (correct, (status, body)) = l.await.unwrap();
        if correct {
            assert_eq!(status, 200, "a correct login failed under load: {body}");
            ok += 1;
        } else {
            assert_eq!(status, 401);
        }
    }
    let flood_ended = Instant::now();
    let flood = flood_ended - flood_started;
    assert_eq!(ok, 250);

    // And the flood's hashing ran on those nice-19 threads: they used most
    // of the CPU time the server spent during the flood.
    let after = threads(pid);
    let cpu = |ts: &[(String, i64, u64)], argon2: bool| -> u64 {
        ts.iter()
            .filter(|t| is_argon2(&t.0) == argon2)
            .map(|t| t.2)
            .sum()
    };
    let hashing = cpu(&after, true) - cpu(&before, true);
    let rest = cpu(&after, false).saturating_sub(cpu(&before, false));
    eprintln!("CPU ticks during the flood: argon2 threads {hashing}, other threads {rest}");
    assert!(
        hashing > rest,
        "argon2 threads used {hashing} ticks, the other threads {rest}: \
         the hashing did not run on the low-priority threads"
    );

    let guarded = guarded.await.unwrap();
    let during: Vec<_> = guarded
        .iter()
        .filter(|(_, _, at)| *at < flood_ended)
        .collect();
    assert!(guarded.iter().all(|(s, _, _)| *s == 200));
    let slowest = guarded.iter().map(|(_, took, _)| *took).max().unwrap();
    eprintln!(
        "flood of 300 logins took {flood:?}; {} guarded requests finished during it, slowest {slowest:?}",
        during.len()
    );
    assert!(
        during.len() >= 10,
        "guarded requests were starved: only {} finished during a {flood:?} flood",
        during.len()
    );
    assert!(
        slowest < flood / 2,
        "a guarded request waited {slowest:?} during a {flood:?} flood"
    );

    // Memory: at most `permits` argon2 buffers at a time, plus a margin for
    // 300 connections and their buffers.
    let peak = proc_kib(pid, "VmHWM:");
    let grew_mib = peak.saturating_sub(baseline) / 1024;
    let bound_mib = permits * ARGON2_MIB + 48;
    eprintln!(
        "server RSS: baseline {} MiB, peak {} MiB, grew {grew_mib} MiB (bound {bound_mib} MiB)",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        grew_mib <= bound_mib,
        "peak RSS grew {grew_mib} MiB, more than {bound_mib} MiB"
    );
}

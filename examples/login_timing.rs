//! Login timing: median latency of a failed login for an unknown username,
//! a wrong password and an inactive user, measured side by side in one run.
//! They should be within 10% of each other (no user enumeration by timing).
//!
//! ```sh
//! cargo run --release --example login_timing [rounds]
//! ```

use std::time::{Duration, Instant};

use rocket::figment::Figment;
use rocket::http::{ContentType, Status};
use rocket::local::asynchronous::Client;
use rocket_advanced_token::AdvancedToken;
use serde_json::json;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[rocket::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/timing.sqlite?mode=rwc", dir.path().display());
    let figment = Figment::from(rocket::Config::release_default())
        .merge(("log_level", "off"))
        .merge(("databases.advanced_token", json!({ "url": url })))
        .merge(("advanced_token", json!({ "login_throttle": false })));
    let rocket = rocket::custom(figment)
        .attach(AdvancedToken::fairing())
        .mount("/auth", rocket_advanced_token::routes());
    let client = Client::tracked(rocket).await.expect("launch");
    let at = client.rocket().state::<AdvancedToken>().unwrap();
    at.create_user("alice", "correct horse").await.unwrap();
    at.create_user("idle", "correct horse").await.unwrap();
    at.deactivate_user("idle").await.unwrap();

    let cases = [
        ("unknown username", "nobody", "correct horse"),
        ("wrong password", "alice", "wrong horse"),
        ("inactive user", "idle", "correct horse"),
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    // Warm up, then interleave the cases so drift affects all alike.
    for round in 0..rounds + 10 {
        for (i, (_, user, pw)) in cases.iter().enumerate() {
            let body = json!({ "username": user, "password": pw }).to_string();
            let started = Instant::now();
            let res = client
                .post("/auth/login/")
                .header(ContentType::JSON)
                .body(body)
                .dispatch()
                .await;
            let took = started.elapsed();
            assert_eq!(res.status(), Status::Unauthorized);
            if round >= 10 {
                samples[i].push(took);
            }
        }
    }
    let medians: Vec<Duration> = samples.into_iter().map(median).collect();
    let fastest = *medians.iter().min().unwrap();
    println!("| case | median login latency | ratio to fastest |");
    println!("|---|---|---|");
    for ((name, _, _), m) in cases.iter().zip(&medians) {
        println!(
            "| {name} | {:.2} ms | {:.3} |",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / fastest.as_secs_f64()
        );
    }
    let spread = medians.iter().max().unwrap().as_secs_f64() / fastest.as_secs_f64();
    println!("\n{rounds} rounds; slowest/fastest = {spread:.3} (target ≤ 1.10)");
}

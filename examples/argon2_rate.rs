//! The argon2 limit: argon2id verifications per second with the crate's
//! parameters (the argon2 crate's defaults), on every core at once.
//!
//! ```sh
//! cargo run --release --example argon2_rate [seconds]
//! ```

use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5.0);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let phc = Argon2::default()
        .hash_password(b"correct horse", &salt)
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let phc = phc.clone();
            std::thread::spawn(move || {
                let parsed = PasswordHash::new(&phc).unwrap();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    Argon2::default()
                        .verify_password(b"correct horse", &parsed)
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let rate = total as f64 / started.elapsed().as_secs_f64();
    println!("{rate:.1} verifications/s on {cores} cores");
}

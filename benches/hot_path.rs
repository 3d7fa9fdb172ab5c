//! The guard's hot path that needs no database: parse the `Authorization`
//! header, check the token's shape, and digest it for the lookup.
//!
//! ```sh
//! cargo bench --bench hot_path
//! ```

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rocket_advanced_token::{__bench, parse_authorization};

fn hot_path(c: &mut Criterion) {
    let header = format!("Token {}", "3f".repeat(32));
    c.bench_function("parse_header+digest", |b| {
        b.iter(|| {
            let token = parse_authorization(Some(black_box(&header)), "Token").unwrap();
            assert!(__bench::well_formed(token));
            __bench::token_digest(token)
        })
    });
    c.bench_function("parse_header", |b| {
        b.iter(|| {
            parse_authorization(Some(black_box(&header)), "Token")
                .unwrap()
                .len()
        })
    });
}

criterion_group!(benches, hot_path);
criterion_main!(benches);

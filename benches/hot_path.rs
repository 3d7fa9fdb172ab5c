//! The guard's hot path that needs no database: parse the `Authorization`
//! header, check the token's shape, digest it, and find it in the cache.
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

/// A cache hit (digest and lookup) with one token in use, and with 100,000
/// and 1,000,000 cached tokens requested at random: what a hit costs once
/// every entry is a cold read.
fn cache_at_size(c: &mut Criterion) {
    for n in [1u64, 100_000, 1_000_000] {
        let cache = __bench::CacheAtSize::new(n);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        c.bench_function(&format!("cache hit, {n} tokens at random"), |b| {
            b.iter(|| {
                // xorshift: a cheap, uniform enough index.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                assert!(cache.hit(black_box(x % n)));
            })
        });
    }
}

criterion_group!(benches, hot_path, cache_at_size);
criterion_main!(benches);

//! Tells the integration tests which database servers they may use.
//!
//! Each optional test server is named by an environment variable. The tests
//! that need it are compiled with `#[cfg_attr(not(advtok_test_*), ignore =
//! "...")]`, so without the variable they show up as *ignored*, with the
//! reason, instead of passing without doing anything. With the variable set
//! they run, and an unreachable server fails them.

fn main() {
    const GATES: [(&str, &str); 5] = [
        ("ADVANCED_TOKEN_TEST_POSTGRES", "advtok_test_postgres"),
        ("ADVANCED_TOKEN_TEST_MYSQL", "advtok_test_mysql"),
        ("ADVANCED_TOKEN_TEST_GALERA", "advtok_test_galera"),
        ("ADVANCED_TOKEN_TEST_PGBOUNCER", "advtok_test_pgbouncer"),
        (
            "ADVANCED_TOKEN_TEST_PGBOUNCER_TX",
            "advtok_test_pgbouncer_tx",
        ),
    ];
    for (var, cfg) in GATES {
        println!("cargo:rerun-if-env-changed={var}");
        println!("cargo:rustc-check-cfg=cfg({cfg})");
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

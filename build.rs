//! Tells the integration tests which database servers they may use.
//!
//! The PostgreSQL and MySQL/MariaDB tests are compiled with
//! `#[cfg_attr(not(advtok_test_postgres), ignore = "...")]` (and likewise for
//! MySQL), so without a server URL they show up as *ignored*, with the reason,
//! instead of passing without doing anything. With the variable set they run,
//! and an unreachable server fails them.

fn main() {
    for (var, cfg) in [
        ("ADVANCED_TOKEN_TEST_POSTGRES", "advtok_test_postgres"),
        ("ADVANCED_TOKEN_TEST_MYSQL", "advtok_test_mysql"),
    ] {
        println!("cargo:rerun-if-env-changed={var}");
        println!("cargo:rustc-check-cfg=cfg({cfg})");
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

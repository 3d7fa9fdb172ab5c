//! Test gates. Each optional test server is named by an environment
//! variable; when it is set (non-empty) at build time, the matching
//! `cfg(advtok_test_*)` is on, and the tests that need that server run.
//! Unset, they are compiled with `#[ignore = "set VAR to run"]` and so are
//! reported as ignored, not as passed.

fn main() {
    const GATES: &[(&str, &str)] = &[
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
        if std::env::var(var).is_ok_and(|v| !v.trim().is_empty()) {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
}

//! The integration tests: one binary (one link of Rocket + sqlx).
//!
//! The behavioural suite (`behaviour.rs`) is instantiated once per backend.
//! SQLite always runs; PostgreSQL and MySQL/MariaDB run when
//! `ADVANCED_TOKEN_TEST_POSTGRES` / `ADVANCED_TOKEN_TEST_MYSQL` hold a server
//! URL (each test creates and drops a database of its own there). Without
//! them, those tests are reported as *ignored*, with the variable to set
//! (`build.rs` reads the variables and sets `advtok_test_postgres` /
//! `advtok_test_mysql`); `cargo test` prints how many.

/// Wraps a test item: for PostgreSQL/MySQL, ignored (with the reason) unless
/// the backend's variable was set when the tests were built.
macro_rules! gate {
    (Sqlite, $($item:tt)*) => { $($item)* };
    (Postgres, $($item:tt)*) => {
        #[cfg_attr(
            not(advtok_test_postgres),
            ignore = "needs PostgreSQL: set ADVANCED_TOKEN_TEST_POSTGRES (see README, Tests)"
        )]
        $($item)*
    };
    (MySql, $($item:tt)*) => {
        #[cfg_attr(
            not(advtok_test_mysql),
            ignore = "needs MySQL/MariaDB: set ADVANCED_TOKEN_TEST_MYSQL (see README, Tests)"
        )]
        $($item)*
    };
}

/// A test for one backend, on the suite's multi-threaded runtime:
/// `backend_test!(Postgres, fn name() { ... })`.
macro_rules! backend_test {
    ($backend:ident, fn $name:ident() $body:block) => {
        gate!($backend,
            #[test]
            fn $name() {
                crate::common::run(async move $body)
            }
        );
    };
}

/// Instantiates each named test of a module (`behaviour` when unnamed) for
/// one backend.
macro_rules! suite {
    ($backend:ident: $($name:ident),* $(,)?) => {
        suite!(behaviour / $backend: $($name),*);
    };
    ($module:ident / $backend:ident: $($name:ident),* $(,)?) => {
        $(
            backend_test!($backend, fn $name() {
                let db = crate::common::TestDb::new(crate::common::Backend::$backend).await;
                crate::$module::$name(db).await
            });
        )*
    };
}

mod app_api;
mod behaviour;
mod cli;
mod common;
mod django;
mod flood;
mod instances;
mod launch;
mod leak;
mod migrations;
mod openapi;
mod own_users;
mod reliability;
mod scale_out;
mod security;
mod sessions;

/// The list of behaviour tests, written once.
macro_rules! all_behaviour_tests {
    ($backend:ident) => {
        suite!($backend:
            login_accepts_json_form_and_multipart,
            login_ignores_the_authorization_header,
            login_failures_are_indistinguishable,
            login_validates_its_body,
            login_body_size_is_capped,
            token_check,
            rotation_kills_only_the_old_token,
            logout_deletes_every_token_of_the_user,
            authentication_failures_follow_drf,
            custom_prefix,
            guard_options_and_per_request_cache,
            unserved_methods_get_405,
            hostile_input_never_gets_a_5xx,
            tokens_are_stored_only_as_digests,
            rotation_and_logout_switches,
            rotation_lock_is_per_user,
            tokens_expire,
            sliding_expiry_and_its_cap,
            last_used_is_written_at_most_once_a_minute,
            per_user_limit_evicts_the_least_recently_used,
            user_administration,
            purge_expired_counts,
            revoke_all,
            concurrent_logins_all_succeed,
            concurrent_logins_respect_the_per_user_limit,
            concurrent_failures_are_throttled,
            nul_in_a_username_is_an_unknown_user,
            concurrent_rotations_have_one_winner,
            logout_racing_logins,
            two_instances_share_one_database,
            throttling_per_username,
            success_clears_the_username_counter,
            throttling_per_ip,
            throttling_can_be_turned_off,
            throttling_holds_across_instances,
            cached_tokens_honour_revocations,
            cache_respects_expiry_and_skips_the_database,
            ip_header_false_stops_spoofing,
            the_guard_reads_headers_as_rocket_does,
            own_401_with_www_authenticate_is_left_alone,
            token_cache_capacity_bounds_the_cache,
        );
        suite!(sessions / $backend:
            sessions_list_and_delete_own_tokens,
            delete_token_logs_out_only_this_device,
            revoke_token_by_id,
        );
        suite!(app_api / $backend:
            verify_password_checks_without_a_token,
            lockouts_can_be_cleared,
            users_can_be_looked_up,
            users_from_hashes_made_elsewhere,
            password_policy,
            audit_events_name_ids_never_secrets,
            app_responses_are_never_rewritten,
            error_bodies_can_be_shaped,
            sessions_and_lookups_with_the_apps_users,
            the_apps_own_route_takes_a_405s_place,
        );
    };
}

/// The tests of an app with its own users table, written once.
macro_rules! all_own_users_tests {
    ($backend:ident) => {
        own_users_suite!($backend:
            login_and_me_from_the_apps_table,
            deactivation_in_the_apps_table,
            old_hashes_upgrade_on_login,
            an_apps_backend_with_uuid_ids,
            a_database_keeps_its_mode,
        );
    };
}

macro_rules! own_users_suite {
    ($backend:ident: $($name:ident),* $(,)?) => {
        pub mod own_users {
            $(
                backend_test!($backend, fn $name() {
                    let db = crate::common::TestDb::new(crate::common::Backend::$backend).await;
                    crate::own_users::$name(db).await
                });
            )*
        }
    };
}

mod sqlite {
    all_behaviour_tests!(Sqlite);
    all_own_users_tests!(Sqlite);
}

mod postgres {
    all_behaviour_tests!(Postgres);
    all_own_users_tests!(Postgres);
    // LISTEN/NOTIFY exists on PostgreSQL only.
    suite!(Postgres: postgres_notifies_revocations);
    suite!(Postgres: postgres_announced_entries_are_read_out_of_order);
    suite!(Postgres: postgres_a_burst_is_read_from_its_lowest_number);
    suite!(Postgres: postgres_an_old_announcement_applies_nothing_again);
}

mod mysql {
    all_behaviour_tests!(MySql);
    all_own_users_tests!(MySql);
}

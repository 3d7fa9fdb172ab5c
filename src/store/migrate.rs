//! The migration runner, shared by every backend: lock, read what is
//! applied, apply the rest, unlock. Each backend says how it locks and
//! holds its own SQL for each step ([`Migrator`]).

use std::time::Duration;

use super::is_conflict;

/// One migration: a version, a name, and its SQL for each backend.
#[allow(dead_code)] // only the compiled-in backends' SQL is read
pub(crate) struct Migration {
    pub version: i64,
    /// Which users table it belongs with: the crate's own, the app's, or
    /// both.
    pub users: Users,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
    pub mysql: &'static str,
}

/// Whose users table a database holds: the crate's (`advanced_token_users`,
/// the default) or the app's. Chosen once per database: the tokens table
/// differs (an integer foreign key, or the app's id as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Users {
    Builtin,
    App,
    Both,
}

impl Users {
    fn applies_to(self, app_users: bool) -> bool {
        match self {
            Users::Both => true,
            Users::Builtin => !app_users,
            Users::App => app_users,
        }
    }
}

/// The crate's migrations, in order. They are tracked in the crate's own
/// table, `advanced_token_migrations`, never in sqlx's `_sqlx_migrations`,
/// so the host app's own sqlx migrations on the same database are left alone
/// (and leave us alone), whichever runs first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        users: Users::Builtin,
        description: "create tables",
        sqlite: include_str!("../../migrations/sqlite/0001_create_tables.sql"),
        postgres: include_str!("../../migrations/postgres/0001_create_tables.sql"),
        mysql: include_str!("../../migrations/mysql/0001_create_tables.sql"),
    },
    Migration {
        version: 2,
        users: Users::Both,
        description: "login failures",
        sqlite: include_str!("../../migrations/sqlite/0002_login_failures.sql"),
        postgres: include_str!("../../migrations/postgres/0002_login_failures.sql"),
        mysql: include_str!("../../migrations/mysql/0002_login_failures.sql"),
    },
    Migration {
        version: 3,
        users: Users::Both,
        description: "revocation counter",
        sqlite: include_str!("../../migrations/sqlite/0003_revocations.sql"),
        postgres: include_str!("../../migrations/postgres/0003_revocations.sql"),
        mysql: include_str!("../../migrations/mysql/0003_revocations.sql"),
    },
    Migration {
        version: 4,
        users: Users::Both,
        description: "revocation notify",
        sqlite: include_str!("../../migrations/sqlite/0004_revocation_notify.sql"),
        postgres: include_str!("../../migrations/postgres/0004_revocation_notify.sql"),
        mysql: include_str!("../../migrations/mysql/0004_revocation_notify.sql"),
    },
    Migration {
        version: 5,
        users: Users::Builtin,
        description: "username no pad",
        sqlite: include_str!("../../migrations/sqlite/0005_username_no_pad.sql"),
        postgres: include_str!("../../migrations/postgres/0005_username_no_pad.sql"),
        mysql: include_str!("../../migrations/mysql/0005_username_no_pad.sql"),
    },
    Migration {
        version: 6,
        users: Users::Both,
        description: "revocation log",
        sqlite: include_str!("../../migrations/sqlite/0006_revocation_log.sql"),
        postgres: include_str!("../../migrations/postgres/0006_revocation_log.sql"),
        mysql: include_str!("../../migrations/mysql/0006_revocation_log.sql"),
    },
    Migration {
        version: 7,
        users: Users::Builtin,
        description: "imported keys",
        sqlite: include_str!("../../migrations/sqlite/0007_imported_keys.sql"),
        postgres: include_str!("../../migrations/postgres/0007_imported_keys.sql"),
        mysql: include_str!("../../migrations/mysql/0007_imported_keys.sql"),
    },
    Migration {
        version: 101,
        users: Users::App,
        description: "tokens of the app's users",
        sqlite: include_str!("../../migrations/sqlite/0101_app_users_tokens.sql"),
        postgres: include_str!("../../migrations/postgres/0101_app_users_tokens.sql"),
        mysql: include_str!("../../migrations/mysql/0101_app_users_tokens.sql"),
    },
];

/// How long a process waits for another one's migrations before giving up.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(60);

/// One backend's side of a migration run, on one connection.
#[rocket::async_trait]
pub(crate) trait Migrator: Send {
    /// Takes the backend's migration lock, waiting at most [`LOCK_WAIT`];
    /// an error if it was not granted. (SQLite needs none: its writers take
    /// turns.)
    async fn lock(&mut self) -> Result<(), sqlx::Error>;
    /// Releases the lock taken by [`Migrator::lock`].
    async fn unlock(&mut self) -> Result<(), sqlx::Error>;
    /// The versions already applied; creates the tracking table (quietly)
    /// if it does not exist.
    async fn applied(&mut self) -> Result<Vec<i64>, sqlx::Error>;
    /// Applies one migration and records it (in one transaction where the
    /// backend has transactional DDL; MySQL commits DDL implicitly, so
    /// there every statement is idempotent instead).
    async fn apply(&mut self, m: &Migration, now: i64) -> Result<(), sqlx::Error>;
}

/// Applies the pending migrations under the backend's lock. A run that
/// collides with another process's (a deadlock, or a Galera certification
/// failure: Galera's locks are per node) is run again from the start: every
/// step is idempotent, and what the other process applied is then skipped.
pub(crate) async fn run(
    m: &mut dyn Migrator,
    app_users: bool,
    now: i64,
) -> Result<(), sqlx::Error> {
    m.lock().await?;
    let mut tries = 0u64;
    let result = loop {
        match pending(m, app_users, now).await {
            Err(e) if is_conflict(&e) && tries < 8 => {
                tries += 1;
                let pause = 20 * tries + rand::random::<u64>() % 50;
                rocket::tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            other => break other,
        }
    };
    let unlocked = m.unlock().await;
    result.and(unlocked)
}

async fn pending(m: &mut dyn Migrator, app_users: bool, now: i64) -> Result<(), sqlx::Error> {
    let applied = m.applied().await?;
    let other_mode = |m: &Migration| !m.users.applies_to(app_users) && applied.contains(&m.version);
    if MIGRATIONS.iter().any(other_mode) {
        return Err(sqlx::Error::Configuration(
            if app_users {
                "this database holds the crate's own users table (advanced_token_users); \
                 the app's users table needs a database of its own"
            } else {
                "this database was set up for the app's own users table (advanced_token.users); \
                 the crate's users table needs a database of its own"
            }
            .into(),
        ));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.users.applies_to(app_users)) {
        if !applied.contains(&migration.version) {
            m.apply(migration, now).await?;
        }
    }
    Ok(())
}

/// The error for a migration lock not granted within [`LOCK_WAIT`].
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
pub(crate) fn lock_timeout() -> sqlx::Error {
    sqlx::Error::Protocol(format!(
        "another process held the advanced_token migration lock for more than {} s",
        LOCK_WAIT.as_secs()
    ))
}

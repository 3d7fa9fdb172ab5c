//! `import-django`: users, password hashes, DRF tokens and rotation locks
//! from a Django database into the crate's own tables ([`AdvancedToken::import_django`]).
//!
//! Two passes over `auth_user`, both streamed: the first checks every hash
//! format and counts, and writes nothing (an unknown format stops the import
//! before any write); the second writes batches of users, each user with
//! its token and lock, one transaction per batch.

use std::fmt;
use std::sync::Arc;

use rocket::futures::TryStreamExt;

use crate::error::Error;
use crate::hashes::{identify, Scheme};
use crate::service::AdvancedToken;
use crate::store::{ImportMode, ImportUser, Outcome, UserOutcome};
use crate::token;

mod read;

use read::{read_error, DjangoRow, Source};

/// Users written per transaction, by default.
const DEFAULT_BATCH: usize = 500;
/// The most skipped rows an [`ImportReport`] lists (its counts are exact).
const MAX_LISTED: usize = 1000;

/// A progress callback: users done, users in all.
pub type ImportProgress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// How [`AdvancedToken::import_django`] runs.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ImportOptions {
    /// Go through every batch and roll it back: the report says what would
    /// happen; nothing is written.
    pub dry_run: bool,
    /// Replace the password hash of a username that exists with another
    /// hash (and revoke that user's tokens), instead of skipping the user.
    pub overwrite: bool,
    /// Users per transaction (0: the default, 500).
    pub batch_size: usize,
    /// Called after each batch with (users done, users in all).
    pub progress: Option<ImportProgress>,
}

impl fmt::Debug for ImportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportOptions")
            .field("dry_run", &self.dry_run)
            .field("overwrite", &self.overwrite)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl ImportOptions {
    /// Sets [`ImportOptions::dry_run`].
    pub fn dry_run(mut self, on: bool) -> Self {
        self.dry_run = on;
        self
    }

    /// Sets [`ImportOptions::overwrite`].
    pub fn overwrite(mut self, on: bool) -> Self {
        self.overwrite = on;
        self
    }

    /// Sets [`ImportOptions::batch_size`].
    pub fn batch_size(mut self, users: usize) -> Self {
        self.batch_size = users;
        self
    }

    /// Sets [`ImportOptions::progress`].
    pub fn progress(mut self, f: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }
}

/// Counts of one kind of row (users, tokens or locks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Tally {
    /// New in the crate's database.
    pub imported: u64,
    /// Already there, and changed (a user's hash or flags; a lock lifted).
    pub updated: u64,
    /// Already there as in Django.
    pub unchanged: u64,
    /// Not written; the reasons are in [`ImportReport::skipped`].
    pub skipped: u64,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Imported => self.imported += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Unchanged => self.unchanged += 1,
            _ => self.skipped += 1,
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} imported, {} updated, {} unchanged, {} skipped",
            self.imported, self.updated, self.unchanged, self.skipped
        )
    }
}

/// A row that was not written, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Skipped {
    /// The Django username.
    pub username: String,
    /// `user` or `token`.
    pub what: &'static str,
    /// Why.
    pub reason: &'static str,
}

/// What [`AdvancedToken::import_django`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ImportReport {
    /// Nothing was written.
    pub dry_run: bool,
    /// Users (`auth_user`).
    pub users: Tally,
    /// Tokens (`authtoken_token`).
    pub tokens: Tally,
    /// Rotation locks (`drf_advanced_token_userapikeylock`).
    pub locks: Tally,
    /// The rows skipped, with reasons (the first 1000).
    pub skipped: Vec<Skipped>,
}

const HASH_DIFFERS: &str = "the crate's database holds another password hash for this username \
                            (changed on either side since; --overwrite takes Django's)";
const IMPORTED_BEFORE: &str = "imported before, and rotated or logged out since: not brought back";
const KEY_TAKEN: &str = "the same key belongs to a token of another user";
const BAD_KEY: &str = "not a DRF key (40 lowercase hex) nor a UUID: it could never authenticate";
const UNKNOWN_HASH: &str = "password hash of an unknown format (appeared after the check)";

impl ImportReport {
    fn skip(&mut self, username: &str, what: &'static str, reason: &'static str) {
        if self.skipped.len() < MAX_LISTED {
            self.skipped.push(Skipped {
                username: username.to_owned(),
                what,
                reason,
            });
        }
    }

    fn record(&mut self, username: &str, out: &UserOutcome) {
        self.users.add(out.user);
        if let Some(lock) = out.lock {
            self.locks.add(lock);
        }
        if out.user == Outcome::SkippedHashDiffers {
            self.skip(username, "user", HASH_DIFFERS);
            if let Some(t) = out.token {
                self.tokens.add(t);
            }
            return;
        }
        match out.token {
            Some(Outcome::SkippedImportedBefore) => self.skip(username, "token", IMPORTED_BEFORE),
            Some(Outcome::SkippedTaken) => self.skip(username, "token", KEY_TAKEN),
            _ => {}
        }
        if let Some(t) = out.token {
            self.tokens.add(t);
        }
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(f, "Dry run: nothing was written. The import would give:")?;
        } else {
            writeln!(f, "Imported from Django:")?;
        }
        writeln!(f, "  users:  {}", self.users)?;
        writeln!(f, "  tokens: {}", self.tokens)?;
        write!(f, "  locks:  {}", self.locks)?;
        for s in &self.skipped {
            write!(f, "\n  skipped {} {:?}: {}", s.what, s.username, s.reason)?;
        }
        Ok(())
    }
}

/// A Django row as the store writes it; `None` for its key when the key
/// has a shape no client could send.
fn to_user(row: DjangoRow, now: i64) -> (ImportUser, bool) {
    let (username, password_hash, active, joined, key, created, locked) = row;
    let mut bad_key = false;
    let token = key.and_then(|key| {
        bad_key = !token::well_formed(&key);
        (!bad_key).then(|| (token::digest(&key).to_string(), created.unwrap_or(now)))
    });
    let user = ImportUser {
        username,
        password_hash,
        is_active: active != 0,
        created_at: joined.unwrap_or(now),
        token,
        rotation_locked: locked != 0,
    };
    (user, bad_key)
}

impl AdvancedToken {
    /// Imports a Django database's users (`auth_user`: username, password
    /// hash, `is_active`, `date_joined`), their DRF tokens
    /// (`authtoken_token`, stored as digests) and the drf_advanced_token
    /// package's rotation locks, from a `sqlite:`, `postgres:` or `mysql:`
    /// URL, into the crate's own users table. Batches of users are written
    /// in transactions; running it again updates hashes, flags and locks and
    /// adds no duplicates. A username that exists with another hash is
    /// skipped unless [`ImportOptions::overwrite`].
    ///
    /// Fails before writing anything for a URL it cannot open, a database
    /// without `auth_user`, or a password hash of an unknown format
    /// (Django's unusable `!` passwords are imported: they never log in).
    pub async fn import_django(
        &self,
        url: &str,
        options: ImportOptions,
    ) -> Result<ImportReport, Error> {
        if self.config().users.is_some() {
            return Err(Error::Config(
                "import-django writes the crate's own users table, and advanced_token.users names \
                 the app's: point advanced_token.users at the Django auth_user table instead"
                    .into(),
            ));
        }
        let source = Source::open(url).await?;
        let result = self.import_from(&source, &options).await;
        source.close().await;
        result
    }

    async fn import_from(
        &self,
        source: &Source,
        options: &ImportOptions,
    ) -> Result<ImportReport, Error> {
        let tables = source.tables().await?;
        let total = check_hashes(source).await?;
        let now = self.now();
        let mode = ImportMode {
            overwrite: options.overwrite,
            dry_run: options.dry_run,
            now,
            expires_at: self.expiry_from(now),
        };
        let size = match options.batch_size {
            0 => DEFAULT_BATCH,
            n => n,
        };
        let sql = source.users_sql(tables);
        let mut rows = source.users(&sql);
        let mut report = ImportReport {
            dry_run: options.dry_run,
            ..ImportReport::default()
        };
        let mut batch = Vec::with_capacity(size);
        let mut done = 0u64;
        loop {
            let row = rows.try_next().await.map_err(read_error)?;
            let end = row.is_none();
            if let Some(row) = row {
                self.take(row, now, &mut batch, &mut report);
            }
            if batch.len() >= size || (end && !batch.is_empty()) {
                done += batch.len() as u64;
                self.write_batch(&mut batch, mode, &mut report).await?;
                if let Some(progress) = &options.progress {
                    progress(done, total.max(done));
                }
            }
            if end {
                return Ok(report);
            }
        }
    }

    /// Adds a row to the batch, or to the report's skipped rows.
    fn take(
        &self,
        row: DjangoRow,
        now: i64,
        batch: &mut Vec<ImportUser>,
        report: &mut ImportReport,
    ) {
        let (user, bad_key) = to_user(row, now);
        if identify(&user.password_hash) == Scheme::Unknown {
            report.users.skipped += 1;
            report.skip(&user.username, "user", UNKNOWN_HASH);
            return;
        }
        if bad_key {
            report.tokens.skipped += 1;
            report.skip(&user.username, "token", BAD_KEY);
        }
        batch.push(user);
    }

    /// Writes one batch in one transaction, and counts what happened.
    async fn write_batch(
        &self,
        batch: &mut Vec<ImportUser>,
        mode: ImportMode,
        report: &mut ImportReport,
    ) -> Result<(), Error> {
        let outcomes = self.db(|s| s.import_users(batch, mode)).await?;
        let mut revoked = false;
        for (user, out) in batch.iter().zip(&outcomes) {
            report.record(&user.username, out);
            revoked |= out.user == Outcome::Updated;
        }
        if revoked && !mode.dry_run {
            self.forget_all();
        }
        batch.clear();
        Ok(())
    }
}

/// Reads every password hash once, before anything is written: the number
/// of users, or the error for the first hash of an unknown format.
async fn check_hashes(source: &Source) -> Result<u64, Error> {
    let mut rows = source.hashes();
    let mut total = 0u64;
    while let Some((username, hash)) = rows.try_next().await.map_err(read_error)? {
        if identify(&hash) == Scheme::Unknown {
            return Err(Error::InvalidInput(format!(
                "user {username:?} in auth_user has a password hash of an unknown format; nothing was imported"
            )));
        }
        total += 1;
    }
    Ok(total)
}

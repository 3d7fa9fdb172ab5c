//! The admin command line: the crate's own `advanced-token` binary (demo
//! server and admin commands), and the pieces an app needs to ship the
//! same admin commands in its own binary.
//!
//! An app with its own clap command line takes [`Command`] in as a
//! subcommand and runs it with [`run_command`] on its [`AdvancedToken`]:
//!
//! ```rust,no_run
//! use clap::{Parser, Subcommand};
//! use rocket_advanced_token::{cli, AdvancedToken};
//!
//! #[derive(Parser)]
//! struct AppCli {
//!     #[command(subcommand)]
//!     command: AppCommand,
//! }
//!
//! #[derive(Subcommand)]
//! enum AppCommand {
//!     /// The app's own command.
//!     Migrate,
//!     /// Users and tokens.
//!     #[command(subcommand)]
//!     Auth(cli::Command),
//! }
//!
//! #[rocket::main]
//! async fn main() -> Result<(), rocket_advanced_token::Error> {
//!     match AppCli::parse().command {
//!         AppCommand::Migrate => Ok(()),
//!         AppCommand::Auth(command) => {
//!             let at = AdvancedToken::connect(&rocket::Config::figment()).await?;
//!             cli::run_command(&at, command).await
//!         }
//!     }
//! }
//! ```
//!
//! To apply the app's password policy, audit hook or users backend, open
//! the handle with the app's fairing instead:
//! `AdvancedToken::fairing().password_policy(..).connect(&figment)` (see
//! [`TokenFairing::connect`](crate::TokenFairing::connect)).
//!
//! Or, for a binary that is only the admin commands,
//! [`run_cli()`](crate::run_cli) (it never starts a server).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::demo::demo;
use crate::error::Error;
use crate::service::AdvancedToken;

/// Token authentication for Rocket: demo server and administration.
///
/// Every command reads the same configuration as the server: Rocket.toml
/// (its [default.advanced_token] and [default.databases.advanced_token]
/// sections, in the profile ROCKET_PROFILE selects) and ROCKET_* variables.
#[derive(Debug, Parser)]
#[command(name = "advanced-token", version, about, long_about)]
struct BinCli {
    #[command(subcommand)]
    command: Option<BinCommand>,
}

#[derive(Debug, Subcommand)]
enum BinCommand {
    /// Run the demo server (the default): the routes at /auth and a
    /// protected GET /api/hello/.
    Serve,
    #[command(flatten)]
    Admin(Command),
}

/// The admin commands of an app's binary: users and tokens, on the same
/// configuration as the server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct AdminCli {
    #[command(subcommand)]
    command: Command,
}

/// The admin commands, as a clap subcommand enum: an app can take them into
/// its own command line (`#[command(subcommand)]` or `#[command(flatten)]`)
/// and run one with [`run_command`].
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Create an active user.
    CreateUser {
        /// The username (case-sensitive).
        username: String,
        /// How the password is given.
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Set a user's password. This revokes all of the user's tokens and
    /// clears the user's login lockout.
    SetPassword {
        /// The username.
        username: String,
        /// How the password is given.
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Deactivate a user: login fails, tokens answer 401 (and are kept).
    Deactivate {
        /// The username.
        username: String,
    },
    /// Re-activate a deactivated user (and clear the user's login lockout).
    Activate {
        /// The username.
        username: String,
    },
    /// Delete a user and all of the user's tokens.
    DeleteUser {
        /// The username.
        username: String,
    },
    /// Forbid token rotation (PUT token/) for one user.
    #[command(alias = "lock-token")]
    LockRotation {
        /// The username.
        username: String,
    },
    /// Allow token rotation again for one user.
    #[command(alias = "unlock-token")]
    UnlockRotation {
        /// The username.
        username: String,
    },
    /// Clear a user's login lockout: forget the user's failed logins.
    ResetThrottle {
        /// The username.
        username: String,
    },
    /// List users: username, active, rotation lock, live tokens.
    ListUsers {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a user's tokens: id, created, last used, expires (UTC, ISO
    /// 8601). Never the token itself.
    ListTokens {
        /// The username.
        username: String,
        /// Print JSON (Unix seconds) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete one token by its id (as list-tokens shows it).
    RevokeToken {
        /// The token's id.
        id: i64,
    },
    /// Log one user out everywhere: delete all of the user's tokens.
    RevokeTokens {
        /// The username.
        username: String,
    },
    /// Delete every token of every user.
    RevokeAllTokens {
        /// Required: confirms that every user is to be logged out.
        #[arg(long)]
        force: bool,
    },
    /// Delete expired tokens and print how many went.
    PurgeExpired,
    /// Import users, password hashes, DRF tokens and rotation locks from a
    /// Django database (auth_user, authtoken_token,
    /// drf_advanced_token_userapikeylock). Safe to run again.
    ImportDjango {
        /// The Django database: sqlite://path, postgres://..., mysql://...
        url: String,
        /// Print what would happen; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replace the password hash of usernames that exist here with
        /// another hash (revoking their tokens), instead of skipping them.
        #[arg(long)]
        overwrite: bool,
        /// Users written per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: u32,
    },
}

/// Where the password comes from. Prefer `--password-stdin` (or the prompt):
/// `--password` is visible in the process list and the shell history, and
/// an environment variable to other processes of the same user (through
/// `/proc/<pid>/environ`) and to whatever the variable is passed on to.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// The password. Visible to every user in the process list and kept in
    /// shell history: prefer --password-stdin.
    #[arg(long, conflicts_with_all = ["password_stdin", "password_env"])]
    pub password: Option<String>,
    /// Read the password from the first line of standard input (preferred).
    #[arg(long, conflicts_with = "password_env")]
    pub password_stdin: bool,
    /// Read the password from the environment variable VAR (kept out of the
    /// process list and history; prefer --password-stdin where you can).
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
}

impl PasswordArgs {
    fn read(&self) -> Result<String, String> {
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        if let Some(var) = &self.password_env {
            return match std::env::var(var) {
                Ok(p) => Ok(p),
                Err(std::env::VarError::NotPresent) => {
                    Err(format!("the environment variable {var} is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("the environment variable {var} is not valid UTF-8"))
                }
            };
        }
        if self.password_stdin {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            return Ok(line.to_owned());
        }
        if !std::io::stdin().is_terminal() {
            return Err("no password given: use --password-stdin, --password-env VAR or --password, or run in a terminal to be prompted".into());
        }
        let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Password (again): ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the passwords do not match".into());
        }
        Ok(first)
    }
}

/// The program's name, as invoked (the app's binary name in its messages).
fn program() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::env::args_os()
            .next()
            .and_then(|a| {
                let path = std::path::PathBuf::from(a);
                Some(path.file_stem()?.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "advanced-token".to_owned())
    })
}

/// Runs the admin commands with the process's arguments and returns the
/// exit code: for an app's own admin binary (`fn main() -> ExitCode {
/// rocket_advanced_token::run_cli() }`). Messages carry the binary's
/// name. A command is required: it never starts a server.
pub fn run() -> ExitCode {
    let name = program();
    let matches = AdminCli::command().name(name).bin_name(name).get_matches();
    match AdminCli::from_arg_matches(&matches) {
        Ok(cli) => run_admin_command(cli.command),
        Err(e) => e.exit(),
    }
}

/// The crate's own `advanced-token` binary: the admin commands, plus
/// `serve` (the demo server), which is the default. Apps call
/// [`run_cli()`](crate::run_cli) instead.
#[doc(hidden)]
pub fn run_binary() -> ExitCode {
    match BinCli::parse().command.unwrap_or(BinCommand::Serve) {
        // Rocket's own runtime, sized by its `workers` setting and with
        // graceful shutdown, as `#[launch]` would give.
        BinCommand::Serve => rocket::execute(serve()),
        BinCommand::Admin(command) => run_admin_command(command),
    }
}

/// Runs one admin command on the configuration's database; the exit code.
fn run_admin_command(command: Command) -> ExitCode {
    if let Command::RevokeAllTokens { force: false } = command {
        // Refused before the database is opened (or a SQLite file created).
        return fail(NEED_FORCE);
    }
    let runtime = match rocket::tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    match runtime.block_on(admin(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => fail(&msg),
    }
}

const NEED_FORCE: &str =
    "this deletes every token of every user; nothing was changed. Run again with --force to do it";

fn fail(msg: &str) -> ExitCode {
    eprintln!("{}: error: {msg}", program());
    ExitCode::FAILURE
}

async fn serve() -> ExitCode {
    match demo(rocket::build()).launch().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            // Rocket has already logged the details (and the fairing the key).
            fail(&format!("the server failed to launch: {e}"))
        }
    }
}

async fn admin(command: Command) -> Result<(), String> {
    let figment = rocket::Config::figment();
    let at = AdvancedToken::connect(&figment)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(file) = at.created_database_file() {
        eprintln!(
            "{}: note: created a new SQLite database at {}",
            program(),
            file.display()
        );
    }
    let result = run_command(&at, command).await;
    at.close().await;
    result.map_err(|e| match e {
        Error::Unavailable(_) => format!("the database at {} is unavailable", at.database()),
        other => other.to_string(),
    })
}

fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// Unix seconds as ISO 8601 in UTC, e.g. `2026-11-29T14:00:00Z`.
fn iso(t: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

fn time(t: Option<i64>) -> String {
    t.map_or_else(|| "never".to_owned(), iso)
}

/// Runs one admin command on `at`, printing its result to standard output
/// as the `advanced-token` binary does (passwords are read from
/// `--password`, `--password-stdin` or a terminal prompt). The app's
/// password policy applies when `at` comes from its fairing.
///
/// ```rust,no_run
/// use rocket_advanced_token::cli::{self, Command};
///
/// # async fn f(at: &rocket_advanced_token::AdvancedToken) -> Result<(), rocket_advanced_token::Error> {
/// let command = Command::ResetThrottle { username: "alice".into() };
/// cli::run_command(at, command).await?;
/// # Ok(()) }
/// ```
pub async fn run_command(at: &AdvancedToken, command: Command) -> Result<(), Error> {
    match command {
        Command::ListUsers { json } => list_users(at, json).await,
        Command::ListTokens { username, json } => list_tokens(at, &username, json).await,
        Command::ImportDjango {
            url,
            dry_run,
            overwrite,
            batch_size,
        } => {
            let options = crate::ImportOptions::default()
                .dry_run(dry_run)
                .overwrite(overwrite)
                .batch_size(batch_size as usize)
                .progress(progress_reporter());
            import_django(at, &url, options).await
        }
        command => change(at, command).await.map(say),
    }
}

/// Runs a command that changes something; returns what to print.
async fn change(at: &AdvancedToken, command: Command) -> Result<String, Error> {
    Ok(match command {
        Command::CreateUser { username, password } => {
            let pw = password.read().map_err(Error::InvalidInput)?;
            let id = at.create_user(&username, &pw).await?;
            format!("Created user {username:?} (id {id}).")
        }
        Command::SetPassword { username, password } => {
            let pw = password.read().map_err(Error::InvalidInput)?;
            let revoked = at.set_password(&username, &pw).await?;
            format!("Changed the password of {username:?}; revoked {revoked} token(s).")
        }
        Command::Deactivate { username } => {
            at.deactivate_user(&username).await?;
            format!("Deactivated {username:?}.")
        }
        Command::Activate { username } => {
            at.activate_user(&username).await?;
            format!("Activated {username:?}.")
        }
        Command::DeleteUser { username } => {
            at.delete_user(&username).await?;
            format!("Deleted {username:?} and the user's tokens.")
        }
        other => return revoke(at, other).await,
    })
}

/// The commands about tokens and rotation locks; returns what to print.
async fn revoke(at: &AdvancedToken, command: Command) -> Result<String, Error> {
    Ok(match command {
        Command::LockRotation { username } => {
            at.lock_rotation(&username).await?;
            format!("Locked token rotation for {username:?}.")
        }
        Command::UnlockRotation { username } => {
            at.unlock_rotation(&username).await?;
            format!("Unlocked token rotation for {username:?}.")
        }
        Command::ResetThrottle { username } => {
            at.reset_throttle(&username).await?;
            format!("Cleared the login lockout of {username:?}.")
        }
        Command::RevokeToken { id } => match at.revoke_token(id).await? {
            true => format!("Revoked token {id}."),
            false => return Err(Error::TokenNotFound),
        },
        Command::RevokeTokens { username } => {
            let n = at.revoke_tokens(&username).await?;
            format!("Revoked {n} token(s) of {username:?}.")
        }
        // Without `--force` it was refused by `run`, before the database
        // was opened.
        Command::RevokeAllTokens { .. } => {
            let n = at.revoke_all_tokens().await?;
            format!("Revoked {n} token(s).")
        }
        Command::PurgeExpired => {
            let n = at.purge_expired().await?;
            format!("Purged {n} expired token(s).")
        }
        other => unreachable!("not a token command: {other:?}"),
    })
}

async fn list_users(at: &AdvancedToken, json: bool) -> Result<(), Error> {
    let users = at.list_users().await?;
    if json {
        say(serde_json::to_string_pretty(&users).unwrap_or_default());
        return Ok(());
    }
    let rows = users
        .iter()
        .map(|u| {
            vec![
                u.username.clone(),
                yes_no(u.is_active),
                yes_no(u.rotation_locked),
                u.live_tokens.to_string(),
            ]
        })
        .collect();
    table(&["USERNAME", "ACTIVE", "LOCKED", "TOKENS"], rows);
    Ok(())
}

async fn list_tokens(at: &AdvancedToken, username: &str, json: bool) -> Result<(), Error> {
    let tokens = at.list_tokens(username).await?;
    if json {
        say(serde_json::to_string_pretty(&tokens).unwrap_or_default());
        return Ok(());
    }
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                iso(t.created_at),
                iso(t.last_used_at),
                time(t.expires_at),
            ]
        })
        .collect();
    table(&["ID", "CREATED", "LAST_USED", "EXPIRES"], rows);
    Ok(())
}

/// Progress on standard error: a bar on a terminal, else a line every
/// 10,000 users.
fn progress_reporter() -> impl Fn(u64, u64) + Send + Sync + 'static {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} users {elapsed_precise} (eta {eta})",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let last = std::sync::atomic::AtomicU64::new(0);
    move |done, total| match &bar {
        Some(bar) => {
            bar.set_length(total);
            bar.set_position(done);
            if done >= total {
                bar.finish_and_clear();
            }
        }
        None => {
            let step = done / 10_000;
            if step > last.swap(step, std::sync::atomic::Ordering::Relaxed) || done == total {
                eprintln!("advanced-token: {done} of {total} users");
            }
        }
    }
}

async fn import_django(
    at: &AdvancedToken,
    url: &str,
    options: crate::ImportOptions,
) -> Result<(), Error> {
    let report = at.import_django(url, options).await?;
    say(report);
    Ok(())
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// Prints rows as left-aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        say(padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct AppCli {
        #[command(subcommand)]
        command: AppCommand,
    }

    #[derive(Debug, Subcommand)]
    enum AppCommand {
        Migrate,
        #[command(subcommand)]
        Auth(Command),
    }

    #[derive(Debug, Parser)]
    struct FlatCli {
        #[command(subcommand)]
        command: FlatCommand,
    }

    #[derive(Debug, Subcommand)]
    enum FlatCommand {
        Migrate,
        #[command(flatten)]
        Auth(Command),
    }

    #[test]
    fn an_app_embeds_the_commands() {
        let cli = AppCli::try_parse_from(["app", "auth", "reset-throttle", "alice"]).unwrap();
        assert!(matches!(
            cli.command,
            AppCommand::Auth(Command::ResetThrottle { .. })
        ));
        let cli = FlatCli::try_parse_from(["app", "lock-token", "alice"]).unwrap();
        assert!(matches!(
            cli.command,
            FlatCommand::Auth(Command::LockRotation { .. })
        ));
        let cli = FlatCli::try_parse_from(["app", "migrate"]).unwrap();
        assert!(matches!(cli.command, FlatCommand::Migrate));
    }

    #[test]
    fn an_apps_admin_binary_needs_a_command_and_has_no_serve() {
        assert!(AdminCli::try_parse_from(["app"]).is_err());
        assert!(AdminCli::try_parse_from(["app", "serve"]).is_err());
        assert!(AdminCli::try_parse_from(["app", "unlock-token", "alice"]).is_ok());
        // The crate's own binary serves by default.
        assert!(BinCli::try_parse_from(["advanced-token"])
            .unwrap()
            .command
            .is_none());
        assert!(matches!(
            BinCli::try_parse_from(["advanced-token", "serve"])
                .unwrap()
                .command,
            Some(BinCommand::Serve)
        ));
    }

    #[test]
    fn times_are_iso_8601_utc() {
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso(1_795_960_800), "2026-11-29T14:00:00Z");
        assert_eq!(time(None), "never");
    }
}

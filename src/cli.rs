//! The `advanced-token` command line: the demo server and the admin
//! commands, on the same configuration as the server.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo server (the default): the routes at /auth and a
    /// protected GET /api/hello/.
    Serve,
    /// Create an active user.
    CreateUser {
        /// The username (case-sensitive).
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Set a user's password. This revokes all of the user's tokens.
    SetPassword {
        /// The username.
        username: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Deactivate a user: login fails, tokens answer 401 (and are kept).
    Deactivate {
        /// The username.
        username: String,
    },
    /// Re-activate a deactivated user.
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
    LockToken {
        /// The username.
        username: String,
    },
    /// Allow token rotation again for one user.
    UnlockToken {
        /// The username.
        username: String,
    },
    /// List users: username, active, rotation lock, live tokens.
    ListUsers {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List a user's tokens: id, created, last used, expires. Never the
    /// token itself.
    ListTokens {
        /// The username.
        username: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
struct PasswordArgs {
    /// The password. Visible to every user in the process list and kept in
    /// shell history: prefer --password-stdin.
    #[arg(long, conflicts_with_all = ["password_stdin", "password_env"])]
    password: Option<String>,
    /// Read the password from the first line of standard input (preferred).
    #[arg(long, conflicts_with = "password_env")]
    password_stdin: bool,
    /// Read the password from the environment variable VAR (kept out of the
    /// process list and history; prefer --password-stdin where you can).
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
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

/// Runs the `advanced-token` command line with the process's arguments and
/// returns its exit code. An app can call this from its own `main` to ship
/// the same admin commands.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command.unwrap_or(Command::Serve) {
        // Rocket's own runtime, sized by its `workers` setting and with
        // graceful shutdown, as `#[launch]` would give.
        Command::Serve => return rocket::execute(serve()),
        // Refused before the database is opened (or a SQLite file created).
        Command::RevokeAllTokens { force: false } => return fail(NEED_FORCE),
        command => command,
    };
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
    eprintln!("advanced-token: {msg}");
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
    let result = run_admin(&at, command).await;
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

fn time(t: Option<i64>) -> String {
    t.map_or_else(|| "never".to_owned(), |t| t.to_string())
}

async fn run_admin(at: &AdvancedToken, command: Command) -> Result<(), Error> {
    match command {
        Command::Serve => unreachable!("serve is handled by run()"),
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
            format!("Password of {username:?} changed; {revoked} token(s) revoked.")
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
        Command::LockToken { username } => {
            at.lock_rotation(&username).await?;
            format!("Token rotation locked for {username:?}.")
        }
        Command::UnlockToken { username } => {
            at.unlock_rotation(&username).await?;
            format!("Token rotation unlocked for {username:?}.")
        }
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
                t.created_at.to_string(),
                t.last_used_at.to_string(),
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

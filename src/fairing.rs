//! The fairing: configuration, database, migrations, and DRF-style bodies
//! for guard failures in the application's own handlers.

use std::io::Cursor;
use std::sync::Arc;

use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::figment::Figment;
use rocket::http::{ContentType, Status};
use rocket::{Build, Orbit, Request, Response, Rocket};

use serde_json::Value;

use crate::audit::{AuditEvent, AuditHook};
use crate::backend::UserBackend;
use crate::error::{shaped_body, www_authenticate, BodyHook, Error, ShapeBody};
use crate::guard::{cached_failure, HANDLED_MARK};
use crate::pool::DbPool;
use crate::routes::shadowed;
use crate::service::{AdvancedToken, Clock, Options, PasswordRule};

/// The warning for a server that takes the client IP (and so the per-IP
/// login throttling key) from Rocket's default `X-Real-IP` header while
/// listening beyond loopback: any client can then send the header and pick
/// its IP. `None` when `ip_header` was set (to a header, or `false`;
/// `explicit`: by a configuration file or the environment) or the server
/// listens on loopback only.
pub(crate) fn ip_header_warning(config: &rocket::Config, explicit: bool) -> Option<String> {
    let default = rocket::Config::default().ip_header;
    if explicit || config.ip_header != default || config.address.is_loopback() {
        return None;
    }
    Some(format!(
        "ip_header is left at Rocket's default ({:?}) while listening on {}: \
         clients can set that header to dodge per-IP login throttling. Behind a \
         proxy that sets it, name it explicitly (ip_header = \"X-Real-IP\"); facing \
         clients directly, set ip_header = false.",
        default.as_ref().map_or("", |h| h.as_str()),
        config.address
    ))
}

/// Finds the app's pool in a Rocket being built, with its database's name.
type PoolSource = Arc<dyn Fn(&Rocket<Build>) -> Option<(DbPool, &'static str)> + Send + Sync>;

/// The crate's fairing, from [`AdvancedToken::fairing()`]: attach it to the
/// Rocket. Its builder methods fit it to an app that already has users or a
/// database pool.
#[must_use]
pub struct TokenFairing {
    clock: Option<Clock>,
    users: Option<Arc<dyn UserBackend>>,
    pool: Option<PoolSource>,
    audit: Option<AuditHook>,
    policy: Option<PasswordRule>,
    error_body: Option<ShapeBody>,
}

impl TokenFairing {
    /// Hands every audit event (logins, logouts, rotations, revocations,
    /// lockout resets, administration) to `hook` as well as logging it at
    /// `info` under the target `advanced_token::audit`. The hook runs on
    /// the request's task: keep it quick (send the event to a channel for
    /// slow work).
    ///
    /// ```rust,no_run
    /// use rocket_advanced_token::{AdvancedToken, AuditKind};
    ///
    /// let fairing = AdvancedToken::fairing().on_audit(|event| {
    ///     if event.kind == AuditKind::LoginThrottled {
    ///         eprintln!("lockout: {event}");
    ///     }
    /// });
    /// # let _ = rocket::build().attach(fairing);
    /// ```
    pub fn on_audit(mut self, hook: impl Fn(&AuditEvent) + Send + Sync + 'static) -> Self {
        self.audit = Some(Arc::new(hook));
        self
    }

    /// Adds the app's own rule for new passwords, on top of
    /// `min_password_length`: `Err(reason)` refuses the password with
    /// [`Error::WeakPassword`] (400), in `create_user`, `set_password`,
    /// `hash_password` and the command line (when run through
    /// [`cli::run_command`](crate::cli::run_command) on a handle from this
    /// fairing, or from [`TokenFairing::connect`]).
    ///
    /// ```rust,no_run
    /// use rocket_advanced_token::AdvancedToken;
    ///
    /// let fairing = AdvancedToken::fairing().password_policy(|pw| {
    ///     match pw.chars().any(|c| c.is_ascii_digit()) {
    ///         true => Ok(()),
    ///         false => Err("it needs a digit".into()),
    ///     }
    /// });
    /// # let _ = rocket::build().attach(fairing);
    /// ```
    pub fn password_policy(
        mut self,
        rule: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.policy = Some(Arc::new(rule));
        self
    }

    /// Opens the database outside Rocket, as this fairing would at launch:
    /// with its [`users`](TokenFairing::users) backend, password policy and
    /// audit hook, but no server tasks. For an app's admin command line, so
    /// that [`cli::run_command`](crate::cli::run_command) obeys the app's
    /// rules. (It opens a pool of its own, from `databases.<database>`.)
    ///
    /// ```rust,no_run
    /// use rocket_advanced_token::AdvancedToken;
    ///
    /// # async fn f() -> Result<(), rocket_advanced_token::Error> {
    /// let fairing = AdvancedToken::fairing().password_policy(|pw| match pw.len() >= 12 {
    ///     true => Ok(()),
    ///     false => Err("use at least 12 characters".into()),
    /// });
    /// let at = fairing.connect(&rocket::Config::figment()).await?;
    /// at.create_user("alice", "correct horse battery staple").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self, figment: &Figment) -> Result<AdvancedToken, Error> {
        let opts = Options {
            clock: self.clock.clone(),
            users: self.users.clone(),
            pool: None,
            serve: false,
            audit: self.audit.clone(),
            policy: self.policy.clone(),
        };
        AdvancedToken::open(figment, opts).await
    }

    /// Shapes the JSON body of every error the crate answers with (its
    /// routes, and the failed-guard responses the fairing rewrites); the
    /// status and headers stay the crate's. The default is
    /// [`Error::body`]: `{"detail": "..."}`.
    ///
    /// ```rust,no_run
    /// use rocket_advanced_token::AdvancedToken;
    /// use serde_json::json;
    ///
    /// let fairing = AdvancedToken::fairing().error_body(|e| {
    ///     json!({ "error": { "status": e.status().code, "message": e.to_string() } })
    /// });
    /// # let _ = rocket::build().attach(fairing);
    /// ```
    pub fn error_body(mut self, shape: impl Fn(&Error) -> Value + Send + Sync + 'static) -> Self {
        self.error_body = Some(Arc::new(shape));
        self
    }

    /// Looks users up through the app's own [`UserBackend`] instead of the
    /// crate's `advanced_token_users` table (which is then not created).
    pub fn users(mut self, users: impl UserBackend) -> Self {
        self.users = Some(Arc::new(users));
        self
    }

    /// Shares the pool of the app's `rocket_db_pools` database `D` instead of
    /// opening one: one URL, one pool for the app's queries and the
    /// crate's. Attach `D::init()` before this fairing.
    ///
    /// ```rust,no_run
    /// # use rocket::launch;
    /// use rocket_advanced_token::AdvancedToken;
    /// use rocket_advanced_token::rocket_db_pools::{self, sqlx, Database};
    ///
    /// #[derive(Database)]
    /// #[database("app")]
    /// struct App(sqlx::SqlitePool);
    ///
    /// #[launch]
    /// fn rocket() -> _ {
    ///     rocket::build()
    ///         .attach(App::init())
    ///         .attach(AdvancedToken::fairing().database::<App>())
    ///         .mount("/auth", rocket_advanced_token::routes())
    /// }
    /// ```
    pub fn database<D>(mut self) -> Self
    where
        D: rocket_db_pools::Database,
        D::Pool: Clone + Into<DbPool>,
    {
        self.pool = Some(Arc::new(|rocket: &Rocket<Build>| {
            let db: &D = D::fetch(rocket)?;
            let pool: &D::Pool = db;
            Some((pool.clone().into(), D::NAME))
        }));
        self
    }
}

impl AdvancedToken {
    /// The fairing to attach: it reads [`Config`](crate::Config) from the
    /// `advanced_token` section of Rocket's configuration, opens the database
    /// configured as `databases.advanced_token`, runs the crate's migrations
    /// and manages an `AdvancedToken` (and the `Config`). Bad configuration
    /// or an unreachable database abort launch with a message that names the
    /// key or the host.
    pub fn fairing() -> TokenFairing {
        TokenFairing {
            clock: None,
            users: None,
            pool: None,
            audit: None,
            policy: None,
            error_body: None,
        }
    }

    /// [`AdvancedToken::fairing()`] with a fake clock (Unix seconds), for
    /// tests of expiry.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn fairing_with_clock(clock: Arc<dyn Fn() -> i64 + Send + Sync>) -> TokenFairing {
        TokenFairing {
            clock: Some(clock),
            ..Self::fairing()
        }
    }
}

#[rocket::async_trait]
impl Fairing for TokenFairing {
    fn info(&self) -> Info {
        Info {
            name: "Advanced Token",
            kind: Kind::Ignite | Kind::Liftoff | Kind::Response | Kind::Shutdown,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> fairing::Result {
        if rocket.state::<AdvancedToken>().is_some() {
            log::error!("advanced_token: the fairing is attached twice");
            return Err(rocket);
        }
        let pool = match &self.pool {
            None => None,
            Some(find) => match find(&rocket) {
                Some(pool) => Some(pool),
                None => {
                    log::error!(
                        "advanced_token: the app's database is not attached: attach its `init()` fairing before this one"
                    );
                    return Err(rocket);
                }
            },
        };
        let opts = Options {
            clock: self.clock.clone(),
            users: self.users.clone(),
            pool,
            serve: true,
            audit: self.audit.clone(),
            policy: self.policy.clone(),
        };
        match AdvancedToken::open(rocket.figment(), opts).await {
            Ok(at) => {
                let config = at.config().clone();
                let rocket = rocket.manage(at).manage(config);
                Ok(match &self.error_body {
                    Some(shape) => rocket.manage(BodyHook(shape.clone())),
                    None => rocket,
                })
            }
            Err(e) => {
                log::error!("advanced_token: {e}");
                eprintln!("advanced_token: launch aborted: {e}");
                Err(rocket)
            }
        }
    }

    async fn on_liftoff(&self, rocket: &Rocket<Orbit>) {
        // Set in Rocket.toml or ROCKET_IP_HEADER, rather than Rocket's own
        // default (whose provider is named `rocket::Config...`).
        let explicit = rocket
            .figment()
            .find_metadata(rocket::Config::IP_HEADER)
            .is_some_and(|m| !m.name.starts_with("rocket::Config"));
        if let Some(warning) = ip_header_warning(rocket.config(), explicit) {
            log::warn!("advanced_token: {warning}");
        }
        let routes: Vec<_> = rocket.routes().collect();
        for (method, path, app) in shadowed(&routes) {
            log::warn!("advanced_token: {method} {path} is answered by the app's route `{app}`, not the crate's");
        }
        if let Some(at) = rocket.state::<AdvancedToken>() {
            if let Some(file) = at.created_database_file() {
                log::warn!(
                    "advanced_token: created a new SQLite database at {}",
                    file.display()
                );
            }
            log::info!(
                "advanced_token: {} database at {}, `Authorization: {} <token>`",
                at.pool().backend_name(),
                at.database(),
                at.config().bearer_prefix
            );
        }
    }

    /// When a plain [`AuthUser`](crate::AuthUser) guard in one of the app's
    /// handlers failed, Rocket answers through its catcher, which knows
    /// nothing of DRF. Give that answer the crate's body and
    /// `WWW-Authenticate` header (unless `rewrite_guard_failures = false`).
    /// Responses that already carry `WWW-Authenticate` (the crate's own, or
    /// a catcher of the app's that sets it) are left alone, and so are the
    /// responses of handlers that took `Result<AuthUser, Error>` or
    /// `Option<AuthUser>`: the guard's marker cookie survives only there.
    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        // Most responses: not an error, and no marker to strip (it is a
        // `Set-Cookie` by now). Decided without the request's local cache,
        // whose first use allocates.
        if res.status().code < 400 && !sets_cookies(res) {
            return;
        }
        let Some(error) = cached_failure(req) else {
            return;
        };
        if strip_mark(res) || res.status() != error.status() {
            return;
        }
        let rewrite = req
            .rocket()
            .state::<AdvancedToken>()
            .is_some_and(|at| at.config().rewrite_guard_failures);
        if !rewrite || res.headers().contains("WWW-Authenticate") {
            return;
        }
        let body = shaped_body(error, req).to_string();
        res.set_header(ContentType::JSON);
        res.set_sized_body(body.len(), Cursor::new(body));
        if error.status() == Status::Unauthorized {
            res.set_header(www_authenticate(req));
        }
    }

    async fn on_shutdown(&self, rocket: &Rocket<Orbit>) {
        if let Some(at) = rocket.state::<AdvancedToken>() {
            at.close().await;
        }
    }
}

/// Whether the response sets a cookie: a scan of its few headers, cheaper
/// than hashing the name for a lookup.
fn sets_cookies(res: &Response<'_>) -> bool {
    res.headers().iter().any(|h| h.name() == "Set-Cookie")
}

/// Removes the guard's marker cookie from a response; whether it was there
/// (a handler, not a catcher, answered the request).
fn strip_mark(res: &mut Response<'_>) -> bool {
    let prefix = format!("{HANDLED_MARK}=");
    let cookies: Vec<String> = res.headers().get("Set-Cookie").map(str::to_owned).collect();
    if !cookies.iter().any(|c| c.starts_with(&prefix)) {
        return false;
    }
    res.remove_header("Set-Cookie");
    for cookie in cookies.into_iter().filter(|c| !c.starts_with(&prefix)) {
        res.adjoin_raw_header("Set-Cookie", cookie);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn config(address: IpAddr, ip_header: Option<&'static str>) -> rocket::Config {
        rocket::Config {
            address,
            ip_header: ip_header.map(|h| h.into()),
            ..rocket::Config::default()
        }
    }

    #[test]
    fn warns_of_the_default_ip_header_beyond_loopback() {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let warning = ip_header_warning(&config(any, Some("X-Real-IP")), false).unwrap();
        // Named explicitly, in Rocket.toml or the environment: no warning.
        assert!(ip_header_warning(&config(any, Some("X-Real-IP")), true).is_none());
        assert!(warning.contains("ip_header"), "{warning}");
        assert!(ip_header_warning(
            &config(IpAddr::V6(Ipv6Addr::UNSPECIFIED), Some("X-Real-IP")),
            false
        )
        .is_some());
        // Loopback, no header, or another header: no warning.
        assert!(ip_header_warning(
            &config(IpAddr::V4(Ipv4Addr::LOCALHOST), Some("X-Real-IP")),
            false
        )
        .is_none());
        assert!(ip_header_warning(
            &config(IpAddr::V6(Ipv6Addr::LOCALHOST), Some("X-Real-IP")),
            false
        )
        .is_none());
        assert!(ip_header_warning(&config(any, None), false).is_none());
        assert!(ip_header_warning(&config(any, Some("X-Forwarded-For")), false).is_none());
    }
}

//! The fairing: configuration, database, migrations, and DRF-style bodies
//! for guard failures in the application's own handlers.

use std::io::Cursor;

use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::http::{ContentType, Status};
use rocket::{Build, Orbit, Request, Response, Rocket};

use crate::error::www_authenticate;
use crate::guard::cached_failure;
use crate::service::{AdvancedToken, Clock};

struct TokenFairing {
    clock: Option<Clock>,
}

impl AdvancedToken {
    /// The fairing to attach: it reads [`Config`](crate::Config) from the
    /// `advanced_token` section of Rocket's configuration, opens the database
    /// configured as `databases.advanced_token`, runs the crate's migrations
    /// and manages an `AdvancedToken` (and the `Config`). Bad configuration
    /// or an unreachable database abort launch with a message that names the
    /// key or the host.
    pub fn fairing() -> impl Fairing {
        TokenFairing { clock: None }
    }

    /// [`AdvancedToken::fairing()`] with a fake clock (Unix seconds), for
    /// tests of expiry.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn fairing_with_clock(
        clock: std::sync::Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> impl Fairing {
        TokenFairing { clock: Some(clock) }
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
        match AdvancedToken::open(rocket.figment(), self.clock.clone(), true).await {
            Ok(at) => {
                let config = at.config().clone();
                Ok(rocket.manage(at).manage(config))
            }
            Err(e) => {
                log::error!("advanced_token: {e}");
                eprintln!("advanced_token: launch aborted: {e}");
                Err(rocket)
            }
        }
    }

    async fn on_liftoff(&self, rocket: &Rocket<Orbit>) {
        if let Some(at) = rocket.state::<AdvancedToken>() {
            log::info!(
                "advanced_token: {} database at {}, `Authorization: {} <token>`",
                at.pool().backend_name(),
                at.database(),
                at.config().bearer_prefix
            );
        }
    }

    /// When an [`AuthUser`](crate::AuthUser) guard in one of the app's
    /// handlers failed, Rocket answers through its catcher, which knows
    /// nothing of DRF. Give that answer the crate's body and
    /// `WWW-Authenticate` header. Responses that already carry
    /// `WWW-Authenticate` (the crate's own, or a catcher of the app's that
    /// sets it) are left alone.
    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let Some(error) = cached_failure(req) else {
            return;
        };
        if res.status() != error.status() || res.headers().contains("WWW-Authenticate") {
            return;
        }
        let body = error.body().to_string();
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

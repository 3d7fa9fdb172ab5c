//! The mountable routes: `login/`, `token/`, `tokens/`, `tokens/<id>`,
//! `logout/`, and the 405 and `OPTIONS` answers derived from the same
//! table.
//!
//! Rocket 0.5 matches `/auth/login/` to a route `/login` (and 404s
//! `/auth/login/x`), so each path answers with and without a trailing
//! slash.

use std::net::IpAddr;

use rocket::data::Data;
use rocket::http::{Header, Method, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use rocket::route::{Handler, Outcome, Route};
use rocket::serde::json::Json;
use rocket::{delete, get, post, put, routes};
use serde_json::{json, Value};

use crate::body::Credentials;
use crate::error::Error;
use crate::service::{AdvancedToken, AuthUser};

/// Every path of the crate and the methods it serves, in `Allow` order.
const PATHS: [(&str, &[Method]); 5] = [
    ("/login", &[Method::Post]),
    ("/token", &[Method::Get, Method::Put, Method::Delete]),
    ("/tokens", &[Method::Get]),
    ("/tokens/<id>", &[Method::Delete]),
    ("/logout", &[Method::Get, Method::Post]),
];

/// The rank of the crate's routes with static paths (all but
/// `tokens/<id>`'s): one after Rocket's default for a static path (-9), so
/// Rocket tries them after the app's own static routes, and not before
/// each request to one of those. An app route of the same method and path
/// then answers instead of the crate's (the fairing warns at liftoff), as
/// app routes do over Rocket's `FileServer` (rank 10). Routes with a
/// dynamic segment keep their default ranks (-8 to -1), so -8 ties only
/// with a dynamic path that has a static query, and Rocket refuses to
/// launch such a route where it overlaps one of the crate's, as before.
pub(crate) const RANK: isize = -8;

/// The start of the name of every crate route with a handler of its own,
/// as Rocket's launch log shows it. (Those that answer 405 and `OPTIONS`
/// are unnamed.)
pub(crate) const NAME_PREFIX: &str = "advanced_token::";

/// The methods a route may be mounted for that are not served get 405.
const ALL_METHODS: [Method; 7] = [
    Method::Get,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Patch,
    Method::Trace,
    Method::Connect,
];

/// The `Allow` value of `path`, leaving out `except` (methods switched off
/// by configuration): its methods, `HEAD` with `GET`, and `OPTIONS`.
fn allow(path: &str, except: &[Method]) -> String {
    let served = PATHS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(&[][..], |(_, methods)| *methods);
    let mut out: Vec<&str> = served
        .iter()
        .filter(|m| !except.contains(m))
        .map(|m| m.as_str())
        .collect();
    if out.contains(&"GET") {
        out.push("HEAD");
    }
    out.push("OPTIONS");
    out.join(", ")
}

/// The crate's routes, to mount under any base:
///
/// ```rust,no_run
/// # use rocket::launch;
/// use rocket_advanced_token::AdvancedToken;
///
/// #[launch]
/// fn rocket() -> _ {
///     rocket::build()
///         .attach(AdvancedToken::fairing())
///         .mount("/auth", rocket_advanced_token::routes())
/// }
/// ```
///
/// | method and path | success | failure |
/// |---|---|---|
/// | `POST login/` | 200 `{"token": "..."}` | 400, 401, 413, 415, 429 |
/// | `GET token/` | 200 `{"username": "..."}` | 401 |
/// | `PUT token/` | 200 `{"token": "..."}` (the old token is dead) | 401, 405 |
/// | `DELETE token/` | 200 `{"detail": "..."}`, only this token deleted | 401, 405 |
/// | `GET tokens/` | 200 `[{"id", "created_at", "last_used_at", "expires_at", "current"}]` | 401 |
/// | `DELETE tokens/<id>` | 200 `{"detail": "..."}`, that token of the user deleted | 401, 404 |
/// | `GET` or `POST logout/` | 200 `{"detail": "..."}`, every token of the user deleted | 401, 405 |
pub fn routes() -> Vec<Route> {
    let mut all = routes![
        login,
        check_token,
        rotate_token,
        logout_device,
        list_sessions,
        delete_session,
        logout_get,
        logout_post
    ];
    for (path, served) in PATHS {
        let allow = allow(path, &[]);
        for method in ALL_METHODS.into_iter().filter(|m| !served.contains(m)) {
            let handler = Other {
                allow: allow.clone(),
                options: false,
            };
            all.push(Route::new(method, path, handler));
        }
        let options = Other {
            allow,
            options: true,
        };
        all.push(Route::new(Method::Options, path, options));
    }
    for route in &mut all {
        // `tokens/<id>` keeps its default, -5: ahead of the app's dynamic
        // routes it would hide them.
        route.rank = route.rank.max(RANK);
        if let Some(name) = &route.name {
            route.name = Some(format!("{NAME_PREFIX}{name}").into());
        }
    }
    all
}

/// The crate's endpoints in `routes` that a route of the app answers
/// instead: one of the same method and path, ranked before them. Each as
/// `(method, path, the app route's name)`. (An app route in the place of a
/// 405 or `OPTIONS` answer is what those answers are there for.)
pub(crate) fn shadowed(routes: &[&Route]) -> Vec<(Method, String, String)> {
    let served = |r: &Route| {
        r.name
            .as_deref()
            .is_some_and(|n| n.starts_with(NAME_PREFIX))
    };
    let path = |r: &Route| r.uri.path().to_string().trim_end_matches('/').to_owned();
    let mut found = Vec::new();
    for crate_route in routes.iter().filter(|r| served(r)) {
        let app = routes.iter().find(|r| {
            !served(r)
                && r.method == crate_route.method
                && r.rank < crate_route.rank
                && path(r) == path(crate_route)
        });
        if let Some(app) = app {
            let name = app.name.as_deref().unwrap_or("unnamed").to_owned();
            found.push((crate_route.method, path(crate_route), name));
        }
    }
    found
}

/// A response that carries a token: `Cache-Control: no-store` and
/// `Pragma: no-cache`, as RFC 6749 §5.1 asks of token responses, so no
/// cache (browser, proxy) keeps a copy of the credential.
struct NoStore<R>(R);

impl<'r, R: Responder<'r, 'static>> Responder<'r, 'static> for NoStore<R> {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let mut res = self.0.respond_to(req)?;
        res.set_header(Header::new("Cache-Control", "no-store"));
        res.set_header(Header::new("Pragma", "no-cache"));
        Ok(res)
    }
}

/// An error answer, with the `Allow` header of its path when it is a 405.
struct Refused(Error, Option<String>);

impl From<Error> for Refused {
    fn from(e: Error) -> Self {
        Refused(e, None)
    }
}

impl<'r> Responder<'r, 'static> for Refused {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let mut res = self.0.respond_to(req)?;
        if let Some(allow) = self.1 {
            res.set_header(Header::new("Allow", allow));
        }
        Ok(res)
    }
}

/// `POST login/`: username and password in, new token out.
#[post("/login", data = "<credentials>")]
async fn login(
    at: &AdvancedToken,
    ip: Option<IpAddr>,
    credentials: Result<Credentials, Error>,
) -> Result<NoStore<Json<Value>>, Error> {
    let c = credentials?;
    let token = at.login_from(&c.username, &c.password, ip).await?;
    Ok(NoStore(Json(json!({ "token": token }))))
}

/// `GET token/`: is my token valid, and whose is it.
#[get("/token")]
async fn check_token(user: Result<AuthUser, Error>) -> Result<Json<Value>, Error> {
    let user = user?;
    Ok(Json(json!({ "username": user.username })))
}

/// The methods of `token/` that configuration switched off.
fn token_off(at: &AdvancedToken) -> Vec<Method> {
    let mut off = Vec::new();
    if !at.config().allow_rotation {
        off.push(Method::Put);
    }
    if !at.config().allow_logout {
        off.push(Method::Delete);
    }
    off
}

/// `PUT token/`: rotate the token the request authenticated with.
#[put("/token")]
async fn rotate_token(
    at: &AdvancedToken,
    user: Result<AuthUser, Error>,
) -> Result<NoStore<Json<Value>>, Refused> {
    match at.rotate(&user?).await {
        Ok(token) => Ok(NoStore(Json(json!({ "token": token })))),
        Err(e @ (Error::RotationDisabled | Error::RotationLocked)) => {
            let mut off = token_off(at);
            off.push(Method::Put);
            Err(Refused(e, Some(allow("/token", &off))))
        }
        Err(e) => Err(e.into()),
    }
}

/// `DELETE token/`: log this device out (delete only the presented token).
#[delete("/token")]
async fn logout_device(
    at: &AdvancedToken,
    user: Result<AuthUser, Error>,
) -> Result<Json<Value>, Refused> {
    match at.logout_device(&user?).await {
        Ok(()) => Ok(Json(json!({ "detail": "Logged out of this device." }))),
        Err(e @ Error::LogoutDisabled) => Err(Refused(e, Some(allow("/token", &token_off(at))))),
        Err(e) => Err(e.into()),
    }
}

/// `GET tokens/`: the caller's own tokens, the current one marked.
#[get("/tokens")]
async fn list_sessions(
    at: &AdvancedToken,
    user: Result<AuthUser, Error>,
) -> Result<Json<Value>, Error> {
    let sessions = at.sessions(&user?).await?;
    Ok(Json(json!(sessions)))
}

/// `DELETE tokens/<id>`: delete one of the caller's own tokens. Any other
/// id, another user's included, is 404.
#[delete("/tokens/<id>")]
async fn delete_session(
    at: &AdvancedToken,
    user: Result<AuthUser, Error>,
    id: &str,
) -> Result<Json<Value>, Error> {
    let user = user?;
    let id: i64 = id.parse().map_err(|_| Error::TokenNotFound)?;
    at.revoke_own_token(&user, id).await?;
    Ok(Json(json!({ "detail": "Token deleted." })))
}

async fn logout(at: &AdvancedToken, user: Result<AuthUser, Error>) -> Result<Json<Value>, Refused> {
    match at.logout(&user?).await {
        Ok(_) => Ok(Json(json!({ "detail": "Logged out of every device." }))),
        Err(e @ Error::LogoutDisabled) => {
            let off = [Method::Get, Method::Post];
            Err(Refused(e, Some(allow("/logout", &off))))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET logout/`: delete every token of the user (log out everywhere).
#[get("/logout")]
async fn logout_get(
    at: &AdvancedToken,
    user: Result<AuthUser, Error>,
) -> Result<Json<Value>, Refused> {
    logout(at, user).await
}

/// `POST logout/`: the same as `GET`.
#[post("/logout")]
async fn logout_post(
    at: &AdvancedToken,
    user: Result<AuthUser, Error>,
) -> Result<Json<Value>, Refused> {
    logout(at, user).await
}

/// The handler for a method a path does not serve (405), and for `OPTIONS`
/// (204), both with the path's `Allow`.
#[derive(Clone)]
struct Other {
    allow: String,
    options: bool,
}

#[rocket::async_trait]
impl Handler for Other {
    async fn handle<'r>(&self, req: &'r Request<'_>, _data: Data<'r>) -> Outcome<'r> {
        if self.options {
            let res = Response::build()
                .status(Status::NoContent)
                .header(Header::new("Allow", self.allow.clone()))
                .finalize();
            Outcome::Success(res)
        } else {
            Outcome::from(
                req,
                Refused(Error::MethodNotAllowed, Some(self.allow.clone())),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_is_derived_from_the_table() {
        assert_eq!(allow("/login", &[]), "POST, OPTIONS");
        assert_eq!(allow("/token", &[]), "GET, PUT, DELETE, HEAD, OPTIONS");
        assert_eq!(allow("/logout", &[]), "GET, POST, HEAD, OPTIONS");
        assert_eq!(
            allow("/token", &[Method::Put]),
            "GET, DELETE, HEAD, OPTIONS"
        );
        assert_eq!(allow("/tokens", &[]), "GET, HEAD, OPTIONS");
        assert_eq!(allow("/tokens/<id>", &[]), "DELETE, OPTIONS");
        assert_eq!(allow("/logout", &[Method::Get, Method::Post]), "OPTIONS");
    }

    #[get("/token")]
    fn app_token() {}

    #[get("/login")]
    fn login_page() {}

    #[get("/hello")]
    fn hello() {}

    #[test]
    fn the_apps_static_routes_come_first_and_shadowing_is_named() {
        let rocket = rocket::build()
            .mount("/auth", routes())
            .mount("/auth", routes![app_token, login_page])
            .mount("/api", routes![hello]);
        let all: Vec<&Route> = rocket.routes().collect();
        // An app route with a static path (rank -9) is tried before any of
        // the crate's, whatever the mount order.
        let hello = all.iter().find(|r| r.uri.path() == "/api/hello").unwrap();
        let ours = routes();
        assert!(ours.iter().all(|r| r.rank >= RANK && r.rank > hello.rank));
        // `tokens/<id>` keeps its default rank, after the static paths'.
        let id = ours
            .iter()
            .find(|r| r.uri.path() == "/tokens/<id>")
            .unwrap();
        assert_eq!(id.rank, -5);
        // The app's `GET /auth/token` answers instead of the crate's: named.
        // Its `GET /auth/login` takes the place of a 405: not named.
        assert_eq!(
            shadowed(&all),
            vec![(
                Method::Get,
                "/auth/token".to_owned(),
                "app_token".to_owned()
            )]
        );
    }
}

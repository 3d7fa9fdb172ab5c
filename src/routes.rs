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

/// The `Allow` value of `path`: its methods less `off` (switched off by
/// configuration), plus `extra` (the app's own routes at the path), less
/// `refused` (the method a 405 answers), `HEAD` with `GET`, and `OPTIONS`.
fn allow(path: &str, off: &[Method], extra: &[Method], refused: Method) -> String {
    let served = PATHS
        .iter()
        .find(|(p, _)| *p == path)
        .map_or(&[][..], |(_, methods)| *methods);
    let mut methods: Vec<Method> = served
        .iter()
        .filter(|m| !off.contains(m))
        .copied()
        .collect();
    for m in extra {
        if !methods.contains(m) {
            methods.push(*m);
        }
    }
    let head = methods
        .iter()
        .any(|m| matches!(m, Method::Get | Method::Head));
    methods.retain(|m| !matches!(m, Method::Head | Method::Options) && *m != refused);
    let mut out: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
    if head && !matches!(refused, Method::Get | Method::Head) {
        out.push("HEAD");
    }
    out.push("OPTIONS");
    out.join(", ")
}

/// The `Allow` value of the crate's `path` as `req` is answered there: less
/// the methods configuration switched off, plus those of the app's routes at
/// the same path, and never the method of a request answered 405.
fn allow_at(req: &Request<'_>, path: &str) -> String {
    let off = req
        .rocket()
        .state::<AdvancedToken>()
        .map_or_else(Vec::new, |at| switched_off(at, path));
    allow(path, &off, &app_methods(req), req.method())
}

/// The `Allow` value of the crate's `path` (a path of `routes()`, like
/// `/token`) with `at`'s configuration, or with the defaults when `at` is
/// `None`, and no app route at the path: what the demo's OpenAPI document
/// says.
pub(crate) fn configured_allow(path: &str, at: Option<&AdvancedToken>) -> String {
    let off = at.map_or_else(Vec::new, |at| switched_off(at, path));
    allow(path, &off, &[], Method::Options)
}

/// The methods of the crate's `path` that `at`'s configuration switched off.
fn switched_off(at: &AdvancedToken, path: &str) -> Vec<Method> {
    let mut off = Vec::new();
    if path == "/token" && !at.config().allow_rotation {
        off.push(Method::Put);
    }
    if !at.config().allow_logout {
        match path {
            "/token" => off.push(Method::Delete),
            "/logout" => off.extend([Method::Get, Method::Post]),
            _ => {}
        }
    }
    off
}

/// The methods of the app's routes at the path of the crate route that
/// answers `req`.
fn app_methods(req: &Request<'_>) -> Vec<Method> {
    let Some(ours) = req.route() else {
        return Vec::new();
    };
    req.rocket()
        .routes()
        .filter(|r| before_at(r, ours))
        .map(|r| r.method)
        .collect()
}

/// Whether `route` is an app route at the path of the crate's route `ours`:
/// the same written path, ranked before it. (The crate's routes at one path
/// share one rank, so none of them is.)
fn before_at(route: &Route, ours: &Route) -> bool {
    route.rank < ours.rank && path_of(route) == path_of(ours)
}

/// A route's mounted path, without a trailing slash.
fn path_of(route: &Route) -> &str {
    route.uri.path().trim_end_matches('/')
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
        for method in ALL_METHODS.into_iter().filter(|m| !served.contains(m)) {
            let handler = Other {
                path,
                options: false,
            };
            all.push(Route::new(method, path, handler));
        }
        let options = Other {
            path,
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
    let mut found = Vec::new();
    for crate_route in routes.iter().filter(|r| served(r)) {
        let app = routes
            .iter()
            .find(|r| r.method == crate_route.method && before_at(r, crate_route));
        if let Some(app) = app {
            let name = app.name.as_deref().unwrap_or("unnamed").to_owned();
            found.push((crate_route.method, path_of(crate_route).to_owned(), name));
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

/// An error answer; a 405 names its path, for the `Allow` header.
struct Refused(Error, Option<&'static str>);

impl From<Error> for Refused {
    fn from(e: Error) -> Self {
        Refused(e, None)
    }
}

impl<'r> Responder<'r, 'static> for Refused {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let mut res = self.0.respond_to(req)?;
        if let Some(path) = self.1 {
            res.set_header(Header::new("Allow", allow_at(req, path)));
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

/// `PUT token/`: rotate the token the request authenticated with.
#[put("/token")]
async fn rotate_token(
    at: &AdvancedToken,
    user: Result<AuthUser, Error>,
) -> Result<NoStore<Json<Value>>, Refused> {
    match at.rotate(&user?).await {
        Ok(token) => Ok(NoStore(Json(json!({ "token": token })))),
        Err(e @ (Error::RotationDisabled | Error::RotationLocked)) => {
            Err(Refused(e, Some("/token")))
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
        Err(e @ Error::LogoutDisabled) => Err(Refused(e, Some("/token"))),
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
        Err(e @ Error::LogoutDisabled) => Err(Refused(e, Some("/logout"))),
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
    path: &'static str,
    options: bool,
}

#[rocket::async_trait]
impl Handler for Other {
    async fn handle<'r>(&self, req: &'r Request<'_>, _data: Data<'r>) -> Outcome<'r> {
        if self.options {
            let res = Response::build()
                .status(Status::NoContent)
                .header(Header::new("Allow", allow_at(req, self.path)))
                .finalize();
            Outcome::Success(res)
        } else {
            Outcome::from(req, Refused(Error::MethodNotAllowed, Some(self.path)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_is_derived_from_the_table() {
        let none = Method::Options;
        assert_eq!(allow("/login", &[], &[], none), "POST, OPTIONS");
        assert_eq!(
            allow("/token", &[], &[], none),
            "GET, PUT, DELETE, HEAD, OPTIONS"
        );
        assert_eq!(allow("/logout", &[], &[], none), "GET, POST, HEAD, OPTIONS");
        assert_eq!(
            allow("/token", &[Method::Put], &[], none),
            "GET, DELETE, HEAD, OPTIONS"
        );
        assert_eq!(allow("/tokens", &[], &[], none), "GET, HEAD, OPTIONS");
        assert_eq!(allow("/tokens/<id>", &[], &[], none), "DELETE, OPTIONS");
        let off = [Method::Get, Method::Post];
        assert_eq!(allow("/logout", &off, &[], none), "OPTIONS");
        // The app's routes at the path add theirs; HEAD comes with GET.
        assert_eq!(
            allow("/login", &[], &[Method::Get], none),
            "POST, GET, HEAD, OPTIONS"
        );
        // A method switched off but served by the app is allowed...
        let extra = [Method::Put, Method::Options];
        assert_eq!(
            allow("/token", &[Method::Put], &extra, none),
            "GET, DELETE, PUT, HEAD, OPTIONS"
        );
        // ...but never the one a 405 refuses (an app route that did not
        // match the request, or a lock): GET takes HEAD with it.
        assert_eq!(
            allow("/token", &[], &extra, Method::Put),
            "GET, DELETE, HEAD, OPTIONS"
        );
        assert_eq!(
            allow("/login", &[], &[Method::Get], Method::Get),
            "POST, OPTIONS"
        );
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

//! The mountable routes: `login/`, `token/`, `logout/`.
//!
//! Each path answers with and without a trailing slash (Rocket 0.5 route
//! URIs cannot end in `/`, so each route ends in an empty-only `<_..>`
//! tail), and a method a path does not serve gets 405 with `Allow`.

use rocket::data::{self, Data, FromData};
use rocket::http::{Header, Method, Status};
use rocket::request::{self, FromRequest, Request};
use rocket::response::{self, Responder, Response};
use rocket::route::{Handler, Outcome, Route};
use rocket::serde::json::Json;
use rocket::{get, post, put, routes};
use serde_json::{json, Value};

use crate::{AdvancedToken, AuthUser, Error};

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
/// | `POST login/` | 200 `{"token": "..."}` | 400, 401, 413, 415 |
/// | `GET token/` | 200 `{"username": "..."}` | 401 |
/// | `PUT token/` | 200 `{"token": "..."}` (the old token is dead) | 401, 405 |
/// | `GET` or `POST logout/` | 200 `{"detail": "..."}`, every token of the user deleted | 401, 405 |
pub fn routes() -> Vec<Route> {
    let mut all = routes![login, check_token, rotate_token, logout_get, logout_post];
    let paths: [(&str, &[Method], &'static str); 3] = [
        ("/login/<_..>", &[Method::Post], "POST, OPTIONS"),
        ("/token/<_..>", &[Method::Get, Method::Put], "GET, PUT, HEAD, OPTIONS"),
        ("/logout/<_..>", &[Method::Get, Method::Post], "GET, POST, HEAD, OPTIONS"),
    ];
    for (path, served, allow) in paths {
        for method in [Method::Get, Method::Post, Method::Put, Method::Delete, Method::Patch] {
            if !served.contains(&method) {
                all.push(Route::new(method, path, Other { allow, options: false }));
            }
        }
        all.push(Route::new(Method::Options, path, Other { allow, options: true }));
    }
    all
}

/// Succeeds when the request path has nothing after the route's one fixed
/// segment (`login`, `token`, `logout`), i.e. `/auth/login` or
/// `/auth/login/`, but not `/auth/login/x`. Otherwise forwards to a 404.
struct ExactPath;

fn is_exact(req: &Request<'_>) -> bool {
    req.routed_segments(1..).is_empty()
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ExactPath {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> request::Outcome<Self, Self::Error> {
        if is_exact(req) {
            request::Outcome::Success(ExactPath)
        } else {
            request::Outcome::Forward(Status::NotFound)
        }
    }
}

/// `POST login/`: username and password in, new token out.
#[post("/login/<_..>", data = "<credentials>")]
async fn login(
    _path: ExactPath,
    at: &AdvancedToken,
    credentials: Result<Credentials, Error>,
) -> Result<Json<Value>, Error> {
    let c = credentials?;
    let token = at.login(&c.username, &c.password).await?;
    Ok(Json(json!({ "token": token })))
}

/// `GET token/`: is my token valid, and whose is it.
#[get("/token/<_..>")]
async fn check_token(_path: ExactPath, user: Result<AuthUser, Error>) -> Result<Json<Value>, Error> {
    let user = user?;
    Ok(Json(json!({ "username": user.username })))
}

/// `PUT token/`: rotate the token the request authenticated with.
#[put("/token/<_..>")]
async fn rotate_token(
    _path: ExactPath,
    at: &AdvancedToken,
    user: Result<AuthUser, Error>,
) -> Result<Json<Value>, Error> {
    let token = at.rotate(&user?).await?;
    Ok(Json(json!({ "token": token })))
}

async fn logout(at: &AdvancedToken, user: Result<AuthUser, Error>) -> Result<Json<Value>, Error> {
    let user = user?;
    at.logout(&user).await?;
    Ok(Json(json!({ "detail": "Logged out of every device." })))
}

/// `GET logout/`: delete every token of the user (log out everywhere).
#[get("/logout/<_..>")]
async fn logout_get(
    _path: ExactPath,
    at: &AdvancedToken,
    user: Result<AuthUser, Error>,
) -> Result<Json<Value>, Error> {
    logout(at, user).await
}

/// `POST logout/`: the same as `GET`.
#[post("/logout/<_..>")]
async fn logout_post(
    _path: ExactPath,
    at: &AdvancedToken,
    user: Result<AuthUser, Error>,
) -> Result<Json<Value>, Error> {
    logout(at, user).await
}

/// The handler for a method a path does not serve (405), and for `OPTIONS`.
#[derive(Clone)]
struct Other {
    allow: &'static str,
    options: bool,
}

struct Allow(&'static str);

impl<'r> Responder<'r, 'static> for Allow {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        Response::build()
            .status(Status::NoContent)
            .header(Header::new("Allow", self.0))
            .ok()
    }
}

#[rocket::async_trait]
impl Handler for Other {
    async fn handle<'r>(&self, req: &'r Request<'_>, data: Data<'r>) -> Outcome<'r> {
        if !is_exact(req) {
            return Outcome::forward(data, Status::NotFound);
        }
        if self.options {
            Outcome::from(req, Allow(self.allow))
        } else {
            Outcome::from(req, Error::MethodNotAllowed(self.allow))
        }
    }
}

// ----- the login body ------------------------------------------------------

/// A username and password, from a JSON, form-urlencoded or multipart body,
/// validated the way DRF's `AuthTokenSerializer` does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

const REQUIRED: &str = "This field is required.";
const BLANK: &str = "This field may not be blank.";
const NULL: &str = "This field may not be null.";
const NOT_STRING: &str = "Not a valid string.";

/// What a body said about one field.
#[derive(Debug)]
enum Field {
    Missing,
    Null,
    NotString,
    Text(String),
}

impl Credentials {
    /// DRF's field checks: required, not null, a string, not blank. The
    /// username is trimmed (DRF's `CharField` default); the password is not
    /// (`trim_whitespace=False`).
    fn validate(username: Field, password: Field) -> Result<Credentials, Error> {
        fn check(field: Field, trim: bool) -> Result<String, &'static str> {
            match field {
                Field::Missing => Err(REQUIRED),
                Field::Null => Err(NULL),
                Field::NotString => Err(NOT_STRING),
                Field::Text(s) => {
                    let s = if trim { s.trim().to_owned() } else { s };
                    if s.is_empty() {
                        Err(BLANK)
                    } else {
                        Ok(s)
                    }
                }
            }
        }
        let u = check(username, true);
        let p = check(password, false);
        match (u, p) {
            (Ok(username), Ok(password)) => Ok(Credentials { username, password }),
            (u, p) => {
                let mut errors = Vec::new();
                if let Err(m) = u {
                    errors.push(("username".to_owned(), vec![m.to_owned()]));
                }
                if let Err(m) = p {
                    errors.push(("password".to_owned(), vec![m.to_owned()]));
                }
                Err(Error::Validation(errors))
            }
        }
    }

    /// Parses a JSON body.
    pub(crate) fn from_json(bytes: &[u8]) -> Result<Credentials, Error> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::BadRequest(format!("JSON parse error - {e}")))?;
        let Value::Object(map) = value else {
            let kind = match value {
                Value::Array(_) => "list",
                Value::String(_) => "str",
                Value::Number(ref n) if n.is_f64() => "float",
                Value::Number(_) => "int",
                Value::Bool(_) => "bool",
                _ => "NoneType",
            };
            return Err(Error::Validation(vec![(
                "non_field_errors".into(),
                vec![format!("Invalid data. Expected a dictionary, but got {kind}.")],
            )]));
        };
        let field = |name: &str| match map.get(name) {
            None => Field::Missing,
            Some(Value::Null) => Field::Null,
            Some(Value::String(s)) => Field::Text(s.clone()),
            Some(_) => Field::NotString,
        };
        Credentials::validate(field("username"), field("password"))
    }

    /// Parses an `application/x-www-form-urlencoded` body. A repeated field
    /// takes its last value, as Django's `QueryDict` does.
    pub(crate) fn from_urlencoded(bytes: &[u8]) -> Result<Credentials, Error> {
        let (mut username, mut password) = (Field::Missing, Field::Missing);
        for (k, v) in form_urlencoded::parse(bytes) {
            match k.as_ref() {
                "username" => username = Field::Text(v.into_owned()),
                "password" => password = Field::Text(v.into_owned()),
                _ => {}
            }
        }
        Credentials::validate(username, password)
    }

    /// Parses a `multipart/form-data` body. File parts are not fields.
    pub(crate) async fn from_multipart(bytes: Vec<u8>, boundary: &str) -> Result<Credentials, Error> {
        let bad = |e: multer::Error| Error::BadRequest(format!("Multipart form parse error - {e}"));
        let mut form = multer::Multipart::with_reader(std::io::Cursor::new(bytes), boundary);
        let (mut username, mut password) = (Field::Missing, Field::Missing);
        while let Some(part) = form.next_field().await.map_err(bad)? {
            if part.file_name().is_some() {
                continue;
            }
            let name = part.name().map(str::to_owned);
            let bytes = part.bytes().await.map_err(bad)?;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match name.as_deref() {
                Some("username") => username = Field::Text(text),
                Some("password") => password = Field::Text(text),
                _ => {}
            }
        }
        Credentials::validate(username, password)
    }
}

#[rocket::async_trait]
impl<'r> FromData<'r> for Credentials {
    type Error = Error;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        let fail = |e: Error| data::Outcome::Error((e.status(), e));
        let limit = req
            .rocket()
            .state::<AdvancedToken>()
            .map(|at| at.config().body_limit)
            .unwrap_or_else(|| crate::Config::default().body_limit);

        enum Kind {
            Json,
            Form,
            Multipart(String),
            Empty,
        }
        let kind = match req.content_type() {
            None => Kind::Empty,
            Some(ct) if ct.is_json() => Kind::Json,
            Some(ct) if ct.is_form() => Kind::Form,
            Some(ct) if ct.is_form_data() => match ct.param("boundary") {
                Some(b) if !b.is_empty() => Kind::Multipart(b.to_owned()),
                _ => {
                    return fail(Error::BadRequest(
                        "Multipart form parse error - Invalid boundary in multipart: None".into(),
                    ))
                }
            },
            Some(ct) => return fail(Error::UnsupportedMediaType(ct.media_type().to_string())),
        };

        let bytes = match data.open(limit).into_bytes().await {
            Ok(b) if b.is_complete() => b.into_inner(),
            Ok(_) => return fail(Error::PayloadTooLarge),
            Err(e) => return fail(Error::BadRequest(format!("Could not read the request body: {e}"))),
        };

        let parsed = match kind {
            // DRF: no content type means no data, whatever the body holds.
            Kind::Empty => Credentials::validate(Field::Missing, Field::Missing),
            Kind::Json => Credentials::from_json(&bytes),
            Kind::Form => Credentials::from_urlencoded(&bytes),
            Kind::Multipart(boundary) => Credentials::from_multipart(bytes, &boundary).await,
        };
        match parsed {
            Ok(c) => data::Outcome::Success(c),
            Err(e) => fail(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(e: Error) -> Value {
        e.body()
    }

    #[test]
    fn json_happy_path() {
        let c = Credentials::from_json(br#"{"username": " alice ", "password": " pw "}"#).unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.password, " pw ");
    }

    #[test]
    fn json_field_errors() {
        let e = Credentials::from_json(b"{}").unwrap_err();
        assert_eq!(fields(e), json!({"username": [REQUIRED], "password": [REQUIRED]}));
        let e = Credentials::from_json(br#"{"username": "", "password": 5}"#).unwrap_err();
        assert_eq!(fields(e), json!({"username": [BLANK], "password": [NOT_STRING]}));
        let e = Credentials::from_json(br#"{"username": null, "password": "x"}"#).unwrap_err();
        assert_eq!(fields(e), json!({"username": [NULL]}));
        let e = Credentials::from_json(br#"[1, 2]"#).unwrap_err();
        assert_eq!(e.status(), Status::BadRequest);
        assert!(e.body()["non_field_errors"][0].as_str().unwrap().contains("list"));
        let e = Credentials::from_json(b"{\"username\": \"\xff\"}").unwrap_err();
        assert_eq!(e.status(), Status::BadRequest);
        let e = Credentials::from_json(b"{").unwrap_err();
        assert!(e.body()["detail"].as_str().unwrap().starts_with("JSON parse error"));
    }

    #[test]
    fn urlencoded() {
        let c = Credentials::from_urlencoded(b"username=al%20ice&password=p%26w&username=bob").unwrap();
        assert_eq!(c, Credentials { username: "bob".into(), password: "p&w".into() });
        let e = Credentials::from_urlencoded(b"username=&x=1").unwrap_err();
        assert_eq!(fields(e), json!({"username": [BLANK], "password": [REQUIRED]}));
        assert!(Credentials::from_urlencoded(b"username=\xff\xfe&password=\x00").is_ok());
    }

    #[rocket::async_test]
    async fn multipart() {
        let body = "--XX\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n\
                    --XX\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nsecret\r\n--XX--\r\n";
        let c = Credentials::from_multipart(body.as_bytes().to_vec(), "XX").await.unwrap();
        assert_eq!(c, Credentials { username: "alice".into(), password: "secret".into() });
        let e = Credentials::from_multipart(b"garbage".to_vec(), "XX").await.unwrap_err();
        assert_eq!(e.status(), Status::BadRequest);
    }
}

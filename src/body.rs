//! The login body: a username and password from a JSON, form-urlencoded or
//! multipart body, validated the way DRF's `AuthTokenSerializer` does.

use std::time::Duration;

use rocket::data::{self, ByteUnit, Data, FromData, ToByteUnit};
use rocket::request::Request;
use rocket::tokio::io::{self, AsyncReadExt};
use rocket::tokio::time::timeout;
use serde_json::Value;

use crate::config::Config;
use crate::error::Error;

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

/// Whether Python's `str.isspace()` holds for `c`, i.e. whether `str.strip()`
/// removes it: Rust's whitespace plus the separators U+001C..=U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The one normalisation of a username the crate applies before looking it
/// up, in the login route and in [`AdvancedToken::login()`](crate::AdvancedToken::login)
/// alike: surrounding whitespace is removed, as DRF's `AuthTokenSerializer`
/// does (`CharField(trim_whitespace=True)`, i.e. Python's `str.strip()`).
/// Stored usernames never hold whitespace, so nothing else can match.
pub(crate) fn normalize_username(username: &str) -> &str {
    username.trim_matches(is_py_space)
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
                    let s = if trim {
                        normalize_username(&s).to_owned()
                    } else {
                        s
                    };
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
                vec![format!(
                    "Invalid data. Expected a dictionary, but got {kind}."
                )],
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
    pub(crate) async fn from_multipart(
        bytes: Vec<u8>,
        boundary: &str,
    ) -> Result<Credentials, Error> {
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

/// The most of an oversized body read and thrown away before answering 413,
/// and the longest time spent on it.
const DRAIN_BYTES: u64 = 8 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads the body, at most `limit` bytes within `within`.
///
/// * Not complete within `within`: [`Error::RequestTimeout`] (408), so a
///   client that sends headers and then trickles its body cannot hold the
///   connection.
/// * Over `limit`: [`Error::PayloadTooLarge`] (413), but only after reading
///   and discarding the rest of the body (up to [`DRAIN_BYTES`] within
///   [`DRAIN_TIME`]). Answering at once left unread data in the server's
///   socket when hyper closed it, so the kernel sent a reset that destroyed
///   the 413 before clients that write their whole body before reading
///   (Python's http.client, requests) could read it.
async fn read_body(data: Data<'_>, limit: ByteUnit, within: Duration) -> Result<Vec<u8>, Error> {
    let max = limit.as_u64();
    let mut stream = data.open(limit + DRAIN_BYTES.bytes());
    let mut bytes = Vec::new();
    let mut head = (&mut stream).take(max + 1);
    match timeout(within, head.read_to_end(&mut bytes)).await {
        Err(_) => return Err(Error::RequestTimeout),
        Ok(Err(e)) => {
            return Err(Error::BadRequest(format!(
                "Could not read the request body: {e}"
            )))
        }
        Ok(Ok(_)) if bytes.len() as u64 <= max => return Ok(bytes),
        Ok(Ok(_)) => {}
    }
    // Over the limit: drain what is left, within bounds, then refuse.
    let _ = timeout(DRAIN_TIME, io::copy(&mut stream, &mut io::sink())).await;
    Err(Error::PayloadTooLarge)
}

#[rocket::async_trait]
impl<'r> FromData<'r> for Credentials {
    type Error = Error;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        let fail = |e: Error| data::Outcome::Error((e.status(), e));
        let (limit, body_timeout) = req.rocket().state::<Config>().map_or_else(
            || (Config::default().body_limit, Config::default().body_timeout),
            |c| (c.body_limit, c.body_timeout),
        );

        enum Kind {
            Json,
            Form,
            Multipart(String),
            Empty,
        }
        let kind = match req.content_type() {
            // A Content-Type header Rocket could not parse is a media type
            // we do not support, not a request without one.
            None => match req.headers().get_one("Content-Type") {
                Some(raw) if !raw.trim().is_empty() => {
                    return fail(Error::UnsupportedMediaType(raw.trim().to_owned()))
                }
                _ => Kind::Empty,
            },
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

        let bytes = match read_body(data, limit, Duration::from_secs_f64(body_timeout)).await {
            Ok(b) => b,
            Err(e) => return fail(e),
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
    use rocket::http::Status;
    use serde_json::json;

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
        assert_eq!(
            fields(e),
            json!({"username": [REQUIRED], "password": [REQUIRED]})
        );
        let e = Credentials::from_json(br#"{"username": "", "password": 5}"#).unwrap_err();
        assert_eq!(
            fields(e),
            json!({"username": [BLANK], "password": [NOT_STRING]})
        );
        let e = Credentials::from_json(br#"{"username": null, "password": "x"}"#).unwrap_err();
        assert_eq!(fields(e), json!({"username": [NULL]}));
        let e = Credentials::from_json(br#"[1, 2]"#).unwrap_err();
        assert_eq!(e.status(), Status::BadRequest);
        assert!(e.body()["non_field_errors"][0]
            .as_str()
            .unwrap()
            .contains("list"));
        let e = Credentials::from_json(b"{\"username\": \"\xff\"}").unwrap_err();
        assert_eq!(e.status(), Status::BadRequest);
        let e = Credentials::from_json(b"{").unwrap_err();
        assert!(e.body()["detail"]
            .as_str()
            .unwrap()
            .starts_with("JSON parse error"));
    }

    #[test]
    fn urlencoded() {
        let c =
            Credentials::from_urlencoded(b"username=al%20ice&password=p%26w&username=bob").unwrap();
        assert_eq!(
            c,
            Credentials {
                username: "bob".into(),
                password: "p&w".into()
            }
        );
        let e = Credentials::from_urlencoded(b"username=&x=1").unwrap_err();
        assert_eq!(
            fields(e),
            json!({"username": [BLANK], "password": [REQUIRED]})
        );
        assert!(Credentials::from_urlencoded(b"username=\xff\xfe&password=\x00").is_ok());
    }

    #[rocket::async_test]
    async fn multipart() {
        let body = "--XX\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n\
                    --XX\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nsecret\r\n--XX--\r\n";
        let c = Credentials::from_multipart(body.as_bytes().to_vec(), "XX")
            .await
            .unwrap();
        assert_eq!(
            c,
            Credentials {
                username: "alice".into(),
                password: "secret".into()
            }
        );
        let e = Credentials::from_multipart(b"garbage".to_vec(), "XX")
            .await
            .unwrap_err();
        assert_eq!(e.status(), Status::BadRequest);
    }

    // ----- property tests ---------------------------------------------------

    use proptest::prelude::*;
    use rocket::tokio::runtime::Builder;

    /// Characters Python's `str.isspace()` accepts, which `str.strip()` (and
    /// so DRF's `CharField(trim_whitespace=True)`) removes. Listed from
    /// CPython, independently of Rust's `char::is_whitespace`.
    const PY_STR_WS: &[char] = &[
        '\t', '\n', '\u{b}', '\u{c}', '\r', '\u{1c}', '\u{1d}', '\u{1e}', '\u{1f}', ' ', '\u{85}',
        '\u{a0}', '\u{1680}', '\u{2000}', '\u{2001}', '\u{2002}', '\u{2003}', '\u{2004}',
        '\u{2005}', '\u{2006}', '\u{2007}', '\u{2008}', '\u{2009}', '\u{200a}', '\u{2028}',
        '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}',
    ];

    /// A value a generated body gives one field.
    #[derive(Debug, Clone)]
    enum Gen {
        Missing,
        Null,
        Str(String),
        /// Any other JSON value: a number, a bool, an array, an object.
        Other(Value),
    }

    /// What DRF's `AuthTokenSerializer` says about one field: its value, or
    /// the one message for it.
    fn model_field(g: &Gen, trim: bool) -> Result<String, &'static str> {
        match g {
            Gen::Missing => Err("This field is required."),
            Gen::Null => Err("This field may not be null."),
            Gen::Other(_) => Err("Not a valid string."),
            Gen::Str(s) => {
                let v = if trim {
                    s.trim_matches(PY_STR_WS)
                } else {
                    s.as_str()
                };
                if v.is_empty() {
                    Err("This field may not be blank.")
                } else {
                    Ok(v.to_owned())
                }
            }
        }
    }

    /// DRF's answer for a body with these two fields.
    fn model(username: &Gen, password: &Gen) -> Result<Credentials, Error> {
        match (model_field(username, true), model_field(password, false)) {
            (Ok(username), Ok(password)) => Ok(Credentials { username, password }),
            (u, p) => {
                let mut errors = Vec::new();
                for (name, r) in [("username", u), ("password", p)] {
                    if let Err(m) = r {
                        errors.push((name.to_owned(), vec![m.to_owned()]));
                    }
                }
                Err(Error::Validation(errors))
            }
        }
    }

    /// Strings that stress blank and trim handling, and anything at all.
    fn text() -> impl Strategy<Value = String> {
        let ws = prop::sample::select(PY_STR_WS.to_vec());
        prop_oneof![
            Just(String::new()),
            prop::collection::vec(ws.clone(), 1..4).prop_map(|v| v.into_iter().collect()),
            (
                prop::collection::vec(ws.clone(), 0..3),
                "[a-zA-Z0-9@.+_-]{1,10}( [a-z]{1,4})?",
                prop::collection::vec(ws, 0..3),
            )
                .prop_map(|(a, s, b)| {
                    a.into_iter().chain(s.chars()).chain(b).collect::<String>()
                }),
            "[\u{0}-\u{20}\u{7f}-\u{a0}a]{0,5}",
            any::<String>(),
        ]
    }

    fn json_field() -> impl Strategy<Value = Gen> {
        prop_oneof![
            1 => Just(Gen::Missing),
            1 => Just(Gen::Null),
            6 => text().prop_map(Gen::Str),
            1 => any::<i64>().prop_map(|n| Gen::Other(json!(n))),
            1 => any::<u64>().prop_map(|n| Gen::Other(json!(n))),
            1 => (-1e300f64..1e300).prop_map(|n| Gen::Other(json!(n))),
            1 => any::<bool>().prop_map(|b| Gen::Other(json!(b))),
            1 => prop::collection::vec(text(), 0..3).prop_map(|v| Gen::Other(json!(v))),
            1 => text().prop_map(|s| Gen::Other(json!({ "value": s }))),
        ]
    }

    fn json_body(username: &Gen, password: &Gen, extra: &Option<(String, String)>) -> Vec<u8> {
        let mut map = serde_json::Map::new();
        if let Some((k, v)) = extra {
            map.insert(k.clone(), json!(v));
        }
        for (name, g) in [("username", username), ("password", password)] {
            match g {
                Gen::Missing => {}
                Gen::Null => {
                    map.insert(name.into(), Value::Null);
                }
                Gen::Str(s) => {
                    map.insert(name.into(), json!(s));
                }
                Gen::Other(v) => {
                    map.insert(name.into(), v.clone());
                }
            }
        }
        serde_json::to_vec(&Value::Object(map)).unwrap()
    }

    /// A parse result as the client sees it: the credentials, or the status
    /// and body of the error.
    fn answer(r: Result<Credentials, Error>) -> Result<Credentials, (u16, Value)> {
        r.map_err(|e| (e.status().code, e.body()))
    }

    /// Runs the async multipart parser to completion.
    fn run_multipart(body: Vec<u8>, boundary: &str) -> Result<Credentials, Error> {
        let rt = Builder::new_current_thread().build().unwrap();
        rt.block_on(Credentials::from_multipart(body, boundary))
    }

    /// Every parse error of a login body is a 400.
    fn is_400<T: std::fmt::Debug>(r: &Result<T, Error>) -> Result<(), TestCaseError> {
        if let Err(e) = r {
            prop_assert_eq!(e.status(), Status::BadRequest, "{:?}", e);
            prop_assert!(
                matches!(e, Error::Validation(_) | Error::BadRequest(_)),
                "{:?}",
                e
            );
        }
        Ok(())
    }

    /// What every successful parse must satisfy.
    fn well_formed_ok(r: &Result<Credentials, Error>) -> Result<(), TestCaseError> {
        if let Ok(c) = r {
            prop_assert!(!c.username.is_empty());
            prop_assert!(!c.password.is_empty());
            prop_assert_eq!(c.username.trim_matches(PY_STR_WS), c.username.as_str());
        }
        Ok(())
    }

    #[test]
    fn py_space_is_pythons_isspace() {
        for c in (0..=0x10ffff).filter_map(char::from_u32) {
            assert_eq!(is_py_space(c), PY_STR_WS.contains(&c), "{c:?}");
        }
    }

    proptest! {
        #[test]
        fn json_objects_follow_drf(
            username in json_field(),
            password in json_field(),
            extra in proptest::option::of(("[a-z_]{1,9}", text())),
        ) {
            // An extra key named like a field would be overwritten; keep it other.
            let extra = extra.filter(|(k, _)| k != "username" && k != "password");
            let body = json_body(&username, &password, &extra);
            let got = Credentials::from_json(&body);
            prop_assert_eq!(answer(got), answer(model(&username, &password)), "body {}", String::from_utf8_lossy(&body));
        }

        #[test]
        fn json_arbitrary_bytes_are_ok_or_400(body in any::<Vec<u8>>()) {
            let r = Credentials::from_json(&body);
            is_400(&r)?;
            well_formed_ok(&r)?;
        }

        #[test]
        fn json_like_text_is_ok_or_400(
            body in r#"[{}\[\]":, \\u0-9a-z.eE+-]{0,40}|\{"username": ?"[^"]{0,8}", ?"password": ?[^}]{0,8}\}"#,
        ) {
            let r = Credentials::from_json(body.as_bytes());
            is_400(&r)?;
            well_formed_ok(&r)?;
        }

        #[test]
        fn urlencoded_arbitrary_bytes_are_ok_or_400(body in any::<Vec<u8>>()) {
            let r = Credentials::from_urlencoded(&body);
            is_400(&r)?;
            well_formed_ok(&r)?;
        }

        #[test]
        fn urlencoded_form_like_text_is_ok_or_400(
            body in "((username|password|x)(=[a-z%0-9A-F+ \u{1c}]{0,6})?&?){0,5}",
        ) {
            let r = Credentials::from_urlencoded(body.as_bytes());
            is_400(&r)?;
            well_formed_ok(&r)?;
        }

        #[test]
        fn urlencoded_round_trips(
            username in proptest::option::of(text()),
            password in proptest::option::of(text()),
            extra in proptest::option::of(("[a-z_]{1,9}", text())),
            extra_first in any::<bool>(),
        ) {
            let mut form = form_urlencoded::Serializer::new(String::new());
            let extra = extra.filter(|(k, _)| k != "username" && k != "password");
            if let (Some((k, v)), true) = (&extra, extra_first) {
                form.append_pair(k, v);
            }
            if let Some(u) = &username {
                form.append_pair("username", u);
            }
            if let Some(p) = &password {
                form.append_pair("password", p);
            }
            if let (Some((k, v)), false) = (&extra, extra_first) {
                form.append_pair(k, v);
            }
            let body = form.finish();
            let gen = |v: &Option<String>| v.clone().map_or(Gen::Missing, Gen::Str);
            let got = Credentials::from_urlencoded(body.as_bytes());
            prop_assert_eq!(answer(got), answer(model(&gen(&username), &gen(&password))), "body {}", body);
        }

        #[test]
        fn multipart_arbitrary_bytes_are_ok_or_400(
            body in any::<Vec<u8>>(),
            boundary in "[!-~]{1,12}",
        ) {
            let r = run_multipart(body, &boundary);
            is_400(&r)?;
            well_formed_ok(&r)?;
        }

        #[test]
        fn multipart_mangled_forms_are_ok_or_400(
            username in text(),
            cut in any::<prop::sample::Index>(),
            junk in prop::collection::vec(any::<u8>(), 0..8),
        ) {
            let body = format!(
                "--XX\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\n{username}\r\n\
                 --XX\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\npw\r\n--XX--\r\n"
            );
            let mut bytes = body.into_bytes();
            let at = cut.index(bytes.len());
            bytes.splice(at..at, junk);
            let r = run_multipart(bytes, "XX");
            is_400(&r)?;
            well_formed_ok(&r)?;
        }

        #[test]
        fn multipart_forms_follow_drf(
            username in proptest::option::of(text()),
            password in proptest::option::of(text()),
            file_named_username in any::<bool>(),
        ) {
            // Text that cannot contain the delimiter line.
            let boundary = "----proptestBoundary7MA4YWxkTrZu0gW";
            let mut body = String::new();
            if file_named_username {
                body.push_str(&format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"username\"; \
                     filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile\r\n"
                ));
            }
            for (name, v) in [("username", &username), ("password", &password)] {
                if let Some(v) = v {
                    body.push_str(&format!(
                        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{v}\r\n"
                    ));
                }
            }
            body.push_str(&format!("--{boundary}--\r\n"));
            let gen = |v: &Option<String>| v.clone().map_or(Gen::Missing, Gen::Str);
            let got = run_multipart(body.clone().into_bytes(), boundary);
            prop_assert_eq!(answer(got), answer(model(&gen(&username), &gen(&password))), "body {:?}", body);
        }
    }
}

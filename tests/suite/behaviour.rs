//! The behavioural suite, written once and run against every backend
//! (instantiated in main.rs). Each function gets a fresh database.

use rocket::http::{ContentType, Header, Method, Status};
use rocket::local::asynchronous::Client;
use serde_json::{json, Value};

use crate::common::*;

const PW: &str = "correct horse battery staple";

async fn alice(db: &TestDb, settings: Value) -> (Client, String) {
    let client = client(db, settings).await;
    at(&client).create_user("alice", PW).await.unwrap();
    let token = login(&client, "alice", PW).await;
    (client, token)
}

// ----- 1. login --------------------------------------------------------------

pub async fn login_accepts_json_form_and_multipart(db: TestDb) {
    let client = client(&db, json!({})).await;
    at(&client).create_user("alice", PW).await.unwrap();

    let res = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .body(json!({"username": "alice", "password": PW}).to_string())
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(res.content_type(), Some(ContentType::JSON));
    let body = body_json(res).await;
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let t1 = body["token"].as_str().unwrap().to_owned();
    assert_eq!(t1.len(), 64);

    let form = format!("username=alice&password={}", PW.replace(' ', "+"));
    let res = client
        .post("/auth/login")
        .header(ContentType::Form)
        .body(form)
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    let t2 = body_json(res).await["token"].as_str().unwrap().to_owned();

    let multipart = format!(
        "--BOUNDARY\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n\
         --BOUNDARY\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\n{PW}\r\n--BOUNDARY--\r\n"
    );
    let res = client
        .post("/auth/login/")
        .header(ContentType::new("multipart", "form-data").with_params(("boundary", "BOUNDARY")))
        .body(multipart)
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    let t3 = body_json(res).await["token"].as_str().unwrap().to_owned();

    // Every login issues a new token, and all of them keep working.
    assert!(t1 != t2 && t2 != t3 && t1 != t3);
    for t in [&t1, &t2, &t3] {
        assert_eq!(check(&client, t).await, Status::Ok);
    }
}

pub async fn login_ignores_the_authorization_header(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    for header in [
        format!("Token {token}"),
        "Token bogus".into(),
        "Token".into(),
        "Token a b c".into(),
    ] {
        let res = client
            .post("/auth/login/")
            .header(ContentType::JSON)
            .header(Header::new("Authorization", header))
            .body(json!({"username": "alice", "password": PW}).to_string())
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::Ok);
    }
}

pub async fn login_failures_are_indistinguishable(db: TestDb) {
    let client = client(&db, json!({})).await;
    at(&client).create_user("alice", PW).await.unwrap();
    at(&client).create_user("inactive", PW).await.unwrap();
    at(&client).deactivate_user("inactive").await.unwrap();

    let mut replies = Vec::new();
    for (user, pw) in [
        ("alice", "wrong"),
        ("nobody", PW),
        ("inactive", PW),
        ("Alice", PW),
        ("ALICE", PW),
    ] {
        // The same argon2 work for each: one verification (a dummy hash
        // for an unknown user), as for a correct login.
        let ops = at(&client).password_operations();
        let res = client
            .post("/auth/login/")
            .header(ContentType::JSON)
            .body(json!({"username": user, "password": pw}).to_string())
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::Unauthorized, "{user}");
        assert_eq!(res.headers().get_one("WWW-Authenticate"), Some("Token"));
        assert_eq!(res.content_type(), Some(ContentType::JSON));
        replies.push(res.into_bytes().await.unwrap());
        assert_eq!(
            at(&client).password_operations() - ops,
            1,
            "argon2 operations for {user:?}"
        );
    }
    let ops = at(&client).password_operations();
    login(&client, "alice", PW).await;
    assert_eq!(
        at(&client).password_operations() - ops,
        1,
        "a correct login"
    );
    assert!(replies.windows(2).all(|w| w[0] == w[1]));
    let body: Value = serde_json::from_slice(&replies[0]).unwrap();
    assert_eq!(
        body,
        json!({"detail": "Unable to log in with provided credentials."})
    );
}

pub async fn login_validates_its_body(db: TestDb) {
    let client = client(&db, json!({})).await;
    let post = |ct: Option<ContentType>, body: Vec<u8>| {
        let mut req = client.post("/auth/login/").body(body);
        if let Some(ct) = ct {
            req = req.header(ct);
        }
        async move {
            let res = req.dispatch().await;
            let status = res.status();
            let ct = res.content_type();
            (status, ct, body_json(res).await)
        }
    };
    let j = || Some(ContentType::JSON);
    let req = "This field is required.";
    let blank = "This field may not be blank.";

    let cases: Vec<(Option<ContentType>, &[u8], Status, Value)> = vec![
        (
            j(),
            b"{}",
            Status::BadRequest,
            json!({"username": [req], "password": [req]}),
        ),
        (
            j(),
            br#"{"username": "alice"}"#,
            Status::BadRequest,
            json!({"password": [req]}),
        ),
        (
            j(),
            br#"{"username": "", "password": "x"}"#,
            Status::BadRequest,
            json!({"username": [blank]}),
        ),
        (
            j(),
            br#"{"username": "  ", "password": ""}"#,
            Status::BadRequest,
            json!({"username": [blank], "password": [blank]}),
        ),
        (
            j(),
            br#"{"username": 1, "password": ["x"]}"#,
            Status::BadRequest,
            json!({"username": ["Not a valid string."], "password": ["Not a valid string."]}),
        ),
        (
            j(),
            br#"{"username": null, "password": {"a": 1}}"#,
            Status::BadRequest,
            json!({"username": ["This field may not be null."], "password": ["Not a valid string."]}),
        ),
        (
            Some(ContentType::Form),
            b"username=&password=",
            Status::BadRequest,
            json!({"username": [blank], "password": [blank]}),
        ),
        (
            Some(ContentType::Form),
            b"",
            Status::BadRequest,
            json!({"username": [req], "password": [req]}),
        ),
        (
            None,
            b"",
            Status::BadRequest,
            json!({"username": [req], "password": [req]}),
        ),
    ];
    for (ct, body, status, expected) in cases {
        let (got, got_ct, got_body) = post(ct.clone(), body.to_vec()).await;
        assert_eq!(got, status, "{ct:?} {:?}", String::from_utf8_lossy(body));
        assert_eq!(got_ct, Some(ContentType::JSON));
        assert_eq!(got_body, expected, "{:?}", String::from_utf8_lossy(body));
    }

    // Malformed JSON and bytes that are not UTF-8: 400 with DRF's
    // "JSON parse error - ..." detail.
    for body in [
        &b"{"[..],
        b"not json",
        b"\xff\xfe{}",
        b"{\"username\": \"\xff\"}",
    ] {
        let (status, ct, body_v) = post(j(), body.to_vec()).await;
        let shown = String::from_utf8_lossy(body);
        assert_eq!(status, Status::BadRequest, "{shown:?}");
        assert_eq!(ct, Some(ContentType::JSON));
        assert_eq!(body_v.as_object().unwrap().len(), 1, "{body_v}");
        let detail = body_v["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with("JSON parse error - "),
            "{shown:?}: {body_v}"
        );
    }
    // Well-formed JSON that is not an object: DRF's non_field_errors.
    for (body, kind) in [
        (&b"[1,2]"[..], "list"),
        (b"\"str\"", "str"),
        (b"42", "int"),
        (b"4.5", "float"),
        (b"true", "bool"),
        (b"null", "NoneType"),
    ] {
        let (status, ct, body_v) = post(j(), body.to_vec()).await;
        assert_eq!(status, Status::BadRequest);
        assert_eq!(ct, Some(ContentType::JSON));
        assert_eq!(
            body_v,
            json!({"non_field_errors": [format!("Invalid data. Expected a dictionary, but got {kind}.")]})
        );
    }

    // Other content types: 415 with a detail.
    for ct in [
        ContentType::Plain,
        ContentType::XML,
        ContentType::new("application", "octet-stream"),
    ] {
        let (status, _, body) = post(Some(ct), b"username=a&password=b".to_vec()).await;
        assert_eq!(status, Status::UnsupportedMediaType);
        assert!(body["detail"]
            .as_str()
            .unwrap()
            .contains("Unsupported media type"));
    }

    // A Content-Type Rocket cannot parse is unsupported too, not missing.
    let res = client
        .post("/auth/login/")
        .header(Header::new("Content-Type", "garbage"))
        .body("username=a&password=b")
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::UnsupportedMediaType);
    let body: Value = serde_json::from_str(&res.into_string().await.unwrap()).unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("garbage"),
        "{body}"
    );

    // Multipart without a boundary, or garbage: 400, never 500.
    let (status, _, _) = post(Some(ContentType::FormData), b"garbage".to_vec()).await;
    assert_eq!(status, Status::BadRequest);
    let ct = ContentType::new("multipart", "form-data").with_params(("boundary", "X"));
    let (status, _, _) = post(Some(ct), b"--X\r\ngarbage".to_vec()).await;
    assert_eq!(status, Status::BadRequest);
}

pub async fn login_body_size_is_capped(db: TestDb) {
    let client = client(&db, json!({})).await;
    at(&client).create_user("alice", PW).await.unwrap();
    let big = json!({"username": "alice", "password": "x".repeat(5000)}).to_string();
    let res = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .body(big)
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::PayloadTooLarge);
    assert_eq!(
        body_json(res).await,
        json!({"detail": "Request body is too large."})
    );
    let huge = vec![b'a'; 2 << 20];
    let res = client
        .post("/auth/login/")
        .header(ContentType::Form)
        .body(huge)
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::PayloadTooLarge);
    drop(res);
    // A custom, larger limit lets the same body through to the password check.
    let client = self::client(&db, json!({"body_limit": "16 KiB"})).await;
    let big = json!({"username": "alice", "password": "x".repeat(5000)}).to_string();
    let res = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .body(big)
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Unauthorized);
}

// ----- 2-4. token check, rotation, logout -------------------------------------

pub async fn token_check(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    for path in ["/auth/token/", "/auth/token"] {
        let res = client.get(path).header(auth(&token)).dispatch().await;
        assert_eq!(res.status(), Status::Ok);
        assert_eq!(body_json(res).await, json!({"username": "alice"}));
    }
    let res = client.get("/auth/token/").dispatch().await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(check(&client, &"0".repeat(64)).await, Status::Unauthorized);
}

pub async fn rotation_kills_only_the_old_token(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    let other = login(&client, "alice", PW).await;
    let res = client
        .put("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    let body = body_json(res).await;
    let new = body["token"].as_str().unwrap().to_owned();
    assert_ne!(new, token);
    assert_eq!(check(&client, &token).await, Status::Unauthorized);
    assert_eq!(check(&client, &new).await, Status::Ok);
    assert_eq!(check(&client, &other).await, Status::Ok);
    // The old token cannot rotate again.
    let res = client
        .put("/auth/token")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(res.headers().get_one("WWW-Authenticate"), Some("Token"));
}

pub async fn logout_deletes_every_token_of_the_user(db: TestDb) {
    let (client, t1) = alice(&db, json!({})).await;
    let t2 = login(&client, "alice", PW).await;
    at(&client).create_user("bob", PW).await.unwrap();
    let bob = login(&client, "bob", PW).await;

    // An invalid token deletes nothing.
    let res = client
        .get("/auth/logout/")
        .header(auth(&"f".repeat(64)))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(db.count("advanced_token_tokens").await, 3);

    let res = client
        .get("/auth/logout/")
        .header(auth(&t1))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(
        body_json(res).await,
        json!({"detail": "Logged out of every device."})
    );
    assert_eq!(check(&client, &t1).await, Status::Unauthorized);
    assert_eq!(check(&client, &t2).await, Status::Unauthorized);
    assert_eq!(check(&client, &bob).await, Status::Ok);

    // POST works too.
    let t3 = login(&client, "alice", PW).await;
    let res = client
        .post("/auth/logout")
        .header(auth(&t3))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(check(&client, &t3).await, Status::Unauthorized);
    assert_eq!(db.count("advanced_token_tokens").await, 1);
}

// ----- 5. authentication failures ----------------------------------------------

pub async fn authentication_failures_follow_drf(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    let none = "Authentication credentials were not provided.";
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, none),
        (Some(String::new()), none),
        (Some(format!("Bearer {token}")), none),
        (Some(format!("Tokens {token}")), none),
        (
            Some("Token".into()),
            "Invalid token header. No credentials provided.",
        ),
        (
            Some("Token   ".into()),
            "Invalid token header. No credentials provided.",
        ),
        (
            Some(format!("Token {token} extra")),
            "Invalid token header. Token string should not contain spaces.",
        ),
        (Some("Token abc".into()), "Invalid token."),
        (
            Some(format!("Token {}", token.to_uppercase())),
            "Invalid token.",
        ),
        (Some(format!("Token {}", "0".repeat(64))), "Invalid token."),
    ];
    for path in ["/auth/token/", "/auth/logout/", "/api/hello/"] {
        for (header, detail) in &cases {
            let mut req = client.get(path);
            if let Some(h) = header {
                req = req.header(Header::new("Authorization", h.clone()));
            }
            let res = req.dispatch().await;
            assert_eq!(res.status(), Status::Unauthorized, "{path} {header:?}");
            assert_eq!(
                res.headers().get_one("WWW-Authenticate"),
                Some("Token"),
                "{path} {header:?}"
            );
            assert_eq!(res.content_type(), Some(ContentType::JSON));
            assert_eq!(
                body_json(res).await,
                json!({"detail": detail}),
                "{path} {header:?}"
            );
        }
    }
    // The keyword is case-insensitive and any whitespace separates.
    for header in [
        format!("token {token}"),
        format!("TOKEN\t{token}"),
        format!("  Token   {token}  "),
    ] {
        let res = client
            .get("/api/hello/")
            .header(Header::new("Authorization", header))
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::Ok);
    }
    // Inactive user.
    at(&client).deactivate_user("alice").await.unwrap();
    let res = client
        .get("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(
        body_json(res).await,
        json!({"detail": "User inactive or deleted."})
    );
}

pub async fn custom_prefix(db: TestDb) {
    let (client, token) = alice(&db, json!({"bearer_prefix": "Bearer"})).await;
    let ok = client
        .get("/api/hello/")
        .header(Header::new("Authorization", format!("bearer {token}")))
        .dispatch()
        .await;
    assert_eq!(ok.status(), Status::Ok);
    let res = client
        .get("/api/hello/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(res.headers().get_one("WWW-Authenticate"), Some("Bearer"));
    let (status, _) = login_raw(&client, "alice", "nope").await;
    assert_eq!(status, Status::Unauthorized);
    let res = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .body("{\"username\":\"alice\",\"password\":\"x\"}")
        .dispatch()
        .await;
    assert_eq!(res.headers().get_one("WWW-Authenticate"), Some("Bearer"));
}

pub async fn guard_options_and_per_request_cache(db: TestDb) {
    let clock = FakeClock::new();
    let client = client_with_clock(&db, json!({"token_ttl": 60}), &clock).await;
    at(&client).create_user("alice", PW).await.unwrap();
    let token = login(&client, "alice", PW).await;

    let res = client.get("/api/maybe").dispatch().await;
    assert_eq!(body_json(res).await, json!({"username": null}));
    let res = client
        .get("/api/maybe")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(body_json(res).await, json!({"username": "alice"}));
    let res = client
        .get("/api/twice")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(body_json(res).await, json!(["alice", "alice"]));

    // The first lookup of an expired token deletes it. Were the lookup not
    // cached, the second guard would find no token and say "Invalid token.".
    clock.advance(61);
    let res = client
        .get("/api/twice")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(
        body_json(res).await,
        json!(["Token has expired.", "Token has expired."])
    );
    assert_eq!(check(&client, &token).await, Status::Unauthorized);
}

// ----- 6-7. methods, paths, hostile input --------------------------------------

pub async fn unserved_methods_get_405(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    let cases = [
        (
            "/auth/login/",
            vec![
                Method::Get,
                Method::Put,
                Method::Delete,
                Method::Patch,
                Method::Trace,
                Method::Connect,
            ],
            "POST, OPTIONS",
        ),
        (
            "/auth/token/",
            vec![Method::Post, Method::Patch, Method::Trace, Method::Connect],
            "GET, PUT, DELETE, HEAD, OPTIONS",
        ),
        (
            "/auth/tokens/",
            vec![
                Method::Post,
                Method::Put,
                Method::Delete,
                Method::Patch,
                Method::Trace,
                Method::Connect,
            ],
            "GET, HEAD, OPTIONS",
        ),
        (
            "/auth/tokens/1/",
            vec![
                Method::Get,
                Method::Post,
                Method::Put,
                Method::Patch,
                Method::Trace,
                Method::Connect,
            ],
            "DELETE, OPTIONS",
        ),
        (
            "/auth/logout/",
            vec![
                Method::Put,
                Method::Delete,
                Method::Patch,
                Method::Trace,
                Method::Connect,
            ],
            "GET, POST, HEAD, OPTIONS",
        ),
    ];
    for (path, methods, allow) in cases {
        for method in methods {
            for p in [path, path.trim_end_matches('/')] {
                let res = client.req(method, p).header(auth(&token)).dispatch().await;
                assert_eq!(res.status(), Status::MethodNotAllowed, "{method} {p}");
                assert_eq!(res.headers().get_one("Allow"), Some(allow));
                assert_eq!(
                    body_json(res).await,
                    json!({"detail": "Method not allowed."})
                );
            }
        }
        let res = client.req(Method::Options, path).dispatch().await;
        assert_eq!(res.status(), Status::NoContent);
        assert_eq!(res.headers().get_one("Allow"), Some(allow));
    }
    // Nothing was deleted by the PUT/DELETE attempts on logout.
    assert_eq!(check(&client, &token).await, Status::Ok);
    // Extra segments are not the same path.
    let res = client
        .get("/auth/token/extra")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::NotFound);
    let res = client.post("/auth/login/x/y").dispatch().await;
    assert_eq!(res.status(), Status::NotFound);
}

pub async fn hostile_input_never_gets_a_5xx(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    let headers = [
        "Token \u{0}".to_owned(),
        "Token ünïcödé".into(),
        format!("Token {}", "a".repeat(100_000)),
        "Token\u{b}abc".into(),
        format!("{} {token}", "T".repeat(10_000)),
        "Token ' OR 1=1 --".into(),
        "Token %00".into(),
    ];
    for h in headers {
        for (method, path) in [
            (Method::Get, "/auth/token/"),
            (Method::Put, "/auth/token/"),
            (Method::Post, "/auth/logout/"),
            (Method::Get, "/api/hello/"),
        ] {
            let res = client
                .req(method, path)
                .header(Header::new("Authorization", h.clone()))
                .dispatch()
                .await;
            let shown = format!("{method} {path} {}", &h[..h.len().min(40)]);
            assert_eq!(res.status(), Status::Unauthorized, "{shown}");
            assert_eq!(res.content_type(), Some(ContentType::JSON), "{shown}");
            assert!(
                res.headers().get_one("WWW-Authenticate").is_some(),
                "{shown}"
            );
            let body = body_json(res).await;
            assert!(body["detail"].is_string(), "{shown}: {body}");
        }
    }
    let bodies: [&[u8]; 5] = [
        b"\x00\x01\x02",
        b"\xc3\x28",
        &[0xff; 4000],
        b"{\"username\":\"a\",\"password\":\"b\",\"username\":[]}",
        b"{\"a\":{\"b\":{\"c\":[[[[[[]]]]]]}}}",
    ];
    for body in bodies {
        for ct in [
            ContentType::JSON,
            ContentType::Form,
            ContentType::new("multipart", "form-data").with_params(("boundary", "b")),
        ] {
            let res = client
                .post("/auth/login/")
                .header(ct.clone())
                .body(body)
                .dispatch()
                .await;
            // Bad bytes are a bad request; a body that parses but names no
            // valid user is a failed login.
            let shown = format!(
                "{ct} {:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
            assert!(
                [Status::BadRequest, Status::Unauthorized].contains(&res.status()),
                "{shown}: {}",
                res.status()
            );
            assert_eq!(res.content_type(), Some(ContentType::JSON), "{shown}");
            let body = body_json(res).await;
            assert!(
                body.is_object() && !body.as_object().unwrap().is_empty(),
                "{shown}: {body}"
            );
        }
    }
    // The token still works after all that.
    assert_eq!(check(&client, &token).await, Status::Ok);
}

// ----- storage -------------------------------------------------------------------

pub async fn tokens_are_stored_only_as_digests(db: TestDb) {
    let client = client(&db, json!({})).await;
    at(&client).create_user("alice", PW).await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(login(&client, "alice", PW).await);
    }
    let rotated = client
        .put("/auth/token/")
        .header(auth(&tokens[0]))
        .dispatch()
        .await;
    tokens.push(
        body_json(rotated).await["token"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    // Every column of every table, as text, from the catalog.
    let cells = db.dump_everything().await;
    let tables: std::collections::BTreeSet<&str> = cells.iter().map(|c| c.0.as_str()).collect();
    assert!(
        tables.contains("advanced_token_tokens") && tables.contains("advanced_token_users"),
        "{tables:?}"
    );
    let mut dump = String::new();
    for (table, column, cell) in &cells {
        dump.push_str(&format!("{table}.{column}: {cell}\n"));
    }
    assert!(!dump.contains(PW), "a plaintext password is stored");
    for t in &tokens {
        assert!(!dump.contains(t.as_str()), "a plaintext token is stored");
        assert!(
            !dump.contains(&t.to_uppercase()),
            "a plaintext token is stored"
        );
    }
    // What is stored is the SHA-256 digest of the live tokens.
    let digests = db
        .query_strings("SELECT digest FROM advanced_token_tokens")
        .await;
    assert_eq!(digests.len(), 3);
    use sha2::Digest;
    let expected = format!("{:x}", sha2::Sha256::digest(tokens[1].as_bytes()));
    assert!(digests
        .iter()
        .any(|r| r[0].as_deref() == Some(expected.as_str())));
    assert!(dump.contains("$argon2id$"));
}

// ----- issue 3: policies -----------------------------------------------------------

pub async fn rotation_and_logout_switches(db: TestDb) {
    let (client, token) = alice(&db, json!({"allow_rotation": false, "allow_logout": false})).await;
    let res = client
        .put("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::MethodNotAllowed);
    assert_eq!(res.headers().get_one("Allow"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(
        body_json(res).await,
        json!({"detail": "Token rotation is disabled."})
    );
    for method in [Method::Get, Method::Post] {
        let res = client
            .req(method, "/auth/logout/")
            .header(auth(&token))
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::MethodNotAllowed);
        assert_eq!(res.headers().get_one("Allow"), Some("OPTIONS"));
        assert_eq!(
            body_json(res).await,
            json!({"detail": "Logout is disabled."})
        );
    }
    // Every other answer at the paths says the same: OPTIONS and the 405
    // of a method the crate never serves there.
    for (path, allow) in [
        ("/auth/token/", "GET, HEAD, OPTIONS"),
        ("/auth/logout", "OPTIONS"),
    ] {
        for (method, status) in [
            (Method::Options, Status::NoContent),
            (Method::Patch, Status::MethodNotAllowed),
        ] {
            let res = client.req(method, path).dispatch().await;
            assert_eq!(res.status(), status, "{method} {path}");
            assert_eq!(
                res.headers().get_one("Allow"),
                Some(allow),
                "{method} {path}"
            );
        }
    }
    assert_eq!(check(&client, &token).await, Status::Ok);
    assert_eq!(db.count("advanced_token_tokens").await, 1);
    // A bad token still gets 401, not 405.
    let res = client
        .put("/auth/token/")
        .header(auth("nope"))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Unauthorized);
}

pub async fn rotation_lock_is_per_user(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    at(&client).create_user("bob", PW).await.unwrap();
    let bob = login(&client, "bob", PW).await;
    at(&client).lock_rotation("alice").await.unwrap();
    let res = client
        .put("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::MethodNotAllowed);
    let allow = Some("GET, DELETE, HEAD, OPTIONS");
    assert_eq!(res.headers().get_one("Allow"), allow);
    assert_eq!(
        body_json(res).await,
        json!({"detail": "Token rotation is locked for this user."})
    );
    assert_eq!(check(&client, &token).await, Status::Ok);
    let res = client
        .put("/auth/token/")
        .header(auth(&bob))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    // Login, check and logout are unaffected by the lock.
    let t2 = login(&client, "alice", PW).await;
    assert_eq!(check(&client, &t2).await, Status::Ok);
    at(&client).unlock_rotation("alice").await.unwrap();
    let res = client
        .put("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    let res = client
        .get("/auth/logout/")
        .header(auth(&t2))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
}

pub async fn tokens_expire(db: TestDb) {
    let clock = FakeClock::new();
    let client = client_with_clock(&db, json!({"token_ttl": 3600}), &clock).await;
    at(&client).create_user("alice", PW).await.unwrap();
    let token = login(&client, "alice", PW).await;
    clock.advance(3599);
    assert_eq!(check(&client, &token).await, Status::Ok);
    clock.advance(1);
    let res = client
        .get("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(res.headers().get_one("WWW-Authenticate"), Some("Token"));
    assert_eq!(
        body_json(res).await,
        json!({"detail": "Token has expired."})
    );
    // ...and it was deleted.
    assert_eq!(db.count("advanced_token_tokens").await, 0);
    assert_eq!(check(&client, &token).await, Status::Unauthorized);

    // Without sliding, use does not extend the expiry.
    let t2 = login(&client, "alice", PW).await;
    for _ in 0..5 {
        clock.advance(700);
        assert_eq!(check(&client, &t2).await, Status::Ok);
    }
    clock.advance(200);
    assert_eq!(check(&client, &t2).await, Status::Unauthorized);
}

pub async fn sliding_expiry_and_its_cap(db: TestDb) {
    let clock = FakeClock::new();
    let settings = json!({"token_ttl": 600, "token_ttl_sliding": true, "token_max_lifetime": 1800});
    let client = client_with_clock(&db, settings, &clock).await;
    at(&client).create_user("alice", PW).await.unwrap();
    let token = login(&client, "alice", PW).await;
    let created = clock.now();
    // Used every 500 s, it outlives its 600 s TTL...
    for _ in 0..3 {
        clock.advance(500);
        assert_eq!(check(&client, &token).await, Status::Ok);
    }
    let expires: i64 = db
        .query_strings("SELECT expires_at FROM advanced_token_tokens")
        .await[0][0]
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        expires,
        created + 1800,
        "capped at creation + token_max_lifetime"
    );
    // ...but not its 1800 s maximum lifetime.
    clock.advance(299);
    assert_eq!(check(&client, &token).await, Status::Ok);
    clock.advance(1);
    assert_eq!(check(&client, &token).await, Status::Unauthorized);

    // Unused for a TTL, it expires.
    let t2 = login(&client, "alice", PW).await;
    clock.advance(601);
    assert_eq!(check(&client, &t2).await, Status::Unauthorized);
}

pub async fn last_used_is_written_at_most_once_a_minute(db: TestDb) {
    let clock = FakeClock::new();
    let client = client_with_clock(
        &db,
        json!({"token_ttl": 600, "token_ttl_sliding": true}),
        &clock,
    )
    .await;
    at(&client).create_user("alice", PW).await.unwrap();
    let token = login(&client, "alice", PW).await;
    let t0 = clock.now();
    let row = || async {
        db.query_strings("SELECT last_used_at, expires_at FROM advanced_token_tokens")
            .await[0]
            .clone()
    };
    let as_i64 = |v: &Option<String>| v.as_ref().unwrap().parse::<i64>().unwrap();

    clock.advance(30);
    assert_eq!(check(&client, &token).await, Status::Ok);
    clock.advance(29);
    assert_eq!(check(&client, &token).await, Status::Ok);
    let r = row().await;
    assert_eq!(as_i64(&r[0]), t0, "two uses within a minute write nothing");
    assert_eq!(as_i64(&r[1]), t0 + 600);

    clock.advance(1);
    assert_eq!(check(&client, &token).await, Status::Ok);
    let r = row().await;
    assert_eq!(as_i64(&r[0]), t0 + 60);
    assert_eq!(as_i64(&r[1]), t0 + 660);
    clock.advance(10);
    assert_eq!(check(&client, &token).await, Status::Ok);
    assert_eq!(as_i64(&row().await[0]), t0 + 60);
}

pub async fn per_user_limit_evicts_the_least_recently_used(db: TestDb) {
    let clock = FakeClock::new();
    let client = client_with_clock(&db, json!({"max_tokens_per_user": 3}), &clock).await;
    at(&client).create_user("alice", PW).await.unwrap();
    at(&client).create_user("bob", PW).await.unwrap();
    let bob = login(&client, "bob", PW).await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(login(&client, "alice", PW).await);
        clock.advance(100);
    }
    // Use the oldest, so the second becomes the least recently used.
    assert_eq!(check(&client, &tokens[0]).await, Status::Ok);
    clock.advance(100);
    let t4 = login(&client, "alice", PW).await;
    assert_eq!(
        check(&client, &tokens[1]).await,
        Status::Unauthorized,
        "LRU evicted"
    );
    for t in [&tokens[0], &tokens[2], &t4, &bob] {
        assert_eq!(check(&client, t).await, Status::Ok);
    }
    assert_eq!(at(&client).list_tokens("alice").await.unwrap().len(), 3);
}

pub async fn user_administration(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    let at = at(&client);

    // Deactivation keeps the tokens but refuses them and logins.
    at.deactivate_user("alice").await.unwrap();
    let res = client
        .get("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(
        body_json(res).await,
        json!({"detail": "User inactive or deleted."})
    );
    assert_eq!(
        login_raw(&client, "alice", PW).await.0,
        Status::Unauthorized
    );
    assert_eq!(db.count("advanced_token_tokens").await, 1);
    at.activate_user("alice").await.unwrap();
    assert_eq!(check(&client, &token).await, Status::Ok);

    // A new password revokes every token.
    let t2 = login(&client, "alice", PW).await;
    assert_eq!(at.set_password("alice", "new password").await.unwrap(), 2);
    assert_eq!(check(&client, &token).await, Status::Unauthorized);
    assert_eq!(check(&client, &t2).await, Status::Unauthorized);
    assert_eq!(
        login_raw(&client, "alice", PW).await.0,
        Status::Unauthorized
    );
    let t3 = login(&client, "alice", "new password").await;

    // Listing shows metadata, never tokens.
    let users = at.list_users().await.unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].live_tokens, 1);
    let listed = format!("{:?}", at.list_tokens("alice").await.unwrap());
    assert!(!listed.contains(&t3));

    // Unknown users are errors.
    assert!(matches!(
        at.revoke_tokens("nobody").await,
        Err(rocket_advanced_token::Error::UnknownUser(_))
    ));
    assert!(matches!(
        at.deactivate_user("nobody").await,
        Err(rocket_advanced_token::Error::UnknownUser(_))
    ));
    assert!(matches!(
        at.create_user("alice", "long enough").await,
        Err(rocket_advanced_token::Error::UsernameTaken(_))
    ));

    // Deleting the user takes its tokens.
    at.delete_user("alice").await.unwrap();
    assert_eq!(check(&client, &t3).await, Status::Unauthorized);
    assert_eq!(db.count("advanced_token_tokens").await, 0);
    assert_eq!(db.count("advanced_token_users").await, 0);
}

pub async fn purge_expired_counts(db: TestDb) {
    let clock = FakeClock::new();
    let client = client_with_clock(&db, json!({"token_ttl": 100}), &clock).await;
    at(&client).create_user("alice", PW).await.unwrap();
    login(&client, "alice", PW).await;
    login(&client, "alice", PW).await;
    clock.advance(50);
    let fresh = login(&client, "alice", PW).await;
    clock.advance(60);
    assert_eq!(at(&client).purge_expired().await.unwrap(), 2);
    assert_eq!(at(&client).purge_expired().await.unwrap(), 0);
    assert_eq!(check(&client, &fresh).await, Status::Ok);
    assert_eq!(at(&client).list_users().await.unwrap()[0].live_tokens, 1);
}

pub async fn revoke_all(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    at(&client).create_user("bob", PW).await.unwrap();
    let bob = login(&client, "bob", PW).await;
    assert_eq!(at(&client).revoke_all_tokens().await.unwrap(), 2);
    assert_eq!(check(&client, &token).await, Status::Unauthorized);
    assert_eq!(check(&client, &bob).await, Status::Unauthorized);
}

// ----- issue 4: concurrency and several instances -----------------------------------

use std::sync::Arc;

async fn spawn_login(
    client: &Arc<Client>,
    user: &'static str,
) -> rocket::tokio::task::JoinHandle<(Status, Option<String>)> {
    let c = client.clone();
    rocket::tokio::spawn(async move {
        let res = c
            .post("/auth/login/")
            .header(ContentType::JSON)
            .body(json!({"username": user, "password": PW}).to_string())
            .dispatch()
            .await;
        let status = res.status();
        let body: Value = serde_json::from_str(&res.into_string().await.unwrap_or_default())
            .unwrap_or(Value::Null);
        (status, body["token"].as_str().map(str::to_owned))
    })
}

/// Settings under which a burst of *correct* logins is not held back by the
/// failed-login bookkeeping (attempts under way count against
/// `login_max_failures`, 5 by default, which would let only 5 run at once).
fn burst(max_tokens: u32) -> Value {
    json!({
        "max_tokens_per_user": max_tokens,
        "login_max_failures": 1000,
        "login_max_failures_per_ip": 1000,
        "hash_concurrency": 8,
    })
}

pub async fn concurrent_logins_all_succeed(db: TestDb) {
    let client = Arc::new(client(&db, burst(1000)).await);
    at(&client).create_user("alice", PW).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        tasks.push(spawn_login(&client, "alice").await);
    }
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        let (status, token) = t.await.unwrap();
        assert_eq!(status, Status::Ok);
        tokens.insert(token.unwrap());
    }
    assert_eq!(tokens.len(), 100, "every token is distinct");
    for t in &tokens {
        assert_eq!(check(&client, t).await, Status::Ok);
    }
    assert_eq!(db.count("advanced_token_tokens").await, 100);
}

pub async fn concurrent_logins_respect_the_per_user_limit(db: TestDb) {
    let client = Arc::new(client(&db, burst(3)).await);
    at(&client).create_user("alice", PW).await.unwrap();
    // Watch the count while the logins run: the next login's eviction would
    // repair an overshoot, so the final count alone proves little.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = db.sample_max("SELECT COUNT(*) FROM advanced_token_tokens", stop.clone());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        tasks.push(spawn_login(&client, "alice").await);
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().0, Status::Ok);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (peak, samples) = sampler.await.unwrap();
    // Logins that ran side by side each saw the others' rows: the user
    // never has more than the limit, at any moment.
    assert!(samples > 10, "only {samples} samples");
    assert!(peak <= 3, "the user had {peak} tokens at once, limit 3");
    assert_eq!(db.count("advanced_token_tokens").await, 3);
}

pub async fn concurrent_failures_are_throttled(db: TestDb) {
    let client = Arc::new(client(&db, json!({"login_max_failures": 5})).await);
    at(&client).create_user("alice", PW).await.unwrap();
    let before = at(&client).password_operations();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let c = client.clone();
        tasks.push(rocket::tokio::spawn(async move {
            login_as(&c, "alice", "wrong", Some("10.0.0.9")).await.0
        }));
    }
    let mut refused = 0;
    let mut throttled = 0;
    for t in tasks {
        match t.await.unwrap() {
            Status::Unauthorized => refused += 1,
            Status::TooManyRequests => throttled += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // However the 40 interleave, exactly five reach argon2 and are refused
    // (the limit's worth of guesses, no more and no fewer); the rest are
    // throttled.
    assert_eq!(refused, 5, "{refused} attempts reached argon2, limit 5");
    assert_eq!(refused + throttled, 40);
    assert!(at(&client).password_operations() - before <= 5);
    // Throttled attempts left no rows behind (they must not prolong the
    // lockout): one per refused attempt for the user and one for the IP.
    assert_eq!(
        db.count("advanced_token_login_failures").await,
        2 * refused as i64
    );
}

pub async fn nul_in_a_username_is_an_unknown_user(db: TestDb) {
    let client = client(&db, json!({})).await;
    at(&client).create_user("alice", PW).await.unwrap();
    for (content_type, payload) in [
        (
            ContentType::JSON,
            json!({"username": "al\u{0}ice", "password": PW}).to_string(),
        ),
        (ContentType::Form, "username=al%00ice&password=x".to_owned()),
    ] {
        let res = client
            .post("/auth/login/")
            .header(content_type)
            .body(payload)
            .dispatch()
            .await;
        assert_eq!(res.status(), Status::Unauthorized);
        assert_eq!(
            res.into_string().await.unwrap(),
            r#"{"detail":"Unable to log in with provided credentials."}"#
        );
    }
}

pub async fn concurrent_rotations_have_one_winner(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    let client = Arc::new(client);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = client.clone();
        let t = token.clone();
        tasks.push(rocket::tokio::spawn(async move {
            let res = c.put("/auth/token/").header(auth(&t)).dispatch().await;
            let status = res.status();
            let body: Value = serde_json::from_str(&res.into_string().await.unwrap_or_default())
                .unwrap_or(Value::Null);
            (status, body["token"].as_str().map(str::to_owned))
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (status, new) = t.await.unwrap();
        match status {
            Status::Ok => winners.push(new.unwrap()),
            Status::Unauthorized => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one rotation wins");
    assert_eq!(check(&client, &winners[0]).await, Status::Ok);
    assert_eq!(check(&client, &token).await, Status::Unauthorized);
    assert_eq!(
        db.count("advanced_token_tokens").await,
        1,
        "never two live successors"
    );
}

pub async fn logout_racing_logins(db: TestDb) {
    let (client, first) = alice(&db, burst(1000)).await;
    let client = Arc::new(client);
    let mut tasks = Vec::new();
    for _ in 0..40 {
        tasks.push(spawn_login(&client, "alice").await);
    }
    // Let some logins finish, then log out while the rest are in flight.
    let mut before = vec![first];
    let mut pending = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if i < 10 {
            let (status, token) = t.await.unwrap();
            assert_eq!(status, Status::Ok);
            before.push(token.unwrap());
        } else {
            pending.push(t);
        }
    }
    let res = client
        .post("/auth/logout/")
        .header(auth(&before[1]))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    for t in pending {
        let (status, _) = t.await.unwrap();
        assert_eq!(status, Status::Ok, "no login fails or gets a 5xx");
    }
    for t in &before {
        assert_eq!(
            check(&client, t).await,
            Status::Unauthorized,
            "a token issued before logout still works"
        );
    }
}

/// Without the token cache, every revocation is seen by the other instance
/// at once.
pub async fn two_instances_share_one_database(db: TestDb) {
    let a = client(&db, json!({"token_cache": false})).await;
    let b = client(&db, json!({"token_cache": false})).await;
    at(&a).create_user("alice", PW).await.unwrap();

    // Issued by A, works on B; logout on B kills it on A.
    let t1 = login(&a, "alice", PW).await;
    assert_eq!(check(&b, &t1).await, Status::Ok);
    let res = b.get("/auth/logout/").header(auth(&t1)).dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(check(&a, &t1).await, Status::Unauthorized);

    // Rotation on A kills the old token on B.
    let t2 = login(&b, "alice", PW).await;
    let res = a.put("/auth/token/").header(auth(&t2)).dispatch().await;
    let t3 = body_json(res).await["token"].as_str().unwrap().to_owned();
    assert_eq!(check(&b, &t2).await, Status::Unauthorized);
    assert_eq!(check(&b, &t3).await, Status::Ok);

    // The command line's revoke-all-tokens is seen by both.
    let t4 = login(&a, "alice", PW).await;
    crate::cli::run_cli_ok(&db, &["revoke-all-tokens", "--force"]).await;
    for c in [&a, &b] {
        for t in [&t3, &t4] {
            assert_eq!(check(c, t).await, Status::Unauthorized);
        }
    }
}

// ----- issue 5: login throttling ---------------------------------------------------

async fn login_as(
    client: &Client,
    user: &str,
    pw: &str,
    ip: Option<&str>,
) -> (Status, Option<String>, Vec<u8>) {
    let mut req = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .body(json!({"username": user, "password": pw}).to_string());
    if let Some(ip) = ip {
        req = req.remote(format!("{ip}:40000").parse().unwrap());
    }
    let res = req.dispatch().await;
    let status = res.status();
    let retry = res.headers().get_one("Retry-After").map(str::to_owned);
    (status, retry, res.into_bytes().await.unwrap_or_default())
}

pub async fn throttling_per_username(db: TestDb) {
    let clock = FakeClock::new();
    let client = client_with_clock(&db, json!({"login_failure_window": 600}), &clock).await;
    at(&client).create_user("alice", PW).await.unwrap();
    let first = clock.now();
    for i in 0..5 {
        let (status, _, _) = login_as(&client, "alice", "wrong", Some("10.0.0.1")).await;
        assert_eq!(status, Status::Unauthorized, "failure {i}");
        clock.advance(10);
    }
    // The sixth attempt is refused without a password check, even with the
    // right password and from another IP.
    let before = at(&client).password_operations();
    let (status, retry, body) = login_as(&client, "alice", PW, Some("10.0.0.2")).await;
    assert_eq!(status, Status::TooManyRequests);
    assert_eq!(
        at(&client).password_operations(),
        before,
        "argon2 ran for a throttled login"
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({"detail": "Too many failed login attempts. Try again later."})
    );
    let retry: i64 = retry.expect("Retry-After").parse().unwrap();
    assert_eq!(retry, first + 600 - clock.now());

    // An unknown username is throttled the same way, byte for byte.
    for _ in 0..5 {
        login_as(&client, "ghost", "wrong", None).await;
    }
    let (s1, _, b1) = login_as(&client, "ghost", "wrong", None).await;
    let (s2, _, b2) = login_as(&client, "alice", "wrong", None).await;
    assert_eq!((s1, &b1), (s2, &b2));

    // Other users are not affected; the lockout ends with the window.
    at(&client).create_user("bob", PW).await.unwrap();
    login(&client, "bob", PW).await;
    clock.advance(retry);
    login(&client, "alice", PW).await;
}

pub async fn success_clears_the_username_counter(db: TestDb) {
    let client = client(&db, json!({})).await;
    at(&client).create_user("alice", PW).await.unwrap();
    for _ in 0..4 {
        assert_eq!(
            login_as(&client, "alice", "wrong", None).await.0,
            Status::Unauthorized
        );
    }
    login(&client, "alice", PW).await;
    for _ in 0..4 {
        assert_eq!(
            login_as(&client, "alice", "wrong", None).await.0,
            Status::Unauthorized
        );
    }
    login(&client, "alice", PW).await;
}

pub async fn throttling_per_ip(db: TestDb) {
    let client = client(&db, json!({"login_max_failures_per_ip": 8})).await;
    at(&client).create_user("alice", PW).await.unwrap();
    for i in 0..8 {
        let (status, _, _) = login_as(&client, &format!("user{i}"), "x", Some("192.0.2.7")).await;
        assert_eq!(status, Status::Unauthorized);
    }
    let ops = at(&client).password_operations();
    let (status, retry, body) = login_as(&client, "alice", PW, Some("192.0.2.7")).await;
    assert_eq!(status, Status::TooManyRequests);
    assert_eq!(
        at(&client).password_operations(),
        ops,
        "argon2 ran for a login throttled by IP"
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"detail": "Too many failed login attempts. Try again later."})
    );
    assert!(retry.unwrap().parse::<u64>().unwrap() > 0);
    // Another client is unaffected.
    assert_eq!(
        login_as(&client, "alice", PW, Some("192.0.2.8")).await.0,
        Status::Ok
    );
    // Behind a proxy, Rocket's ip_header (X-Real-IP by default) names the client.
    let res = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .header(Header::new("X-Real-IP", "192.0.2.7"))
        .remote("127.0.0.1:4000".parse().unwrap())
        .body(json!({"username": "alice", "password": PW}).to_string())
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::TooManyRequests);
    let res = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .header(Header::new("X-Real-IP", "198.51.100.1"))
        .remote("127.0.0.1:4000".parse().unwrap())
        .body(json!({"username": "alice", "password": PW}).to_string())
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
}

pub async fn throttling_can_be_turned_off(db: TestDb) {
    let client = client(
        &db,
        json!({"login_throttle": false, "login_max_failures": 1}),
    )
    .await;
    at(&client).create_user("alice", PW).await.unwrap();
    for _ in 0..4 {
        assert_eq!(
            login_as(&client, "alice", "wrong", Some("10.1.1.1"))
                .await
                .0,
            Status::Unauthorized
        );
    }
    assert_eq!(
        login_as(&client, "alice", PW, Some("10.1.1.1")).await.0,
        Status::Ok
    );
    assert_eq!(db.count("advanced_token_login_failures").await, 0);
}

pub async fn throttling_holds_across_instances(db: TestDb) {
    let a = client(&db, json!({"login_max_failures": 3})).await;
    let b = client(&db, json!({"login_max_failures": 3})).await;
    at(&a).create_user("alice", PW).await.unwrap();
    for c in [&a, &b, &a] {
        assert_eq!(
            login_as(c, "alice", "wrong", None).await.0,
            Status::Unauthorized
        );
    }
    assert_eq!(
        login_as(&b, "alice", PW, None).await.0,
        Status::TooManyRequests
    );
    assert_eq!(
        login_as(&a, "alice", PW, None).await.0,
        Status::TooManyRequests
    );
}

// ----- issue 6: the token cache and its revocation bound -------------------------------

/// Polls `check` until it gives 401, and returns how long that took.
async fn seconds_until_rejected(client: &Client, token: &str) -> f64 {
    let started = std::time::Instant::now();
    while check(client, token).await != Status::Unauthorized {
        assert!(
            started.elapsed().as_secs_f64() < 10.0,
            "the revocation was never seen"
        );
        rocket::tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    started.elapsed().as_secs_f64()
}

/// With the cache on (the default), revocations by this instance are
/// immediate and revocations elsewhere are seen within `token_cache_poll`.
pub async fn cached_tokens_honour_revocations(db: TestDb) {
    // The default poll period, 1 s.
    let a = client(&db, json!({})).await;
    let b = client(&db, json!({})).await;
    at(&a).create_user("alice", PW).await.unwrap();
    // The promise is the period (1 s): the cache stops serving one period
    // after its last poll's read. The margin covers the checking loop's own
    // steps (a 20 ms pause and a request) on 2 busy cores; a cache that
    // ignored revocations would never reject (10 s).
    let bound = 1.0 + 1.0;

    // Both instances cache the token; B logs out; A stops accepting it
    // within the bound. (B itself at once.)
    let t1 = login(&a, "alice", PW).await;
    assert_eq!(check(&a, &t1).await, Status::Ok);
    assert_eq!(check(&b, &t1).await, Status::Ok);
    let res = b.get("/auth/logout/").header(auth(&t1)).dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(check(&b, &t1).await, Status::Unauthorized);
    let took = seconds_until_rejected(&a, &t1).await;
    assert!(took <= bound, "logout on B took {took:.2}s to reach A");

    // Rotation on A: the old token dies at once on A, within the bound on B.
    let t2 = login(&a, "alice", PW).await;
    assert_eq!(check(&b, &t2).await, Status::Ok);
    let res = a.put("/auth/token/").header(auth(&t2)).dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(check(&a, &t2).await, Status::Unauthorized);
    let took = seconds_until_rejected(&b, &t2).await;
    assert!(took <= bound, "rotation on A took {took:.2}s to reach B");

    // The command line (another process) revokes everything.
    let t3 = login(&a, "alice", PW).await;
    assert_eq!(check(&a, &t3).await, Status::Ok);
    assert_eq!(check(&b, &t3).await, Status::Ok);
    crate::cli::run_cli_ok(&db, &["revoke-all-tokens", "--force"]).await;
    for c in [&a, &b] {
        let took = seconds_until_rejected(c, &t3).await;
        assert!(took <= bound, "revoke-all-tokens took {took:.2}s");
    }

    // Deactivation from the command line, too.
    let t4 = login(&a, "alice", PW).await;
    assert_eq!(check(&a, &t4).await, Status::Ok);
    crate::cli::run_cli_ok(&db, &["deactivate", "alice"]).await;
    let took = seconds_until_rejected(&a, &t4).await;
    assert!(took <= bound, "deactivate took {took:.2}s");
}

/// The cache never serves a token past its expiry, and a cache hit needs no
/// database query.
pub async fn cache_respects_expiry_and_skips_the_database(db: TestDb) {
    let clock = FakeClock::new();
    // A long poll period, so that a late poll on a busy machine cannot make
    // the cache stop serving in the middle of the check below.
    let client = client_with_clock(
        &db,
        json!({"token_ttl": 100, "token_cache_poll": 60.0}),
        &clock,
    )
    .await;
    at(&client).create_user("alice", PW).await.unwrap();
    let token = login(&client, "alice", PW).await;
    assert_eq!(check(&client, &token).await, Status::Ok);
    // Delete the row behind the cache's back: a hit does not look.
    db.exec("DELETE FROM advanced_token_tokens").await;
    assert_eq!(
        check(&client, &token).await,
        Status::Ok,
        "served from the cache"
    );
    clock.advance(100);
    assert_eq!(
        check(&client, &token).await,
        Status::Unauthorized,
        "expired in the cache"
    );

    // And with the cache off, every request reads the database.
    let uncached =
        client_with_clock(&db, json!({"token_ttl": 100, "token_cache": false}), &clock).await;
    let t2 = login(&uncached, "alice", PW).await;
    assert_eq!(check(&uncached, &t2).await, Status::Ok);
    db.exec("DELETE FROM advanced_token_tokens").await;
    assert_eq!(check(&uncached, &t2).await, Status::Unauthorized);
}

/// On PostgreSQL, revocations are also announced with NOTIFY, so another
/// instance drops its cache at once rather than at its next poll (here set
/// to 30 s, so only the notification can explain a fast rejection).
pub async fn postgres_notifies_revocations(db: TestDb) {
    let settings = json!({"token_cache_poll": 30.0});
    let a = client(&db, settings.clone()).await;
    at(&a).create_user("alice", PW).await.unwrap();
    let token = login(&a, "alice", PW).await;
    assert_eq!(check(&a, &token).await, Status::Ok);
    wait_for_listener(&db).await;
    crate::cli::run_cli_ok(&db, &["revoke-all-tokens", "--force"]).await;
    let took = seconds_until_rejected(&a, &token).await;
    // The poll is 30 s: anything well under it is the notification.
    assert!(took < 10.0, "a NOTIFY-ed revocation took {took:.2}s");
}

/// A notification makes the listener read the log from the number it
/// announced, not the whole window; an entry whose transaction commits
/// after a later entry's (a lower number announced later) is still read
/// at once. The poll is 30 s, so only the announcements can explain it.
pub async fn postgres_announced_entries_are_read_out_of_order(db: TestDb) {
    let a = polling_every_30s(&db).await;
    let (first, second, mut slow, mut fast) = two_open_revocations(&db, &a, "alice").await;
    commit(&mut fast).await;
    let took = seconds_until_rejected(&a, &second).await;
    assert!(took < 10.0, "the later entry took {took:.2}s");
    assert_eq!(check(&a, &first).await, Status::Ok, "not revoked yet");
    commit(&mut slow).await;
    let took = seconds_until_rejected(&a, &first).await;
    assert!(took < 10.0, "the entry committed late took {took:.2}s");
}

/// The same two entries committed back to back, so that both
/// notifications usually arrive in one burst (within 20 ms), in both
/// orders: the listener reads from the lower number of the two, not the
/// first, the last or the highest it heard of. (Two bursts would each be
/// read from their own number, and pass.)
pub async fn postgres_a_burst_is_read_from_its_lowest_number(db: TestDb) {
    let a = polling_every_30s(&db).await;
    for (user, lower_first) in [("alice", false), ("bob", true)] {
        let (first, second, mut lower, mut higher) = two_open_revocations(&db, &a, user).await;
        match lower_first {
            true => {
                commit(&mut lower).await;
                commit(&mut higher).await;
            }
            false => {
                commit(&mut higher).await;
                commit(&mut lower).await;
            }
        }
        for token in [&second, &first] {
            let took = seconds_until_rejected(&a, token).await;
            assert!(took < 10.0, "{user}: took {took:.2}s");
        }
    }
}

/// An instance whose poll is 30 s, with its listener up: a revocation
/// seen sooner was announced.
async fn polling_every_30s(db: &TestDb) -> Client {
    let a = client(db, json!({"token_cache_poll": 30.0})).await;
    wait_for_listener(db).await;
    a
}

/// Two of `user`'s tokens, cached by `a`, and two open transactions, each
/// revoking one as the crate does (the row goes, an entry says so):
/// `first`'s took the lower number. Returns the tokens and the two
/// connections, the lower number's first.
async fn two_open_revocations(
    db: &TestDb,
    a: &Client,
    user: &str,
) -> (String, String, sqlx::PgConnection, sqlx::PgConnection) {
    use sqlx::Connection;
    at(a).create_user(user, PW).await.unwrap();
    let (first, second) = (login(a, user, PW).await, login(a, user, PW).await);
    for t in [&first, &second] {
        assert_eq!(check(a, t).await, Status::Ok);
    }
    let mut conns = Vec::new();
    for token in [&first, &second] {
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()));
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        for sql in [
            "BEGIN".to_owned(),
            format!("DELETE FROM advanced_token_tokens WHERE digest = '{digest}'"),
            format!(
                "INSERT INTO advanced_token_revocation_log (digest, kind, revoked_at) \
                 VALUES ('{digest}', 'token', CAST(EXTRACT(EPOCH FROM now()) AS BIGINT))"
            ),
        ] {
            sqlx::query(&sql).execute(&mut conn).await.unwrap();
        }
        conns.push(conn);
    }
    let (higher, lower) = (conns.pop().unwrap(), conns.pop().unwrap());
    (first, second, lower, higher)
}

async fn commit(conn: &mut sqlx::PgConnection) {
    sqlx::query("COMMIT").execute(conn).await.unwrap();
}

/// A notification naming an old entry (replayed, or sent by anyone who
/// can connect) reads only the poll's window: an entry the poll has left
/// behind is not applied again. Here a revoke-all of long ago would empty
/// the cache, and a token deleted behind the crate's back (still cached)
/// would stop working.
pub async fn postgres_an_old_announcement_applies_nothing_again(db: TestDb) {
    // Written before the instance starts, so it never saw the entry's own
    // notification, and its first poll's window leaves the entry out.
    let setup = client(&db, json!({})).await;
    at(&setup).create_user("alice", PW).await.unwrap();
    drop(setup);
    db.exec(
        "INSERT INTO advanced_token_revocation_log (kind, revoked_at) \
         VALUES ('all', CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) - 1000)",
    )
    .await;
    let a = client(&db, json!({"token_cache_poll": 30.0})).await;
    let old = db
        .query_strings("SELECT MAX(seq) FROM advanced_token_revocation_log")
        .await;
    let old = old[0][0].clone().unwrap();
    let token = login(&a, "alice", PW).await;
    assert_eq!(check(&a, &token).await, Status::Ok);
    db.exec("DELETE FROM advanced_token_tokens").await;
    assert_eq!(check(&a, &token).await, Status::Ok, "served from the cache");
    wait_for_listener(&db).await;
    db.exec(&format!("NOTIFY advanced_token_revocations, '{old}'"))
        .await;
    rocket::tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        check(&a, &token).await,
        Status::Ok,
        "an old revoke-all was applied again"
    );
}

/// Waits until the instance's revocation listener has issued its LISTEN
/// (the last statement of an otherwise idle connection to this database).
async fn wait_for_listener(db: &TestDb) {
    wait_until(
        "the revocation listener",
        std::time::Duration::from_secs(30),
        || async {
            let rows = db
                .query_strings(
                    "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%' \
                 AND pid <> pg_backend_pid()",
                )
                .await;
            rows[0][0].as_deref() != Some("0")
        },
    )
    .await;
}

/// The guard reads `Authorization` in any case and takes the first of
/// two, and `AuthUser::ip()` is Rocket's `client_ip()` with the
/// `ip_header` absent, present, lowercase, malformed, renamed or switched
/// off.
pub async fn the_guard_reads_headers_as_rocket_does(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    let get = |headers: Vec<(&'static str, String)>| {
        let mut req = client
            .get("/api/hello/")
            .remote("192.0.2.50:4000".parse().unwrap());
        for (name, value) in headers {
            req = req.header(Header::new(name, value));
        }
        async move { req.dispatch().await.status() }
    };
    let ok = format!("Token {token}");
    assert_eq!(get(vec![("authorization", ok.clone())]).await, Status::Ok);
    assert_eq!(
        get(vec![("AUTHORIZATION", format!("token {token}"))]).await,
        Status::Ok
    );
    let two = vec![
        ("Authorization", ok.clone()),
        ("authorization", "Token x".into()),
    ];
    assert_eq!(get(two).await, Status::Ok);
    let two = vec![
        ("Authorization", "Token x".into()),
        ("Authorization", ok.clone()),
    ];
    assert_eq!(get(two).await, Status::Unauthorized);

    for (ip_header, headers, expected) in [
        (None, vec![], "192.0.2.50"),
        (None, vec![("X-Real-IP", "198.51.100.7")], "198.51.100.7"),
        (None, vec![("x-real-ip", "2001:db8::7")], "2001:db8::7"),
        (None, vec![("X-Real-IP", "not an address")], "192.0.2.50"),
        // The first of several values counts, even when it is malformed.
        (
            None,
            vec![("X-REAL-IP", "198.51.100.7"), ("X-Real-IP", "203.0.113.9")],
            "198.51.100.7",
        ),
        (
            None,
            vec![("X-Real-IP", "bad"), ("x-real-ip", "203.0.113.9")],
            "192.0.2.50",
        ),
        (
            Some(json!(false)),
            vec![("X-Real-IP", "198.51.100.7")],
            "192.0.2.50",
        ),
        (
            Some(json!("X-Client")),
            vec![("X-Real-IP", "198.51.100.7"), ("x-client", "203.0.113.9")],
            "203.0.113.9",
        ),
    ] {
        let mut figment = db.figment(json!({}));
        if let Some(h) = &ip_header {
            figment = figment.merge(("ip_header", h));
        }
        let client = Client::tracked(app(figment, None)).await.unwrap();
        let mut req = client
            .get("/api/ip")
            .header(auth(&token))
            .remote("192.0.2.50:4000".parse().unwrap());
        for (name, value) in headers {
            req = req.header(Header::new(name, value));
        }
        let res = req.dispatch().await;
        let body: Value = res.into_json().await.unwrap();
        assert_eq!(body["user"], json!(expected), "{ip_header:?}: {body}");
        assert_eq!(body["user"], body["rocket"], "{ip_header:?}");
    }
    // Past the headers the guard scans itself, the lookups are Rocket's:
    // the same answers.
    let client = Client::tracked(app(db.figment(json!({})), None))
        .await
        .unwrap();
    let mut req = client
        .get("/api/ip")
        .remote("192.0.2.50:4000".parse().unwrap());
    for i in 0..40 {
        req = req.header(Header::new(format!("X-Pad-{i}"), "x"));
    }
    let res = req
        .header(auth(&token))
        .header(Header::new("X-Real-IP", "198.51.100.7"))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    let body: Value = res.into_json().await.unwrap();
    assert_eq!(body["user"], json!("198.51.100.7"), "{body}");
    assert_eq!(body["user"], body["rocket"]);
}

/// With Rocket's `ip_header = false` (clients facing the app directly) an
/// `X-Real-IP` header cannot dodge the per-IP limit: the peer address
/// counts. (With the default, it names the client: `throttling_per_ip`.)
pub async fn ip_header_false_stops_spoofing(db: TestDb) {
    let figment = db
        .figment(json!({"login_max_failures_per_ip": 3}))
        .merge(("ip_header", false));
    let client = Client::tracked(app(figment, None)).await.unwrap();
    at(&client).create_user("alice", PW).await.unwrap();
    let attempt = |user: String, pw: &'static str, spoof: String| {
        let req = client
            .post("/auth/login/")
            .header(ContentType::JSON)
            .header(Header::new("X-Real-IP", spoof))
            .remote("192.0.2.50:4000".parse().unwrap())
            .body(json!({"username": user, "password": pw}).to_string());
        async move { req.dispatch().await.status() }
    };
    for i in 0..3 {
        let status = attempt(format!("user{i}"), "x", format!("198.51.100.{i}")).await;
        assert_eq!(status, Status::Unauthorized);
    }
    // A fresh X-Real-IP does not help: the peer is over its limit.
    assert_eq!(
        attempt("alice".into(), PW, "203.0.113.99".into()).await,
        Status::TooManyRequests
    );
    // Another peer is unaffected.
    let res = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .remote("192.0.2.51:4000".parse().unwrap())
        .body(json!({"username": "alice", "password": PW}).to_string())
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
}

/// A handler's own 401 that carries `WWW-Authenticate` is left as it is by
/// the response fairing; one without it (a guard failure) is rewritten.
pub async fn own_401_with_www_authenticate_is_left_alone(db: TestDb) {
    let (client, token) = alice(&db, json!({})).await;
    for auth_header in [None, Some(auth(&token))] {
        let mut req = client.get("/api/own401");
        if let Some(h) = auth_header {
            req = req.header(h);
        }
        let res = req.dispatch().await;
        assert_eq!(res.status(), Status::Unauthorized);
        assert_eq!(
            res.headers().get_one("WWW-Authenticate"),
            Some("Basic realm=\"app\"")
        );
        assert_eq!(res.content_type(), Some(ContentType::Plain));
        assert_eq!(res.into_string().await.unwrap(), "the handler's own 401");
    }
    // The guard's failure in an app handler gets the DRF body and header.
    let res = client.get("/api/hello/").dispatch().await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(res.headers().get_one("WWW-Authenticate"), Some("Token"));
    assert_eq!(
        body_json(res).await,
        json!({"detail": "Authentication credentials were not provided."})
    );
}

/// `token_cache_capacity` bounds the cache: with room for 5, after 40
/// tokens have been verified and their rows deleted behind the cache's
/// back, at most 5 are still served (moka evicts during later calls, so
/// keep asking until the bound shows, with a deadline). With room for all,
/// all 40 are.
pub async fn token_cache_capacity_bounds_the_cache(db: TestDb) {
    let capacity = 5;
    let mut served_by = Vec::new();
    for cap in [capacity, 1000] {
        let client = client(
            &db,
            json!({"token_cache_capacity": cap, "token_cache_poll": 60.0, "max_tokens_per_user": 1000}),
        )
        .await;
        if at(&client).list_users().await.unwrap().is_empty() {
            at(&client).create_user("alice", PW).await.unwrap();
        }
        let mut tokens = Vec::new();
        for _ in 0..40 {
            let t = at(&client).login("alice", PW).await.unwrap();
            assert_eq!(check(&client, &t).await, Status::Ok);
            tokens.push(t);
        }
        db.exec("DELETE FROM advanced_token_tokens").await;
        let started = std::time::Instant::now();
        let served = loop {
            let mut served = 0;
            for t in &tokens {
                if check(&client, t).await == Status::Ok {
                    served += 1;
                }
            }
            if served <= capacity || started.elapsed() > std::time::Duration::from_secs(10) {
                break served;
            }
            rocket::tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        served_by.push(served);
    }
    assert!(
        served_by[0] <= capacity,
        "capacity {capacity}: {} of 40 deleted tokens still served",
        served_by[0]
    );
    assert_eq!(served_by[1], 40, "capacity 1000 keeps every token");
}

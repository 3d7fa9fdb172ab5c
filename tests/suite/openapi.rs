//! The demo's OpenAPI document (`openapi.json`, served at
//! `GET /auth/openapi.json`) describes exactly the routes the demo mounts.

use std::collections::BTreeSet;

use rocket::figment::Figment;
use rocket::http::{Method, Status};
use rocket::local::asynchronous::Client;
use rocket_advanced_token::rocket_db_pools;
use serde_json::Value;

/// The HTTP methods an OpenAPI path item may hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The document's own route, which the document does not describe.
const DOC_PATH: &str = "/auth/openapi.json";

/// A figment with a fresh SQLite database in `dir`.
fn figment(dir: &tempfile::TempDir) -> Figment {
    let db = rocket_db_pools::Config {
        url: format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display()),
        min_connections: None,
        max_connections: 4,
        connect_timeout: 5,
        idle_timeout: None,
        extensions: None,
    };
    // Rocket's defaults alone: not ROCKET_* from the environment, not a
    // Rocket.toml in the working directory.
    crate::common::base_figment()
        .merge(("log_level", "critical"))
        .merge(("databases.advanced_token", db))
}

async fn demo_client(figment: Figment) -> Client {
    Client::tracked(rocket_advanced_token::demo(rocket::custom(figment)))
        .await
        .expect("the demo launches")
}

async fn fetch_document(client: &Client) -> Value {
    let res = client.get(DOC_PATH).dispatch().await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(
        res.content_type().map(|ct| ct.to_string()),
        Some("application/json".to_owned())
    );
    let text = res.into_string().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A mounted route's path as the document writes it: with a trailing `/`
/// (Rocket routes `/auth/login/` to a route `/auth/login`).
fn document_path(route_path: &str) -> String {
    let path = route_path.replace('<', "{").replace('>', "}");
    format!("{}/", path.trim_end_matches('/'))
}

/// A document path made requestable: `{id}` becomes a token id.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
}

/// Every (METHOD, path) the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for key in item.keys() {
            if METHODS.contains(&key.as_str()) {
                out.insert((key.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// The statuses an operation documents.
fn statuses(doc: &Value, method: &str, path: &str) -> BTreeSet<u16> {
    doc["paths"][path][method.to_ascii_lowercase()]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} has no responses"))
        .keys()
        .map(|k| {
            k.parse()
                .unwrap_or_else(|_| panic!("{method} {path}: status {k:?}"))
        })
        .collect()
}

#[test]
fn the_document_describes_exactly_the_mounted_routes() {
    crate::common::run(the_document_describes_exactly_the_mounted_routes_body())
}

async fn the_document_describes_exactly_the_mounted_routes_body() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = demo_client(figment(&dir)).await;
    let doc = fetch_document(&client).await;

    // What is served is the file at the crate's root.
    let file: Value = serde_json::from_str(include_str!("../../openapi.json")).unwrap();
    assert_eq!(
        doc, file,
        "the default prefix leaves the document unchanged"
    );
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.0."));

    let documented = documented(&doc);
    assert!(!documented.is_empty());

    // The routes with a real handler (named) and the 405-only and OPTIONS
    // handlers (unnamed), as (METHOD, document path).
    let mut named = BTreeSet::new();
    let mut unnamed = BTreeSet::new();
    for route in client.rocket().routes() {
        let path = route.uri.path();
        if path == DOC_PATH {
            continue;
        }
        let key = (route.method.as_str().to_owned(), document_path(path));
        if route.name.is_some() {
            named.insert(key);
        } else {
            unnamed.insert(key);
        }
    }
    assert!(!named.is_empty());

    // Every real handler is documented.
    let undocumented: Vec<_> = named.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "mounted but not documented: {undocumented:?}"
    );

    // Every documented operation is mounted: a real handler, or the OPTIONS
    // handler. The 405-only routes are not documented.
    let mounted: BTreeSet<_> = named
        .iter()
        .cloned()
        .chain(unnamed.iter().filter(|(m, _)| m == "OPTIONS").cloned())
        .collect();
    let unmounted: Vec<_> = documented.difference(&mounted).collect();
    assert!(
        unmounted.is_empty(),
        "documented but not mounted: {unmounted:?}"
    );
    let documented_405s: Vec<_> = unnamed
        .iter()
        .filter(|(m, _)| m != "OPTIONS")
        .filter(|key| documented.contains(*key))
        .collect();
    assert!(
        documented_405s.is_empty(),
        "405-only routes documented: {documented_405s:?}"
    );

    // Each documented operation answers (without credentials, without a
    // body) with a status it documents, never 404 or 405, both at the
    // documented path and without its trailing slash.
    for (method, path) in &documented {
        let documented_statuses = statuses(&doc, method, path);
        let m: Method = method.parse().expect("a method");
        let path = &concrete(path);
        for uri in [path.as_str(), path.trim_end_matches('/')] {
            let res = client.req(m, uri).dispatch().await;
            let status = res.status();
            assert!(
                status != Status::NotFound && status != Status::MethodNotAllowed,
                "{method} {uri} answered {status}"
            );
            // Every operation documents 500/503 for outages; there is none
            // here, so any 5xx is a bug, documented or not.
            assert!(
                status.code < 500,
                "{method} {uri} answered {status} with the database up"
            );
            assert!(
                documented_statuses.contains(&status.code),
                "{method} {uri} answered {status}, documented: {documented_statuses:?}"
            );
            if m == Method::Options {
                let allow = res
                    .headers()
                    .get_one("Allow")
                    .expect("OPTIONS answers with Allow");
                let documented_path = document_path(&path.replace("/1/", "/<id>/"));
                let want = &doc["paths"][documented_path.as_str()]["options"]["responses"]["204"]
                    ["headers"]["Allow"]["schema"]["enum"];
                assert_eq!(want, &serde_json::json!([allow]), "OPTIONS {uri}");
            }
        }
    }

    // And every unnamed non-OPTIONS route really is the 405 answer the
    // document leaves out.
    for (method, path) in unnamed.iter().filter(|(m, _)| m != "OPTIONS") {
        let m: Method = method.parse().expect("a method");
        let status = client.req(m, concrete(path)).dispatch().await.status();
        assert_eq!(status, Status::MethodNotAllowed, "{method} {path}");
    }

    // With a valid token and a valid login body too: never a 5xx.
    rocket_advanced_token::AdvancedToken::connect(client.rocket().figment())
        .await
        .unwrap()
        .create_user("alice", "pw-long-enough")
        .await
        .unwrap();
    let res = client
        .post("/auth/login/")
        .header(rocket::http::ContentType::JSON)
        .body(r#"{"username": "alice", "password": "pw-long-enough"}"#)
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    let token: Value = serde_json::from_str(&res.into_string().await.unwrap()).unwrap();
    let auth = rocket::http::Header::new(
        "Authorization",
        format!("Token {}", token["token"].as_str().unwrap()),
    );
    for (method, path) in &documented {
        let m: Method = method.parse().expect("a method");
        let res = client
            .req(m, concrete(path))
            .header(auth.clone())
            .dispatch()
            .await;
        assert!(
            res.status().code < 500,
            "{method} {path} with a token answered {}",
            res.status()
        );
        assert!(
            statuses(&doc, method, path).contains(&res.status().code),
            "{method} {path} with a token answered an undocumented {}",
            res.status()
        );
    }
}

#[test]
fn the_document_names_the_configured_prefix() {
    crate::common::run(the_document_names_the_configured_prefix_body())
}

async fn the_document_names_the_configured_prefix_body() {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = demo_client(figment(&dir).merge(("advanced_token.bearer_prefix", "Bearer"))).await;
    let doc = fetch_document(&client).await;
    let scheme = &doc["components"]["securitySchemes"]["tokenAuth"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "header");
    assert_eq!(scheme["name"], "Authorization");
    let description = scheme["description"].as_str().expect("a description");
    assert!(
        description.contains("`Authorization: Bearer <token>`"),
        "{description}"
    );
    assert!(
        !description.contains("`Authorization: Token <token>`"),
        "{description}"
    );
    assert!(
        description.contains("`<bearer_prefix> <token>`"),
        "{description}"
    );
}

/// The document is written for the default configuration; with rotation
/// and logout switched off, the demo serves it with the `Allow` values its
/// answers carry.
#[test]
fn the_document_names_the_configured_allow() {
    crate::common::run(the_document_names_the_configured_allow_body())
}

async fn the_document_names_the_configured_allow_body() {
    let dir = tempfile::tempdir().expect("temp dir");
    let off = figment(&dir)
        .merge(("advanced_token.allow_rotation", false))
        .merge(("advanced_token.allow_logout", false));
    let client = demo_client(off).await;
    let doc = fetch_document(&client).await;
    for (path, allow) in [
        ("/auth/token/", "GET, HEAD, OPTIONS"),
        ("/auth/logout/", "OPTIONS"),
        ("/auth/login/", "POST, OPTIONS"),
    ] {
        let res = client.req(Method::Options, path).dispatch().await;
        assert_eq!(res.headers().get_one("Allow"), Some(allow), "{path}");
        let item = &doc["paths"][path];
        let documented = &item["options"]["responses"]["204"]["headers"]["Allow"]["schema"]["enum"];
        assert_eq!(documented, &serde_json::json!([allow]), "{path}");
        let description = item["description"].as_str().expect("a description");
        assert!(
            description.contains(&format!("`Allow: {allow}`")),
            "{description}"
        );
    }
}

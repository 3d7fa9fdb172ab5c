//! The demo app that `advanced-token serve` (and `cargo run`) launches, and
//! the OpenAPI document it serves.

use rocket::serde::json::Json;
use rocket::{get, routes, Build, Rocket};
use serde_json::{json, Value};

use crate::routes::configured_allow;
use crate::service::{AdvancedToken, AuthUser};

/// Where the demo mounts the crate's routes, as `openapi.json` writes them.
const BASE: &str = "/auth";

/// The demo app: the fairing, the routes at `/auth`, `GET /api/hello/`
/// behind the [`AuthUser`] guard, and the OpenAPI document of all of them at
/// `GET /auth/openapi.json`. `advanced-token serve` launches it.
pub fn demo(rocket: Rocket<Build>) -> Rocket<Build> {
    rocket
        .attach(AdvancedToken::fairing())
        .mount(BASE, crate::routes())
        .mount(BASE, routes![openapi])
        .mount("/api", routes![hello])
}

/// The demo's protected example.
#[get("/hello")]
fn hello(user: AuthUser) -> Json<Value> {
    Json(json!({ "username": user.username }))
}

/// The OpenAPI 3.0 document of the demo's routes (`openapi.json` at the
/// crate's root), as written for the default prefix `Token`.
const OPENAPI: &str = include_str!("../openapi.json");

/// `GET /auth/openapi.json`: the document, with the configured bearer
/// prefix in the security scheme's description.
#[get("/openapi.json")]
fn openapi(at: &AdvancedToken) -> Json<Value> {
    let mut doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is valid JSON");
    let prefix = &at.config().bearer_prefix;
    if let Some(Value::String(text)) =
        doc.pointer_mut("/components/securitySchemes/tokenAuth/description")
    {
        *text = text.replace(
            "`Authorization: Token <token>`",
            &format!("`Authorization: {prefix} <token>`"),
        );
    }
    configure_allow(&mut doc, at);
    Json(doc)
}

/// The document's `Allow` values (written for the defaults) as `at` is
/// configured: `allow_rotation` and `allow_logout` switch methods off.
fn configure_allow(doc: &mut Value, at: &AdvancedToken) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let ours = path
            .trim_start_matches(BASE)
            .trim_end_matches('/')
            .replace("{id}", "<id>");
        let (default, now) = (
            configured_allow(&ours, None),
            configured_allow(&ours, Some(at)),
        );
        if default == now {
            continue;
        }
        if let Some(Value::String(text)) = item.get_mut("description") {
            *text = text.replace(&format!("`Allow: {default}`"), &format!("`Allow: {now}`"));
        }
        if let Some(value) = item.pointer_mut("/options/responses/204/headers/Allow/schema/enum/0")
        {
            *value = Value::String(now);
        }
    }
}

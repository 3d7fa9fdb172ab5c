//! The server `bench/run.sh` loads: the demo app (routes at /auth, the
//! guarded `GET /api/hello/`) plus `GET /bench/open/`, the same handler
//! without the guard. Configured like the demo, from Rocket.toml / ROCKET_*.

use rocket::serde::json::Json;
use rocket::{get, routes};
use serde_json::{json, Value};

/// The guarded handler's twin, without `AuthUser`.
#[get("/open/<_..>")]
fn open() -> Json<Value> {
    Json(json!({ "username": "anonymous" }))
}

#[rocket::launch]
fn rocket() -> _ {
    rocket_advanced_token::demo(rocket::build()).mount("/bench", routes![open])
}

//! The baseline `bench/run.sh` compares the demo's guarded route with: a
//! separate, minimal Rocket app (plain `rocket::build()`, no fairing, no
//! managed state) serving the same JSON at the same path, `GET /api/hello/`.
//! Whatever the guarded route costs on top of this is what the crate costs.

use rocket::serde::json::Json;
use rocket::{get, routes};
use serde_json::{json, Value};

#[get("/hello")]
fn hello() -> Json<Value> {
    Json(json!({ "username": "bench" }))
}

#[rocket::launch]
fn rocket() -> _ {
    rocket::build().mount("/api", routes![hello])
}

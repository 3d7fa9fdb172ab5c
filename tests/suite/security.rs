//! Regression tests for the security review (issue 12): each test here
//! failed on the code before its fix.

use rocket::http::{ContentType, Status};
use serde_json::json;

use crate::common::*;

const PW: &str = "correct horse battery";

/// Instantiates each named test of this file for one backend.
macro_rules! security_suite {
    ($backend:ident: $($name:ident),* $(,)?) => {
        $(
            #[rocket::async_test]
            async fn $name() {
                match crate::common::TestDb::new(crate::common::Backend::$backend).await {
                    Some(db) => crate::security::$name(db).await,
                    None => eprintln!(
                        "skipped: set {} to run the {} suite",
                        crate::common::Backend::$backend.env_var().unwrap_or("?"),
                        stringify!($backend)
                    ),
                }
            }
        )*
    };
}

macro_rules! all_security_tests {
    ($backend:ident) => {
        security_suite!($backend:
            token_responses_are_not_stored,
        );
    };
}

mod sqlite {
    all_security_tests!(Sqlite);
}

mod postgres {
    all_security_tests!(Postgres);
}

mod mysql {
    all_security_tests!(MySql);
}

/// RFC 6749 §5.1: a response carrying a token says `Cache-Control:
/// no-store` and `Pragma: no-cache`; others need not.
pub async fn token_responses_are_not_stored(db: TestDb) {
    let client = client(&db, json!({})).await;
    at(&client).create_user("alice", PW).await.unwrap();
    let res = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .body(json!({"username": "alice", "password": PW}).to_string())
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(res.headers().get_one("Cache-Control"), Some("no-store"));
    assert_eq!(res.headers().get_one("Pragma"), Some("no-cache"));
    let token = body_json(res).await["token"].as_str().unwrap().to_owned();
    let res = client
        .put("/auth/token/")
        .header(auth(&token))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::Ok);
    assert_eq!(res.headers().get_one("Cache-Control"), Some("no-store"));
    assert_eq!(res.headers().get_one("Pragma"), Some("no-cache"));
}

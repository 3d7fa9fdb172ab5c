//! Per-device sessions: `DELETE token/`, `GET tokens/`, `DELETE tokens/<id>`
//! and `revoke_token`, on every backend (instantiated in main.rs).

use rocket::http::Status;
use rocket::local::asynchronous::Client;
use serde_json::{json, Value};

use crate::common::*;

const PW: &str = "correct horse battery staple";

async fn tokens_of(client: &Client, token: &str) -> (Status, Value) {
    let res = client
        .get("/auth/tokens/")
        .header(auth(token))
        .dispatch()
        .await;
    let status = res.status();
    (status, body_json(res).await)
}

async fn delete(client: &Client, token: &str, uri: &str) -> (Status, Value) {
    let res = client
        .delete(uri.to_owned())
        .header(auth(token))
        .dispatch()
        .await;
    let status = res.status();
    (status, body_json(res).await)
}

/// How many single-token revocations the log holds (other instances read
/// it to drop just that token from their caches).
async fn revocations(db: &TestDb) -> i64 {
    let rows = db
        .query_strings(
            "SELECT COUNT(*) FROM advanced_token_revocation_log \
             WHERE kind = 'token' AND digest IS NOT NULL AND user_id IS NOT NULL",
        )
        .await;
    rows[0][0].as_ref().unwrap().parse().unwrap()
}

pub async fn sessions_list_and_delete_own_tokens(db: TestDb) {
    let client = client(&db, json!({"token_cache": false})).await;
    let at = at(&client);
    at.create_user("alice", PW).await.unwrap();
    at.create_user("bob", PW).await.unwrap();
    let a1 = login(&client, "alice", PW).await;
    let a2 = login(&client, "alice", PW).await;
    let b1 = login(&client, "bob", PW).await;

    let (status, list) = tokens_of(&client, &a1).await;
    assert_eq!(status, Status::Ok);
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    for item in &list {
        let keys: Vec<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut keys = keys;
        keys.sort();
        assert_eq!(
            keys,
            ["created_at", "current", "expires_at", "id", "last_used_at"]
        );
    }
    let current: Vec<&Value> = list.iter().filter(|t| t["current"] == true).collect();
    assert_eq!(current.len(), 1);
    // Never a token or a digest.
    let text = serde_json::to_string(&list).unwrap();
    let digests = db
        .query_strings("SELECT digest FROM advanced_token_tokens")
        .await;
    for t in [&a1, &a2, &b1] {
        assert!(!text.contains(t.as_str()));
    }
    for d in digests.iter().flatten().flatten() {
        assert!(!text.contains(d.as_str()));
    }
    let other = list.iter().find(|t| t["current"] == false).unwrap()["id"]
        .as_i64()
        .unwrap();

    // Bob's token id answers exactly like a missing one.
    let (_, bobs) = tokens_of(&client, &b1).await;
    let bob_id = bobs[0]["id"].as_i64().unwrap();
    let foreign = delete(&client, &a1, &format!("/auth/tokens/{bob_id}/")).await;
    let missing = delete(&client, &a1, "/auth/tokens/987654321/").await;
    let garbage = delete(&client, &a1, "/auth/tokens/abc").await;
    assert_eq!(foreign.0, Status::NotFound);
    assert_eq!(foreign, missing);
    assert_eq!(foreign, garbage);
    assert_eq!(foreign.1, json!({"detail": "Not found."}));
    assert_eq!(check(&client, &b1).await, Status::Ok);

    // Deleting one of one's own: that device is out, the others are not.
    let before = revocations(&db).await;
    let (status, body) = delete(&client, &a1, &format!("/auth/tokens/{other}")).await;
    assert_eq!(status, Status::Ok, "{body}");
    assert_eq!(body, json!({"detail": "Token deleted."}));
    assert_eq!(revocations(&db).await, before + 1, "logged");
    assert_eq!(check(&client, &a2).await, Status::Unauthorized);
    assert_eq!(check(&client, &a1).await, Status::Ok);
    assert_eq!(check(&client, &b1).await, Status::Ok);
    let (_, list) = tokens_of(&client, &a1).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Without a token: 401 with WWW-Authenticate.
    let res = client.get("/auth/tokens/").dispatch().await;
    assert_eq!(res.status(), Status::Unauthorized);
    assert_eq!(res.headers().get_one("WWW-Authenticate"), Some("Token"));
    let res = client.delete("/auth/tokens/1/").dispatch().await;
    assert_eq!(res.status(), Status::Unauthorized);
}

pub async fn delete_token_logs_out_only_this_device(db: TestDb) {
    let client = client(&db, json!({"token_cache": false})).await;
    at(&client).create_user("alice", PW).await.unwrap();
    let t1 = login(&client, "alice", PW).await;
    let t2 = login(&client, "alice", PW).await;
    let (status, body) = delete(&client, &t1, "/auth/token/").await;
    assert_eq!(status, Status::Ok);
    assert_eq!(body, json!({"detail": "Logged out of this device."}));
    assert_eq!(check(&client, &t1).await, Status::Unauthorized);
    assert_eq!(check(&client, &t2).await, Status::Ok);
    let (status, _) = delete(&client, &t1, "/auth/token").await;
    assert_eq!(status, Status::Unauthorized);

    // allow_logout = false: 405, nothing deleted.
    let off = crate::common::client(&db, json!({"allow_logout": false})).await;
    let res = off
        .delete("/auth/token/")
        .header(auth(&t2))
        .dispatch()
        .await;
    assert_eq!(res.status(), Status::MethodNotAllowed);
    assert_eq!(
        res.headers().get_one("Allow"),
        Some("GET, PUT, HEAD, OPTIONS")
    );
    assert_eq!(
        body_json(res).await,
        json!({"detail": "Logout is disabled."})
    );
    assert_eq!(check(&off, &t2).await, Status::Ok);
}

pub async fn revoke_token_by_id(db: TestDb) {
    let client = client(&db, json!({})).await;
    let at = at(&client);
    at.create_user("alice", PW).await.unwrap();
    let t1 = login(&client, "alice", PW).await;
    let t2 = login(&client, "alice", PW).await;
    let tokens = at.list_tokens("alice").await.unwrap();
    assert_eq!(tokens.len(), 2);
    let before = revocations(&db).await;
    assert!(at.revoke_token(tokens[0].id).await.unwrap());
    assert_eq!(revocations(&db).await, before + 1);
    assert!(!at.revoke_token(tokens[0].id).await.unwrap());
    assert_eq!(revocations(&db).await, before + 1);
    // The cache of this instance forgets it at once.
    let statuses = [check(&client, &t1).await, check(&client, &t2).await];
    assert!(statuses.contains(&Status::Unauthorized), "{statuses:?}");
    assert!(statuses.contains(&Status::Ok), "{statuses:?}");
}

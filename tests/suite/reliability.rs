//! Database outages: a TCP proxy in front of the server that the test cuts
//! and restores. The guard and the routes answer 503 within the connect
//! timeout, and the same process recovers once the database is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rocket::http::{ContentType, Status};
use rocket::tokio::io::{AsyncReadExt, AsyncWriteExt};
use rocket::tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use rocket::tokio::net::{TcpListener, TcpStream};
use rocket::tokio::task::JoinHandle;
use serde_json::json;

use crate::common::{at, auth, body_json, check, login, Backend, TestDb};

/// A TCP proxy to `target` that can be cut (every connection dropped, new
/// ones refused) and restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let frozen = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns2, frozen2) = (up.clone(), conns.clone(), frozen.clone());
        let accept = rocket::tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let frozen = frozen2.clone();
                let handle = rocket::tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(&target).await {
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        rocket::tokio::join!(pump(ri, wo, frozen.clone()), pump(ro, wi, frozen));
                    }
                });
                conns2.lock().unwrap().push(handle);
            }
        });
        Proxy {
            port,
            up,
            frozen,
            conns,
            _accept: accept,
        }
    }

    /// Keeps every connection open but forwards nothing: a server that has
    /// stopped answering.
    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Copies bytes one way, holding them while the proxy is frozen.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            rocket::tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `scheme://user@host:port/db?q` → the same through 127.0.0.1:`port`,
/// and the original `host:port`.
fn via_proxy(url: &str, port: u16) -> (String, String) {
    let start = url.find("://").unwrap() + 3;
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let authority = &url[start..end];
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let proxied = format!(
        "{}{}127.0.0.1:{}{}",
        &url[..start],
        userinfo,
        port,
        &url[end..]
    );
    (proxied, hostport.to_owned())
}

async fn outage(backend: Backend) {
    let Some(mut db) = TestDb::new(backend).await else {
        return;
    };
    let default_port = if backend == Backend::Postgres {
        5432
    } else {
        3306
    };
    let (_, mut target) = via_proxy(&db.url, 0);
    if !target.contains(':') {
        target = format!("{target}:{default_port}");
    }
    let proxy = Proxy::start(target).await;
    let direct = db.url.clone();
    db.url = via_proxy(&direct, proxy.port).0;

    let connect_timeout = 2;
    // The cache off: the first request after the cut must reach the
    // database (with the cache, see below).
    let figment = db
        .figment(json!({"token_cache": false}))
        .merge(("databases.advanced_token.connect_timeout", connect_timeout));
    let client = rocket::local::asynchronous::Client::tracked(crate::common::app(figment, None))
        .await
        .unwrap();
    at(&client)
        .create_user("alice", "pw-long-enough")
        .await
        .unwrap();
    let token = login(&client, "alice", "pw-long-enough").await;

    for mode in ["cut", "frozen"] {
        if mode == "cut" {
            proxy.cut()
        } else {
            proxy.freeze()
        }
        let deadline = Duration::from_secs(connect_timeout + 3);
        let unavailable =
            json!({"detail": "The authentication database is unavailable. Try again later."});
        for (method, path, body) in [
            ("GET", "/auth/token/", None),
            ("GET", "/api/hello/", None),
            ("PUT", "/auth/token/", None),
            ("GET", "/auth/logout/", None),
            (
                "POST",
                "/auth/login/",
                Some(json!({"username": "alice", "password": "pw-long-enough"})),
            ),
        ] {
            let started = Instant::now();
            let req = match method {
                "GET" => client.get(path),
                "PUT" => client.put(path),
                _ => client.post(path),
            };
            let req = match body {
                Some(b) => req.header(ContentType::JSON).body(b.to_string()),
                None => req.header(auth(&token)),
            };
            let res = req.dispatch().await;
            let took = started.elapsed();
            assert_eq!(res.status(), Status::ServiceUnavailable, "{method} {path}");
            assert_eq!(res.content_type(), Some(ContentType::JSON));
            assert_eq!(body_json(res).await, unavailable, "{method} {path}");
            assert!(took < deadline, "{mode}: {method} {path} took {took:?}");
        }

        // Back up: the same process recovers, without a restart.
        proxy.restore();
        proxy.thaw();
        let started = Instant::now();
        loop {
            if check(&client, &token).await == Status::Ok {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "no recovery");
            rocket::tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(check(&client, &token).await, Status::Ok);
        login(&client, "alice", "pw-long-enough").await;
    }
    db.url = direct;
}

#[rocket::async_test]
async fn outage_postgres() {
    outage(Backend::Postgres).await;
}

#[rocket::async_test]
async fn outage_mysql() {
    outage(Backend::MySql).await;
}

//! The test harness: a fresh database per test, on every backend.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocket::figment::Figment;
use rocket::http::{ContentType, Header, Status};
use rocket::local::asynchronous::{Client, LocalResponse};
use rocket::serde::json::Json;
use rocket::{get, routes, Build, Rocket};
use rocket_advanced_token::{AdvancedToken, AuthUser, Error};
use serde_json::{json, Value};

/// The database backends the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    MySql,
}

impl Backend {
    /// The environment variable naming the server for this backend.
    pub fn env_var(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("ADVANCED_TOKEN_TEST_POSTGRES"),
            Backend::MySql => Some("ADVANCED_TOKEN_TEST_MYSQL"),
        }
    }
}

/// A database of its own for one test, removed when dropped.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    drop_sql: Option<(String, String)>,
}

fn unique_name() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("advtok_test_{n:016x}")
}

/// Replaces the path (database name) of a server URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{db}{query}", &base[..host_end])
}

impl TestDb {
    /// A fresh database. For PostgreSQL and MySQL the server comes from
    /// the backend's variable; tests of those backends are marked ignored
    /// at build time when it is unset (see `build.rs`), so reaching here
    /// without it is a failure, and so is an unreachable server.
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/test.sqlite?mode=rwc", dir.path().display());
                TestDb {
                    backend,
                    url,
                    _dir: Some(dir),
                    drop_sql: None,
                }
            }
            Backend::Postgres | Backend::MySql => {
                let var = backend.env_var().unwrap();
                let server = std::env::var(var)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| {
                        panic!(
                            "{var} is not set, but this test was built to run (it was set at \
                             build time): set it, or rebuild without it to skip these tests"
                        )
                    });
                let name = unique_name();
                let quoted = if backend == Backend::Postgres {
                    format!("\"{name}\"")
                } else {
                    format!("`{name}`")
                };
                admin_exec(&server, &format!("CREATE DATABASE {quoted}"))
                    .await
                    .unwrap_or_else(|e| panic!("{var}: cannot create a test database: {e}"));
                let drop = if backend == Backend::Postgres {
                    format!("DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
                } else {
                    format!("DROP DATABASE IF EXISTS {quoted}")
                };
                TestDb {
                    backend,
                    url: with_database(&server, &name),
                    _dir: None,
                    drop_sql: Some((server, drop)),
                }
            }
        }
    }

    /// A figment with this database and `advanced_token` settings.
    pub fn figment(&self, settings: Value) -> Figment {
        base_figment()
            .merge(("log_level", "critical"))
            .merge((
                "databases.advanced_token",
                json!({ "url": self.url, "max_connections": 16, "connect_timeout": 5 }),
            ))
            .merge(("advanced_token", settings))
    }

    /// Runs SQL on this test's database and returns the rows as strings.
    pub async fn query_strings(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        use sqlx::{Column, Row, TypeInfo, ValueRef};
        fn cell<R: Row>(row: &R, i: usize) -> Option<String>
        where
            usize: sqlx::ColumnIndex<R>,
            for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
            for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        {
            let raw = row.try_get_raw(i).ok()?;
            if raw.is_null() {
                return None;
            }
            let ty = row.columns()[i].type_info().name().to_ascii_uppercase();
            if ty.contains("BOOL") {
                return row.try_get::<bool, _>(i).ok().map(|b| b.to_string());
            }
            if let Ok(s) = row.try_get::<String, _>(i) {
                return Some(s);
            }
            row.try_get::<i64, _>(i).ok().map(|n| n.to_string())
        }
        macro_rules! collect {
            ($rows:expr) => {
                $rows
                    .iter()
                    .map(|r| (0..r.columns().len()).map(|i| cell(r, i)).collect())
                    .collect()
            };
        }
        match self.backend {
            Backend::Sqlite => {
                let mut c: sqlx::SqliteConnection =
                    sqlx::Connection::connect(&self.url).await.unwrap();
                let rows = sqlx::query(sql).fetch_all(&mut c).await.unwrap();
                collect!(rows)
            }
            Backend::Postgres => {
                let mut c: sqlx::PgConnection = sqlx::Connection::connect(&self.url).await.unwrap();
                let rows = sqlx::query(sql).fetch_all(&mut c).await.unwrap();
                collect!(rows)
            }
            Backend::MySql => {
                let mut c: sqlx::MySqlConnection =
                    sqlx::Connection::connect(&self.url).await.unwrap();
                let rows = sqlx::query(sql).fetch_all(&mut c).await.unwrap();
                collect!(rows)
            }
        }
    }

    /// Runs one statement on this test's database.
    pub async fn exec(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let mut c: sqlx::SqliteConnection =
                    sqlx::Connection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            Backend::Postgres => {
                let mut c: sqlx::PgConnection = sqlx::Connection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
            Backend::MySql => {
                let mut c: sqlx::MySqlConnection =
                    sqlx::Connection::connect(&self.url).await.unwrap();
                sqlx::query(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// Runs `sql` (one `BIGINT` result, e.g. a `COUNT(*)`) over and over on
    /// one connection of its own until `stop` is set; returns the largest
    /// value seen and how many samples were taken. For watching an
    /// invariant *while* concurrent requests run, not only after.
    pub fn sample_max(
        &self,
        sql: &'static str,
        stop: Arc<std::sync::atomic::AtomicBool>,
    ) -> rocket::tokio::task::JoinHandle<(i64, u64)> {
        let (backend, url) = (self.backend, self.url.clone());
        rocket::tokio::spawn(async move {
            macro_rules! sample {
                ($conn:ty) => {{
                    let mut c: $conn = sqlx::Connection::connect(&url).await.unwrap();
                    let (mut max, mut n) = (i64::MIN, 0u64);
                    loop {
                        let done = stop.load(Ordering::SeqCst);
                        let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
                        max = max.max(v);
                        n += 1;
                        if done {
                            break (max, n);
                        }
                    }
                }};
            }
            match backend {
                Backend::Sqlite => sample!(sqlx::SqliteConnection),
                Backend::Postgres => sample!(sqlx::PgConnection),
                Backend::MySql => sample!(sqlx::MySqlConnection),
            }
        })
    }

    /// Every value of every column of every table in this test's database,
    /// each cast to text by the database itself (tables listed from the
    /// catalog). A value that cannot be read as text fails the test rather
    /// than being skipped.
    pub async fn dump_everything(&self) -> Vec<(String, String, String)> {
        let list = match self.backend {
            Backend::Sqlite => {
                "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p \
                 WHERE m.type = 'table'"
            }
            Backend::Postgres => {
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = 'public'"
            }
            Backend::MySql => {
                "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR) \
                 FROM information_schema.columns WHERE table_schema = DATABASE()"
            }
        };
        let columns = self.query_strings(list).await;
        assert!(!columns.is_empty(), "no tables found in the catalog");
        let cast = if self.backend == Backend::MySql {
            "CHAR"
        } else {
            "TEXT"
        };
        let quote = |n: &str| {
            if self.backend == Backend::MySql {
                format!("`{n}`")
            } else {
                format!("\"{n}\"")
            }
        };
        let mut out = Vec::new();
        for row in columns {
            let (table, column) = (row[0].clone().unwrap(), row[1].clone().unwrap());
            let sql = format!(
                "SELECT CAST({} AS {cast}) FROM {}",
                quote(&column),
                quote(&table)
            );
            macro_rules! cells {
                ($conn:ty) => {{
                    let mut c: $conn = sqlx::Connection::connect(&self.url).await.unwrap();
                    let rows: Vec<Option<String>> = sqlx::query_scalar(&sql)
                        .fetch_all(&mut c)
                        .await
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                    rows
                }};
            }
            let cells = match self.backend {
                Backend::Sqlite => cells!(sqlx::SqliteConnection),
                Backend::Postgres => cells!(sqlx::PgConnection),
                Backend::MySql => cells!(sqlx::MySqlConnection),
            };
            for cell in cells.into_iter().flatten() {
                out.push((table.clone(), column.clone(), cell));
            }
        }
        out
    }

    /// A connection of its own that runs `sql` (a lock) in a transaction
    /// and holds it until the returned value is dropped.
    pub async fn hold(&self, sql: &str) -> Held {
        use sqlx::{Connection, Executor};
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                c.execute(sql).await.unwrap();
                Held::Sqlite(c)
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                c.execute("BEGIN").await.unwrap();
                c.execute(sql).await.unwrap();
                Held::Postgres(c)
            }
            Backend::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.url).await.unwrap();
                c.execute(sql).await.unwrap();
                Held::MySql(c)
            }
        }
    }

    /// A connection of its own that opens a write transaction, runs `sql`
    /// in it and keeps it open, its locks held, until [`Held::commit`]:
    /// another writer, caught between its write and its commit.
    pub async fn hold_tx(&self, sql: &str) -> Held {
        use sqlx::Executor;
        match self.backend {
            Backend::Postgres => self.hold(sql).await,
            Backend::Sqlite => {
                let mut held = self.hold("BEGIN IMMEDIATE").await;
                if let Held::Sqlite(c) = &mut held {
                    c.execute(sql).await.unwrap();
                }
                held
            }
            Backend::MySql => {
                let mut held = self.hold("BEGIN").await;
                if let Held::MySql(c) = &mut held {
                    c.execute(sql).await.unwrap();
                }
                held
            }
        }
    }

    /// Whether a session of `client`'s app is waiting for a lock that
    /// another holds. PostgreSQL and MySQL/MariaDB say so; SQLite does not,
    /// so there it is a pool connection in use on two polls 100 ms apart
    /// (a read takes microseconds, a write waiting on the lock as long as
    /// the lock is held).
    pub async fn app_waits_on_a_lock(&self, client: &Client) -> bool {
        let sql = match self.backend {
            Backend::Postgres => {
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND datname = current_database()"
            }
            Backend::MySql => {
                "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'"
            }
            Backend::Sqlite => {
                let rocket_advanced_token::DbPool::Sqlite(pool) = at(client).pool() else {
                    unreachable!("a SQLite test database")
                };
                let busy = || pool.size() > pool.num_idle() as u32;
                if !busy() {
                    return false;
                }
                rocket::tokio::time::sleep(Duration::from_millis(100)).await;
                return busy();
            }
        };
        self.query_strings(sql).await[0][0].as_deref() != Some("0")
    }

    /// How many rows a table has.
    pub async fn count(&self, table: &str) -> i64 {
        let rows = self
            .query_strings(&format!("SELECT COUNT(*) FROM {table}"))
            .await;
        rows[0][0].as_ref().unwrap().parse().unwrap()
    }
}

async fn admin_exec(server: &str, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    if server.starts_with("postgres") {
        let mut c: sqlx::PgConnection = sqlx::Connection::connect(server).await?;
        c.execute(sql).await?;
    } else {
        let url = server.replacen("mariadb:", "mysql:", 1);
        let mut c: sqlx::MySqlConnection = sqlx::Connection::connect(&url).await?;
        c.execute(sql).await?;
    }
    Ok(())
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, sql)) = self.drop_sql.take() {
            // Drop runs inside the test's runtime: clean up on a thread of its own.
            let result = std::thread::spawn(move || {
                let rt = rocket::tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    rocket::tokio::time::timeout(Duration::from_secs(60), admin_exec(&server, &sql))
                        .await
                        .map_err(|_| "timed out after 60 s".to_owned())?
                        .map_err(|e| e.to_string())
                })
            })
            .join()
            .unwrap_or_else(|_| Err("the cleanup thread panicked".to_owned()));
            if let Err(e) = result {
                // A database left behind fails the test (unless it is
                // already failing: a second panic would abort the run).
                if std::thread::panicking() {
                    eprintln!("could not drop a test database: {e}");
                } else {
                    panic!("could not drop a test database: {e}");
                }
            }
        }
    }
}

/// How long any one test may run before it fails instead of hanging.
pub const TEST_DEADLINE: Duration = Duration::from_secs(600);

/// Runs a test body on a multi-threaded runtime (4 workers, whatever the
/// number of cores), so tasks it spawns — and Rocket's own, such as the
/// cache poll and the PostgreSQL listener — run in parallel, not
/// interleaved on one worker. The body fails after [`TEST_DEADLINE`].
pub fn run<F: std::future::Future>(body: F) -> F::Output {
    let rt = rocket::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a runtime");
    let out = rt.block_on(async {
        rocket::tokio::time::timeout(TEST_DEADLINE, body)
            .await
            .unwrap_or_else(|_| panic!("the test did not finish within {TEST_DEADLINE:?}"))
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    out
}

/// Polls `cond` until it holds; fails after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !cond().await {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        rocket::tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a command-line process may run in a test.
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// `Command::output` with a deadline: the process is killed and the test
/// fails if it runs past `deadline`.
pub trait OutputWithin {
    fn output_within(&mut self, deadline: Duration) -> std::process::Output;
}

impl OutputWithin for std::process::Command {
    fn output_within(&mut self, deadline: Duration) -> std::process::Output {
        use std::process::Stdio;
        let child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a process");
        wait_with_deadline(child, deadline)
    }
}

/// Waits for a child process with a deadline (killing it when the deadline
/// passes) and collects its output.
pub fn wait_with_deadline(
    mut child: std::process::Child,
    deadline: Duration,
) -> std::process::Output {
    use std::io::Read;
    fn reader<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for a child") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child process did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A connection holding a lock, from [`TestDb::hold`]; dropping it ends the
/// session and so the lock.
#[allow(dead_code)]
pub enum Held {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
    MySql(sqlx::MySqlConnection),
}

impl Held {
    /// Commits what [`TestDb::hold_tx`] wrote, and lets its locks go.
    pub async fn commit(self) {
        use sqlx::Executor;
        match self {
            Held::Sqlite(mut c) => c.execute("COMMIT").await.map(drop),
            Held::Postgres(mut c) => c.execute("COMMIT").await.map(drop),
            Held::MySql(mut c) => c.execute("COMMIT").await.map(drop),
        }
        .expect("the held transaction commits");
    }
}

/// Rocket's defaults alone: not the repository's Rocket.toml, not ROCKET_*.
pub fn base_figment() -> Figment {
    Figment::from(rocket::Config::debug_default())
}

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct FakeClock(pub Arc<AtomicI64>);

impl FakeClock {
    pub fn new() -> Self {
        FakeClock(Arc::new(AtomicI64::new(1_800_000_000)))
    }
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
    pub fn as_fn(&self) -> Arc<dyn Fn() -> i64 + Send + Sync> {
        let c = self.0.clone();
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

#[get("/hello/<_..>")]
fn hello(user: AuthUser) -> Json<Value> {
    Json(json!({ "username": user.username }))
}

#[get("/maybe")]
fn maybe(user: Option<AuthUser>) -> Json<Value> {
    Json(json!({ "username": user.map(|u| u.username) }))
}

/// Two guards on one request: with the per-request cache they see the same
/// outcome, even when the first lookup changes the database.
#[get("/twice")]
fn twice(a: Result<AuthUser, Error>, b: Result<AuthUser, Error>) -> Json<Value> {
    let show = |r: Result<AuthUser, Error>| match r {
        Ok(u) => u.username,
        Err(e) => e.to_string(),
    };
    Json(json!([show(a), show(b)]))
}

/// A handler that answers 401 itself, with its own `WWW-Authenticate`.
#[derive(rocket::Responder)]
#[response(status = 401, content_type = "plain")]
struct Own401 {
    body: &'static str,
    challenge: Header<'static>,
}

#[get("/own401")]
fn own401(_user: Option<AuthUser>) -> Own401 {
    Own401 {
        body: "the handler's own 401",
        challenge: Header::new("WWW-Authenticate", "Basic realm=\"app\""),
    }
}

/// The client IP the guard gave the user, beside Rocket's own answer.
#[get("/ip")]
fn ip(user: AuthUser, rocket_ip: Option<std::net::IpAddr>) -> Json<Value> {
    Json(json!({ "user": user.ip(), "rocket": rocket_ip }))
}

/// The app under test: the fairing, the routes at /auth, and guarded
/// handlers at /api.
pub fn app(figment: Figment, clock: Option<&FakeClock>) -> Rocket<Build> {
    let fairing = match clock {
        Some(c) => rocket::custom(figment).attach(AdvancedToken::fairing_with_clock(c.as_fn())),
        None => rocket::custom(figment).attach(AdvancedToken::fairing()),
    };
    fairing
        .mount("/auth", rocket_advanced_token::routes())
        .mount("/api", routes![hello, maybe, twice, own401, ip])
}

/// A client on a fresh app over `db`, with `settings` as the
/// `advanced_token` section.
pub async fn client(db: &TestDb, settings: Value) -> Client {
    Client::tracked(app(db.figment(settings), None))
        .await
        .expect("app launches")
}

/// The same, with a fake clock.
pub async fn client_with_clock(db: &TestDb, settings: Value, clock: &FakeClock) -> Client {
    Client::tracked(app(db.figment(settings), Some(clock)))
        .await
        .expect("app launches")
}

pub fn at(client: &Client) -> &AdvancedToken {
    client
        .rocket()
        .state::<AdvancedToken>()
        .expect("fairing attached")
}

pub async fn body_json(res: LocalResponse<'_>) -> Value {
    let text = res.into_string().await.unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// POST login/ with a JSON body; returns status and body.
pub async fn login_raw(client: &Client, username: &str, password: &str) -> (Status, Value) {
    let res = client
        .post("/auth/login/")
        .header(ContentType::JSON)
        .body(json!({ "username": username, "password": password }).to_string())
        .dispatch()
        .await;
    let status = res.status();
    (status, body_json(res).await)
}

/// Logs in and returns the token, failing the test otherwise.
pub async fn login(client: &Client, username: &str, password: &str) -> String {
    let (status, body) = login_raw(client, username, password).await;
    assert_eq!(status, Status::Ok, "{body}");
    body["token"].as_str().expect("token").to_owned()
}

pub fn auth(token: &str) -> Header<'static> {
    Header::new("Authorization", format!("Token {token}"))
}

/// GET /auth/token/ with a token; returns the status.
pub async fn check(client: &Client, token: &str) -> Status {
    client
        .get("/auth/token/")
        .header(auth(token))
        .dispatch()
        .await
        .status()
}

//! The built-in [`UserBackend`] for an app's users table named in
//! configuration ([`UsersTable`]): three queries, written at launch from
//! the configured table and column names, per backend.

use std::sync::Arc;

use serde_json::{Map, Value};
use sqlx::database::HasArguments;
use sqlx::query::Query;
use sqlx::{Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use crate::backend::{AppUser, LoginUser, UserBackend, UserId};
use crate::config::{IdType, UsersTable};
use crate::error::Error;

/// The app's users table, read through one of the crate's pools.
struct TableUsers<DB: Database> {
    pool: Pool<DB>,
    id_type: IdType,
    /// `id, password hash, active` by login name.
    by_login: String,
    /// `login, active, fields...` by id.
    by_id: String,
    /// Replaces the hash if it is unchanged: `new, id, old`.
    upgrade: String,
    fields: Vec<String>,
}

/// How one backend writes names and placeholders.
struct Dialect {
    quote: char,
    /// The `n`th placeholder (1-based).
    param: fn(usize) -> String,
    /// The id as text, for a `SELECT` (a UUID column needs a cast on
    /// PostgreSQL), and the placeholder an id is compared with.
    id_select: fn(&str, IdType) -> String,
    id_param: fn(usize, IdType) -> String,
}

fn quoted(q: char, name: &str) -> String {
    name.split('.')
        .map(|part| format!("{q}{part}{q}"))
        .collect::<Vec<_>>()
        .join(".")
}

impl<DB: Database> TableUsers<DB> {
    fn new(pool: Pool<DB>, t: &UsersTable, d: &Dialect) -> TableUsers<DB> {
        let q = |name: &str| quoted(d.quote, name);
        let (table, id) = (q(&t.table), q(&t.id));
        let (login, hash, active) = (q(&t.login), q(&t.password_hash), q(&t.active));
        let mut selected = vec![login.clone(), active.clone()];
        selected.extend(t.fields.iter().map(|f| q(f)));
        TableUsers {
            pool,
            id_type: t.id_type,
            by_login: format!(
                "SELECT {}, {hash}, {active} FROM {table} WHERE {login} = {}",
                (d.id_select)(&id, t.id_type),
                (d.param)(1)
            ),
            by_id: format!(
                "SELECT {} FROM {table} WHERE {id} = {}",
                selected.join(", "),
                (d.id_param)(1, t.id_type)
            ),
            upgrade: format!(
                "UPDATE {table} SET {hash} = {} WHERE {id} = {} AND {hash} = {}",
                (d.param)(1),
                (d.id_param)(2, t.id_type),
                (d.param)(3)
            ),
            fields: t.fields.clone(),
        }
    }
}

/// The table on a SQLite pool.
#[cfg(feature = "sqlite")]
pub(crate) fn on_sqlite(pool: sqlx::SqlitePool, t: &UsersTable) -> Arc<dyn UserBackend> {
    let d = Dialect {
        quote: '"',
        param: |n| format!("?{n}"),
        id_select: |id, _| id.to_owned(),
        id_param: |n, _| format!("?{n}"),
    };
    Arc::new(TableUsers::new(pool, t, &d))
}

/// The table on a PostgreSQL pool.
#[cfg(feature = "postgres")]
pub(crate) fn on_postgres(pool: sqlx::PgPool, t: &UsersTable) -> Arc<dyn UserBackend> {
    let d = Dialect {
        quote: '"',
        param: |n| format!("${n}"),
        // Read as the types the crate decodes (an `INTEGER` key is int4).
        id_select: |id, ty| match ty {
            IdType::Integer => format!("{id}::bigint"),
            IdType::Uuid | IdType::Text => format!("{id}::text"),
        },
        id_param: |n, ty| match ty {
            IdType::Uuid => format!("${n}::uuid"),
            _ => format!("${n}"),
        },
    };
    Arc::new(TableUsers::new(pool, t, &d))
}

/// The table on a MySQL pool.
#[cfg(feature = "mysql")]
pub(crate) fn on_mysql(pool: sqlx::MySqlPool, t: &UsersTable) -> Arc<dyn UserBackend> {
    let d = Dialect {
        quote: '`',
        param: |_| "?".to_owned(),
        id_select: |id, _| id.to_owned(),
        id_param: |_, _| "?".to_owned(),
    };
    Arc::new(TableUsers::new(pool, t, &d))
}

impl<DB: Database> TableUsers<DB> {
    /// A login row: the id (as its type gives it), the hash, active.
    fn login_user<R: Row>(&self, row: &R) -> Result<LoginUser, sqlx::Error>
    where
        usize: sqlx::ColumnIndex<R>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    {
        let id = match self.id_type {
            IdType::Integer => UserId::Int(row.try_get(0)?),
            IdType::Uuid | IdType::Text => UserId::Text(row.try_get(0)?),
        };
        Ok(LoginUser {
            id,
            password_hash: row.try_get(1)?,
            is_active: row.try_get(2)?,
        })
    }

    /// A user row: login, active, then the configured fields as JSON.
    fn app_user<R: Row>(&self, row: &R) -> Result<AppUser, sqlx::Error>
    where
        usize: sqlx::ColumnIndex<R>,
        for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
        for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
    {
        let mut fields = Map::new();
        for (i, name) in self.fields.iter().enumerate() {
            fields.insert(name.clone(), json_cell(row, i + 2));
        }
        Ok(AppUser {
            username: row.try_get(0)?,
            is_active: row.try_get(1)?,
            data: Arc::new(fields),
        })
    }
}

/// A cell as JSON: text, an integer, a float, a boolean, or null.
fn json_cell<R: Row>(row: &R, i: usize) -> Value
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return v.map_or(Value::Null, Value::String);
    }
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map_or(Value::Null, Value::from);
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
        return v.map_or(Value::Null, Value::Bool);
    }
    match row.try_get::<Option<f64>, _>(i) {
        Ok(v) => v.map_or(Value::Null, Value::from),
        Err(_) => Value::Null,
    }
}

/// Binds an id as the table's id column wants it.
fn bind_id<'q, DB: Database>(
    query: Query<'q, DB, <DB as HasArguments<'q>>::Arguments>,
    ty: IdType,
    id: &UserId,
) -> Query<'q, DB, <DB as HasArguments<'q>>::Arguments>
where
    i64: Encode<'q, DB> + Type<DB>,
    String: Encode<'q, DB> + Type<DB>,
{
    match (ty, id.as_i64()) {
        (IdType::Integer, Some(n)) => query.bind(n),
        // An integer table never holds a non-integer id: no match.
        (IdType::Integer, None) => query.bind(i64::MIN),
        _ => query.bind(id.to_string()),
    }
}

#[rocket::async_trait]
impl<DB: Database> UserBackend for TableUsers<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as HasArguments<'q>>::Arguments: IntoArguments<'q, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> f64: Decode<'q, DB> + Type<DB>,
    for<'q> bool: Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    async fn by_login(&self, login: &str) -> Result<Option<LoginUser>, Error> {
        let row = sqlx::query(&self.by_login)
            .bind(login)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| self.login_user(&r)).transpose()?)
    }

    async fn by_id(&self, id: &UserId) -> Result<Option<AppUser>, Error> {
        let query = bind_id(sqlx::query(&self.by_id), self.id_type, id);
        let row = query.fetch_optional(&self.pool).await?;
        Ok(row.map(|r| self.app_user(&r)).transpose()?)
    }

    async fn upgrade_password_hash(&self, id: &UserId, old: &str, new: &str) -> Result<(), Error> {
        let query = bind_id(sqlx::query(&self.upgrade).bind(new), self.id_type, id);
        query.bind(old).execute(&self.pool).await?;
        Ok(())
    }
}

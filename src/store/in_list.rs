//! Queries over a list of ids, keys or numbers of any length: run once per chunk of the list,
//! so no statement exceeds the databases' limits on bound values.

use sqlx::any::AnyRow;

use crate::store::{Op, Result, Store};

/// Ids per `IN (…)` list.
const CHUNK: usize = 400;

/// A bound value that comes before a query's id list.
#[derive(Clone)]
pub(crate) enum Bind {
    Text(String),
    Int(i64),
}

/// Runs `sql` once per chunk of `ids`: `{in}` in it becomes the chunk's placeholders, which
/// follow the `fixed` binds. Returns every row.
pub(crate) async fn rows_in(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    fixed: &[Bind],
    ids: &[String],
    op: &'static str,
) -> Result<Vec<AnyRow>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let sql = sql.replace("{in}", &placeholders(fixed.len() + 1, chunk.len()));
        let mut q = sqlx::query(&sql);
        for b in fixed {
            q = match b {
                Bind::Text(t) => q.bind(t.clone()),
                Bind::Int(i) => q.bind(*i),
            };
        }
        for id in chunk {
            q = q.bind(id.clone());
        }
        out.extend(q.fetch_all(&mut *conn).await.op(op)?);
    }
    Ok(out)
}

impl Store {
    /// [`rows_in`] on a pooled connection.
    pub(crate) async fn rows_in(
        &self,
        sql: &str,
        fixed: &[Bind],
        ids: &[String],
        op: &'static str,
    ) -> Result<Vec<AnyRow>> {
        let mut conn = self.pool().acquire().await.op(op)?;
        rows_in(&mut conn, sql, fixed, ids, op).await
    }
}

/// `$first, $first+1, …` for `n` binds.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

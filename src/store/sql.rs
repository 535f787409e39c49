//! Dialect-neutral SQL text with its bind values, as built by the search planner and run by the
//! store. Placeholders are `$1`, `$2`, … in order of first use; both SQLite and PostgreSQL accept
//! them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// A NULL text value.
    Null,
}

/// A statement and its binds. `push` adds a bind and returns its placeholder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SqlQuery {
    pub sql: String,
    pub binds: Vec<Bind>,
}

impl SqlQuery {
    pub fn push(&mut self, bind: Bind) -> String {
        self.binds.push(bind);
        format!("${}", self.binds.len())
    }
}

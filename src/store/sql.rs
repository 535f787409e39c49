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
    /// The plan made without the values is the right one for any values (the search planner's
    /// verdict on the statement's shape): PostgreSQL may plan it once per connection and reuse
    /// the plan, instead of planning each execution for its values.
    pub generic_plan: bool,
}

impl SqlQuery {
    pub fn push(&mut self, bind: Bind) -> String {
        self.binds.push(bind);
        format!("${}", self.binds.len())
    }
}

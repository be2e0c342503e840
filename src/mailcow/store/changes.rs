//! When mailcow's tables that a login decides on last changed: what `serve` polls to know
//! that a read it made moments ago is still what a read would return now.

use mysql::Row;
use mysql::prelude::Queryable;

use super::{Columns, Context, Store, StoreError};

/// MariaDB keeps each InnoDB table's last change (`UPDATE_TIME`, whole seconds, published at
/// commit) in memory, per server. The tables are those the read after a login's bind comes
/// from.
const TABLE_CHANGES: &str = "SELECT UNIX_TIMESTAMP(), TABLE_NAME, UNIX_TIMESTAMP(UPDATE_TIME) \
     FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
     AND TABLE_NAME IN ('mailbox', 'domain', 'templates') ORDER BY TABLE_NAME";

/// `UPDATE_TIME` is shown in the session's time zone: in UTC, `UNIX_TIMESTAMP()` turns it back
/// without the hour a daylight saving change repeats.
const IN_UTC: &str = "SET time_zone = '+00:00'";

/// Only a MariaDB server that is not a Galera node tells every change: MySQL 8 caches the
/// column for a day, and a Galera node knows its own commits only. (`@@wsrep_on` is an
/// unknown variable on servers built without Galera: hence `SHOW`.)
const IS_MARIADB: &str = "SELECT @@version LIKE '%MariaDB%'";
const GALERA: &str = "SHOW GLOBAL VARIABLES LIKE 'wsrep_on'";

/// One look at the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChanges {
    /// The server's clock, in seconds.
    pub now: i64,
    /// Each table with the second of its last change; `None`: none since the server loaded it.
    pub tables: Vec<(String, Option<i64>)>,
}

impl Store {
    /// Makes this connection fit for [`Store::table_changes`]; `false` when the server's
    /// times cannot be trusted.
    pub fn for_table_changes(&mut self) -> Result<bool, StoreError> {
        const CONTEXT: &str = "asking which database server this is";
        self.conn
            .query_drop(IN_UTC)
            .context("setting the session time zone")?;
        let mariadb: Option<i64> = self.conn.query_first(IS_MARIADB).context(CONTEXT)?;
        let galera: Option<(String, String)> = self.conn.query_first(GALERA).context(CONTEXT)?;
        let galera = galera.is_some_and(|(_, on)| on.eq_ignore_ascii_case("ON"));
        Ok(mariadb == Some(1) && !galera)
    }

    /// When the tables a login decides on last changed.
    pub fn table_changes(&mut self) -> Result<TableChanges, StoreError> {
        const CONTEXT: &str = "asking when mailcow's tables changed";
        let rows: Vec<Row> = self.conn.query(TABLE_CHANGES).context(CONTEXT)?;
        let mut changes = TableChanges {
            now: 0,
            tables: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            let mut columns = Columns::new(row, "information_schema.TABLES");
            changes.now = columns.next()?;
            changes.tables.push((columns.next()?, columns.next()?));
        }
        if changes.tables.is_empty() {
            return Err(StoreError::Data(
                "information_schema shows none of mailcow's tables".into(),
            ));
        }
        Ok(changes)
    }
}

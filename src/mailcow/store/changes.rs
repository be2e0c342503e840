//! When mailcow's tables that a login decides on last changed: what `serve` polls to know
//! that a read it made moments ago is still what a read would return now.

use mysql::Row;
use mysql::prelude::Queryable;

use super::{Columns, Context, Store, StoreError};

/// MariaDB keeps each InnoDB table's last change (`UPDATE_TIME`, whole seconds, published at
/// commit) in memory; MySQL 8 caches the column for a day, so it tells nothing there.
const TABLE_CHANGES: &str = "SELECT UNIX_TIMESTAMP(), @@version LIKE '%MariaDB%', TABLE_NAME, \
     UNIX_TIMESTAMP(UPDATE_TIME) FROM information_schema.TABLES \
     WHERE TABLE_SCHEMA = DATABASE() \
     AND TABLE_NAME IN ('mailbox', 'domain', 'templates', 'app_passwd') ORDER BY TABLE_NAME";

/// One look at the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChanges {
    /// The server's clock, in seconds.
    pub now: i64,
    /// Whether the server is MariaDB (the only one whose times can be trusted).
    pub mariadb: bool,
    /// Each table with the second of its last change; `None`: none since the server loaded it.
    pub tables: Vec<(String, Option<i64>)>,
}

impl Store {
    /// When the tables a login decides on last changed.
    pub fn table_changes(&mut self) -> Result<TableChanges, StoreError> {
        const CONTEXT: &str = "asking when mailcow's tables changed";
        let rows: Vec<Row> = self.conn.query(TABLE_CHANGES).context(CONTEXT)?;
        let mut changes = TableChanges {
            now: 0,
            mariadb: false,
            tables: Vec::with_capacity(rows.len()),
        };
        for row in rows {
            let mut columns = Columns::new(row, "information_schema.TABLES");
            changes.now = columns.next()?;
            changes.mariadb = columns.next::<i64>()? == 1;
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

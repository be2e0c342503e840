//! The sync's own table of LDAP-backed mailboxes missing from the directory listing (for
//! `sync.deactivate_missing`), and the deactivation itself. mailcow's tables never get a new
//! column: the counts live in a table of this program's own, created on first use.

use std::collections::HashMap;

use mysql::prelude::Queryable;
use mysql::{Row, TxOpts};

use super::tx::DELETE_SOGO_VIEW;
use super::{Columns, Context, Store, StoreError};

const CREATE_MISSING: &str = "CREATE TABLE IF NOT EXISTS mailcow_ldap_auth_missing (\
     username VARCHAR(255) NOT NULL PRIMARY KEY, \
     misses INT UNSIGNED NOT NULL, \
     deactivated TINYINT(1) NOT NULL DEFAULT 0, \
     first_missed DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP\
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci";

const MISSES: &str = "SELECT username, misses, deactivated FROM mailcow_ldap_auth_missing";

const COUNT_MISS: &str = "INSERT INTO mailcow_ldap_auth_missing (username, misses) VALUES (?, 1) \
     ON DUPLICATE KEY UPDATE misses = misses + 1";

const FORGET_MISS: &str = "DELETE FROM mailcow_ldap_auth_missing WHERE username = ?";

const MARK_DEACTIVATED: &str =
    "UPDATE mailcow_ldap_auth_missing SET deactivated = 1 WHERE username = ?";

/// Only an LDAP-backed, active mailbox (not a resource: `RESOURCE_KINDS`) is deactivated,
/// decided on the row as locked.
const LOCK_DEACTIVATABLE: &str = "SELECT 1 FROM mailbox WHERE username = ? \
     AND authsource = 'ldap' AND active <> 0 \
     AND kind NOT IN ('location', 'thing', 'group') FOR UPDATE";
const DEACTIVATE_MAILBOX: &str = "UPDATE mailbox SET active = 0 WHERE username = ?";
const DEACTIVATE_ALIAS: &str = "UPDATE alias SET active = 0 WHERE address = ?";

/// MariaDB's "table doesn't exist".
const NO_SUCH_TABLE: u16 = 1146;

/// One row of the miss counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Misses {
    /// Consecutive complete listings the mailbox was missing from.
    pub count: u32,
    /// Deactivated by the sync (an admin who activates it again has the last word).
    pub deactivated: bool,
}

impl Store {
    /// The miss counts, by address (lower case); empty before the table exists.
    pub fn misses(&mut self) -> Result<HashMap<String, Misses>, StoreError> {
        let rows: Vec<Row> = match self.conn.query(MISSES) {
            Ok(rows) => rows,
            Err(mysql::Error::MySqlError(e)) if e.code == NO_SUCH_TABLE => Vec::new(),
            Err(e) => return Err(e).context("reading the miss counts"),
        };
        rows.into_iter()
            .map(|row| {
                let mut c = Columns::new(row, "mailcow_ldap_auth_missing");
                let username: String = c.next()?;
                let misses = Misses {
                    count: c.next()?,
                    deactivated: c.next()?,
                };
                Ok((username.to_lowercase(), misses))
            })
            .collect()
    }

    /// Counts one more miss for each of `missing` and forgets the counts of `back` (listed
    /// again), in one transaction; creates the table on first use.
    pub fn record_misses(&mut self, missing: &[String], back: &[String]) -> Result<(), StoreError> {
        self.conn
            .query_drop(CREATE_MISSING)
            .context("creating the miss count table")?;
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .context("starting the miss count update")?;
        tx.exec_batch(COUNT_MISS, missing.iter().map(|u| (u,)))
            .context("counting missing mailboxes")?;
        tx.exec_batch(FORGET_MISS, back.iter().map(|u| (u,)))
            .context("forgetting miss counts")?;
        tx.commit().context("committing the miss counts")
    }

    /// Sets `active = 0` on the mailbox and its alias (and removes its SOGo view row, which
    /// exists only for active mailboxes), if it still is LDAP-backed and active. Whether it
    /// was deactivated.
    pub fn deactivate(&mut self, username: &str) -> Result<bool, StoreError> {
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .context("starting a deactivation")?;
        let row: Option<Row> = tx
            .exec_first(LOCK_DEACTIVATABLE, (username,))
            .context("locking the mailbox")?;
        if row.is_none() {
            return Ok(false);
        }
        for sql in [
            DEACTIVATE_MAILBOX,
            DEACTIVATE_ALIAS,
            DELETE_SOGO_VIEW,
            MARK_DEACTIVATED,
        ] {
            tx.exec_drop(sql, (username,))
                .context("deactivating the mailbox")?;
        }
        tx.commit().context("committing a deactivation")?;
        Ok(true)
    }
}

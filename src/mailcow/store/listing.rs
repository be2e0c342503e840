//! What a sync run reads chunk by chunk, so that its memory does not grow with the directory:
//! the mailbox rows of one chunk of listed addresses, and the addresses listed so far, kept in
//! a temporary table of the run's own connection (gone when the connection ends).

use mysql::prelude::Queryable;

use super::{Columns, Context, MailboxDigest, Store, StoreError, UnreadableMailbox};
use super::{bind, digest_from};

/// What the sync compares per mailbox (read by [`digest_from`]); the quota is read only to
/// find rows of a broken type, and the last column tells whether `attributes` is a JSON object
/// (or empty).
macro_rules! digest_columns {
    () => {
        "SELECT username, name, quota, \
         JSON_VALUE(attributes, '$.attribute_hash'), kind, authsource, active, \
         attributes IS NULL OR attributes = '' \
           OR (JSON_VALID(attributes) AND JSON_TYPE(attributes) = 'OBJECT')"
    };
}
/// The listed addresses: `username` has the type and collation of `mailbox.username` (copied
/// from it), so that it compares as mailcow does; `chunk` tells which chunk listed it first.
const CREATE_LISTED: &str = "CREATE TEMPORARY TABLE mailcow_ldap_auth_listed \
     (PRIMARY KEY (username)) SELECT username, 0 AS chunk FROM mailbox WHERE 0";

/// Followed by one `(?, <chunk>)` per address.
const INSERT_LISTED: &str = "INSERT IGNORE INTO mailcow_ldap_auth_listed (username, chunk) VALUES ";

/// Followed by `<chunk> AND username IN (`, the addresses as `?, …` and `)`.
const LISTED_BEFORE: &str = "SELECT username FROM mailcow_ldap_auth_listed WHERE chunk <> ";

/// Followed by the addresses as `?, …` and `)`.
const DIGESTS_OF: &str = concat!(digest_columns!(), " FROM mailbox WHERE username IN (");

/// Every LDAP-backed mailbox that can be deactivated, and whether this run listed it.
const LDAP_BACKED_WITH_LISTED: &str = concat!(
    digest_columns!(),
    ", EXISTS(SELECT 1 FROM mailcow_ldap_auth_listed l WHERE l.username = m.username) \
     FROM mailbox m WHERE m.authsource = 'ldap'"
);

/// `n` placeholders, comma-separated.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl Store {
    /// Starts the record of the addresses a run lists (a temporary table of this connection).
    pub fn start_listing(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_drop(CREATE_LISTED)
            .context("creating the table of listed addresses")
    }

    /// Records `addresses` (lower case, distinct) as listed by chunk number `chunk`; those a
    /// previous chunk listed already (an address carried by entries in two chunks).
    pub fn list_chunk(
        &mut self,
        chunk: u32,
        addresses: &[&str],
    ) -> Result<Vec<String>, StoreError> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let values = vec![format!("(?, {chunk})"); addresses.len()].join(", ");
        self.conn
            .query_drop(bind(&format!("{INSERT_LISTED}{values}"), addresses))
            .context("recording the listed addresses")?;
        if self.conn.affected_rows() == addresses.len() as u64 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "{LISTED_BEFORE}{chunk} AND username IN ({})",
            placeholders(addresses.len())
        );
        let rows: Vec<mysql::Row> = self
            .conn
            .query(bind(&sql, addresses))
            .context("finding addresses listed twice")?;
        rows.into_iter()
            .map(|row| Columns::new(row, "mailcow_ldap_auth_listed").next())
            .collect()
    }

    /// The mailboxes of `addresses` (compared in the column's collation), in one round trip.
    pub fn mailbox_digests_of(
        &mut self,
        addresses: &[&str],
        mut each: impl FnMut(Result<MailboxDigest, UnreadableMailbox>),
    ) -> Result<(), StoreError> {
        if addresses.is_empty() {
            return Ok(());
        }
        let sql = format!("{DIGESTS_OF}{})", placeholders(addresses.len()));
        let rows = self
            .conn
            .query_iter(bind(&sql, addresses))
            .context("reading the mailboxes of listed addresses")?;
        for row in rows {
            each(digest_row(
                row.context("reading the mailboxes of listed addresses")?,
            ));
        }
        Ok(())
    }

    /// Every LDAP-backed mailbox, streamed row by row, with whether this run listed it (after
    /// [`Store::start_listing`] and the chunks).
    pub fn ldap_backed_with_listed(
        &mut self,
        mut each: impl FnMut(Result<MailboxDigest, UnreadableMailbox>, bool),
    ) -> Result<(), StoreError> {
        let rows = self
            .conn
            .query_iter(LDAP_BACKED_WITH_LISTED)
            .context("listing the LDAP-backed mailboxes")?;
        for row in rows {
            let mut row = row.context("listing the LDAP-backed mailboxes")?;
            let listed = row
                .take::<Option<bool>, usize>(row.len().saturating_sub(1))
                .flatten()
                .unwrap_or(false);
            each(digest_row(row), listed);
        }
        Ok(())
    }
}

/// A digest, or the row's address and why it cannot be read.
fn digest_row(row: mysql::Row) -> Result<MailboxDigest, UnreadableMailbox> {
    let mut columns = Columns::new(row, "mailbox");
    let username = columns.text_lossy(0);
    digest_from(&mut columns).map_err(|error| UnreadableMailbox { username, error })
}

//! Every SQL statement of the program, and the one MySQL connection they run on.
//!
//! Values reach the server in one of two ways, neither of which depends on `sql_mode` or the
//! connection's character set:
//! - writes and locking reads run as prepared statements (binary protocol, values sent apart
//!   from the text);
//! - the per-login reads, which must cost one round trip, carry each value as a hex string
//!   literal, `_utf8mb4 X'…'` (see [`bind`]). A driver-escaped literal is not safe there: a
//!   server that turns on `NO_BACKSLASH_ESCAPES` through `init_connect` does so after the
//!   handshake the driver learns the mode from.
//!
//! Rows are converted column by column ([`Columns`]): a column of an unexpected type is a
//! [`StoreError::Data`], never a panic.

mod changes;
mod credentials;
mod listing;
mod missing;
mod rows;
mod tx;

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder, Row};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::Mailbox;
use super::template::Template;
use crate::config::{DatabaseAddress, DatabaseConfig, RedisConfig};
pub use changes::TableChanges;
pub use credentials::{AppPassword, LoginRead};
pub(crate) use rows::Columns;
pub use tx::{
    AddressFacts, DomainRow, DomainUsage, LockedMailbox, MailboxUpdate, NewMailboxRow, Tx,
    USER_ACL_COLUMNS,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unreachable: {0}")]
    Unreachable(mysql::Error),
    #[error("database error while {context}: {source}")]
    Query {
        context: &'static str,
        source: mysql::Error,
    },
    #[error("database holds unexpected data: {0}")]
    Data(String),
}

impl StoreError {
    /// A deadlock or a duplicate key: a race with another writer, worth another attempt.
    pub fn is_race(&self) -> bool {
        matches!(self, StoreError::Query { source: mysql::Error::MySqlError(e), .. }
            if e.code == 1213 || e.code == 1062)
    }
}

/// Adds what was being done to a driver error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, mysql::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { context, source })
    }
}

/// Lock waits (another login holding the domain row, an admin's long transaction) end as a
/// temporary failure after 3 s instead of hanging the login; READ COMMITTED so that the reads after the
/// domain lock see what the previous holder committed and no gap locks are taken.
const PREPARE_WRITER: &str = "SET SESSION innodb_lock_wait_timeout = 3; \
     SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// This program's own table (never a column in mailcow's): per domain, how many of its
/// transactions added mailboxes or quota. A sync batch reads the domain's usage before it
/// takes the domain lock, and again under the lock only when the count moved meanwhile, so
/// the lock is held for milliseconds, not for a read of every mailbox of the domain
/// (docs/performance.md, "Sync"). Created on a writer connection's first transaction.
const CREATE_DOMAIN_WRITES: &str = "CREATE TABLE IF NOT EXISTS mailcow_ldap_auth_domain_writes (\
     domain VARCHAR(255) NOT NULL PRIMARY KEY, \
     writes BIGINT UNSIGNED NOT NULL\
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci";

/// The columns of [`Mailbox`] with the domain's `active` flag, from `mailbox m` joined with
/// `domain d` (read by [`mailbox_from`], in this order).
macro_rules! mailbox_columns {
    () => {
        "SELECT m.username, m.name, m.quota, m.local_part, m.domain, m.attributes, m.kind, \
         m.authsource, m.active, d.active"
    };
}
macro_rules! mailbox_join {
    () => {
        " FROM mailbox m LEFT JOIN domain d ON d.domain = m.domain"
    };
}

const MAILBOX_BY_USERNAME: &str =
    concat!(mailbox_columns!(), mailbox_join!(), " WHERE m.username = ?");

/// The mailbox and, in the same round trip, the mailbox template a login maps it to (the
/// lowest id of that name, compared in the column's collation as mailcow's own query does).
const MAILBOX_WITH_TEMPLATE: &str = concat!(
    mailbox_columns!(),
    ", t.id, t.template, t.attributes",
    mailbox_join!(),
    " LEFT JOIN templates t ON t.id = (SELECT MIN(id) FROM templates \
       WHERE type = 'mailbox' AND template = ?) \
     WHERE m.username = ?"
);

const TEMPLATE_BY_NAME: &str = "SELECT id, template, attributes FROM templates \
     WHERE type = 'mailbox' AND template = ? ORDER BY id LIMIT 1";

const TEMPLATE_NAMES: &str = "SELECT template FROM templates WHERE type = 'mailbox' ORDER BY id";

const SCHEMA_VERSION: &str = "SELECT version FROM versions WHERE application = 'db_schema'";

const PASSWORD_IS_EMPTY: &str = "SELECT password = '' FROM mailbox WHERE username = ?";

/// As mailcow's own switch: an external authsource cannot change a password, so a pending
/// "force password update" is cleared (only then is `attributes` touched). Only switched while
/// the authsource still is the one read before (`<=>`: NULL too).
const SWITCH_AUTHSOURCE: &str = "UPDATE mailbox SET authsource = ?, attributes = IF(? <> 'mailcow' \
     AND JSON_VALUE(attributes, '$.force_pw_update') = '1', \
     JSON_SET(attributes, '$.force_pw_update', '0'), attributes) \
     WHERE username = ? AND authsource <=> ?";

/// `sql` with each `?` replaced by the matching value as `_utf8mb4 X'<hex>'`. A hex literal
/// means the same bytes under every `sql_mode` (`NO_BACKSLASH_ESCAPES`, `ANSI_QUOTES`) and
/// every client character set, and the introducer makes it a utf8mb4 string of coercibility
/// "coercible": compared with a column, the column's collation decides, exactly as for a
/// quoted literal (`username = …` stays case-insensitive under `utf8mb4_general_ci`).
fn bind(sql: &str, values: &[&str]) -> String {
    debug_assert_eq!(sql.matches('?').count(), values.len(), "{sql}");
    let mut parts = sql.split('?');
    let mut text = String::with_capacity(sql.len() + 64);
    text.push_str(parts.next().unwrap_or_default());
    for (value, part) in values.iter().zip(parts) {
        text.push_str("_utf8mb4 X'");
        text.push_str(&hex::encode(value));
        text.push('\'');
        text.push_str(part);
    }
    text
}

pub struct Store {
    conn: Conn,
    /// Whether [`PREPARE_WRITER`] ran on this connection.
    writer: bool,
    /// Whether this connection could make (or finds) [`CREATE_DOMAIN_WRITES`]'s table: only
    /// then does it count its writes and read usage early.
    counts_domain_writes: bool,
    /// mailcow's Redis, where provisioning writes the rate limit (`None`: not configured).
    redis: Option<RedisConfig>,
}

impl Store {
    /// Whether the connection still answers (for a pooled one that lay idle).
    pub fn ping(&mut self) -> bool {
        self.conn.ping().is_ok()
    }

    pub fn connect(config: &DatabaseConfig, timeout: Duration) -> Result<Store, StoreError> {
        let builder = OptsBuilder::new()
            .user(Some(&config.user))
            .pass(Some(config.password.expose_secret()))
            .db_name(Some(&config.name))
            // Without these the driver spends round trips on SELECT @@max_allowed_packet and
            // on reconnecting a loopback TCP connection over the unix socket.
            .prefer_socket(false)
            .max_allowed_packet(Some(16 * 1024 * 1024))
            .tcp_connect_timeout(Some(timeout))
            .read_timeout(Some(timeout))
            .write_timeout(Some(timeout));
        let builder = match &config.address {
            DatabaseAddress::Socket(path) => builder.socket(Some(path.to_string_lossy())),
            DatabaseAddress::Tcp { host, port } => {
                builder.ip_or_hostname(Some(host)).tcp_port(*port)
            }
        };
        let conn = Conn::new(builder).map_err(StoreError::Unreachable)?;
        Ok(Store {
            conn,
            writer: false,
            counts_domain_writes: false,
            redis: None,
        })
    }

    /// This store with mailcow's Redis, for provisioning's rate limits.
    pub fn with_redis(mut self, redis: Option<&RedisConfig>) -> Store {
        self.redis = redis.cloned();
        self
    }

    /// mailcow's Redis, when configured.
    pub fn redis(&self) -> Option<&RedisConfig> {
        self.redis.as_ref()
    }

    /// One row of a read in one round trip (text protocol, values bound by [`bind`]).
    fn read_row(
        &mut self,
        sql: &str,
        values: &[&str],
        context: &'static str,
    ) -> Result<Option<Row>, StoreError> {
        self.conn.query_first(bind(sql, values)).context(context)
    }

    /// The mailbox with this address (case-insensitive, as mailcow's collation), if any.
    pub fn mailbox(&mut self, username: &str) -> Result<Option<Mailbox>, StoreError> {
        self.read_row(MAILBOX_BY_USERNAME, &[username], "looking up the mailbox")?
            .map(|row| mailbox_from(&mut Columns::new(row, "mailbox")))
            .transpose()
    }

    /// The mailbox (`None`: it does not exist) and the mailbox template called `template`, in
    /// one round trip.
    pub fn mailbox_with_template(
        &mut self,
        username: &str,
        template: &str,
    ) -> Result<Option<(Mailbox, TemplateRead)>, StoreError> {
        let Some(row) = self.read_row(
            MAILBOX_WITH_TEMPLATE,
            &[template, username],
            "looking up the mailbox and its template",
        )?
        else {
            return Ok(None);
        };
        let mut columns = Columns::new(row, "mailbox");
        let mailbox = mailbox_from(&mut columns)?;
        columns.rename("templates");
        Ok(Some((mailbox, template_from(&mut columns))))
    }

    /// The mailbox template called `name` (the lowest id when several share the name, compared
    /// with the column's case-insensitive collation as mailcow's own query does), if any.
    pub fn template(&mut self, name: &str) -> Result<Option<Template>, StoreError> {
        self.read_row(TEMPLATE_BY_NAME, &[name], "loading the mailbox template")?
            .map_or(Ok(None), |row| {
                template_from(&mut Columns::new(row, "templates"))
            })
    }

    /// Names of all mailbox templates (`templates.type = 'mailbox'`).
    pub fn template_names(&mut self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<Row> = self
            .conn
            .query(TEMPLATE_NAMES)
            .context("listing the mailbox templates")?;
        rows.into_iter()
            .map(|row| Columns::new(row, "templates").next())
            .collect()
    }

    /// mailcow's schema version (`versions.db_schema`).
    pub fn schema_version(&mut self) -> Result<String, StoreError> {
        let row: Option<Row> = self
            .conn
            .query_first(SCHEMA_VERSION)
            .context("reading the schema version")?;
        let row = row.ok_or_else(|| {
            StoreError::Data("no db_schema row in `versions`: is this mailcow's database?".into())
        })?;
        Columns::new(row, "versions").next()
    }

    /// Whether the mailbox's SQL password is set. Only the comparison with the empty string
    /// leaves the database, never the hash.
    pub fn sql_password(&mut self, username: &str) -> Result<SqlPassword, StoreError> {
        let row: Option<Row> = self
            .conn
            .exec_first(PASSWORD_IS_EMPTY, (username,))
            .context("reading whether the mailbox has a password")?;
        let Some(row) = row else {
            return Ok(SqlPassword::NoMailbox);
        };
        Ok(if Columns::new(row, "mailbox").next()? {
            SqlPassword::Empty
        } else {
            SqlPassword::Set
        })
    }

    /// Sets `mailbox.authsource` for each change, one UPDATE per mailbox, all in one
    /// transaction: either every change is written or none. A row is only switched while its
    /// authsource still is `from` (`None` = NULL), the value read before; no other column is
    /// written (`modified` follows through its ON UPDATE). Per change: whether it was switched.
    pub fn switch_authsources(
        &mut self,
        changes: &[AuthsourceChange],
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self
            .conn
            .start_transaction(mysql::TxOpts::default())
            .context("starting the authsource switch")?;
        let mut switched = Vec::with_capacity(changes.len());
        for change in changes {
            tx.exec_drop(
                SWITCH_AUTHSOURCE,
                (
                    change.to,
                    change.to,
                    &change.username,
                    change.from.as_deref(),
                ),
            )
            .context("switching the mailbox authsource")?;
            switched.push(tx.affected_rows() == 1);
        }
        tx.commit().context("committing the authsource switch")?;
        Ok(switched)
    }

    /// A provisioning transaction: its reads lock the rows they decide on (`FOR UPDATE`) until
    /// it ends. The session gets bounded lock waits and READ COMMITTED first.
    pub fn transaction(&mut self) -> Result<Tx<'_>, StoreError> {
        if !self.writer {
            self.conn
                .query_drop(PREPARE_WRITER)
                .context("preparing the provisioning session")?;
            // Without the CREATE privilege: the usage is read under the lock, as before.
            self.counts_domain_writes = self.conn.query_drop(CREATE_DOMAIN_WRITES).is_ok();
            self.writer = true;
        }
        Tx::start(&mut self.conn, true, self.counts_domain_writes)
    }

    /// A transaction for previews (dry runs): the same reads, without locks; never committed.
    pub fn snapshot(&mut self) -> Result<Tx<'_>, StoreError> {
        Tx::start(&mut self.conn, false, false)
    }
}

/// A mailbox template as read: `Ok(None)` when missing, `Err` when its row cannot be read.
pub type TemplateRead = Result<Option<Template>, StoreError>;

/// A mailbox's SQL password, as far as [`Store::sql_password`] tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlPassword {
    /// No such mailbox.
    NoMailbox,
    /// The empty string, as mailcow leaves it for a mailbox created with another authsource:
    /// it cannot log in with a mailcow password.
    Empty,
    Set,
}

/// One `mailbox.authsource` change for [`Store::switch_authsources`].
#[derive(Debug, Clone)]
pub struct AuthsourceChange {
    /// `mailbox.username` as stored.
    pub username: String,
    /// The authsource read before (`None` = NULL).
    pub from: Option<String>,
    /// `mailcow` or `ldap`.
    pub to: &'static str,
}

/// One mailbox as the sync compares it with its LDAP entry.
#[derive(Debug)]
pub struct MailboxDigest {
    pub username: String,
    pub name: String,
    pub attribute_hash: Option<String>,
    pub kind: String,
    /// `None` for NULL, which mailcow treats as `mailcow`.
    pub authsource: Option<String>,
    pub active: i64,
}

/// A `mailbox` row that could not be read, and why.
#[derive(Debug)]
pub struct UnreadableMailbox {
    pub username: String,
    pub error: StoreError,
}

/// A [`Mailbox`] from the columns of `mailbox_columns!`, in that order.
fn mailbox_from(c: &mut Columns) -> Result<Mailbox, StoreError> {
    let username: String = c.next()?;
    let name: Option<String> = c.next()?;
    // Signed as the column is: a negative quota is bad data, not a reason to panic.
    let quota: i64 = c.next()?;
    let local_part = c.next()?;
    let domain = c.next()?;
    let attributes: Option<String> = c.next()?;
    let kind = c.next()?;
    let authsource = c.next()?;
    let active = c.next()?;
    let domain_active = c.next()?;
    let attributes = match attributes.as_deref() {
        None | Some("") => Map::new(),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            StoreError::Data(format!(
                "mailbox.attributes of {username} is not a JSON object: {e}"
            ))
        })?,
    };
    let quota = u64::try_from(quota)
        .map_err(|_| StoreError::Data(format!("mailbox.quota of {username} is negative")))?;
    Ok(Mailbox {
        username,
        name: name.unwrap_or_default(),
        quota,
        local_part,
        domain,
        attributes,
        kind,
        authsource,
        active,
        domain_active,
    })
}

/// A [`MailboxDigest`] from the columns of [`MAILBOX_DIGESTS`].
fn digest_from(c: &mut Columns) -> Result<MailboxDigest, StoreError> {
    let username: String = c.next()?;
    let name: Option<String> = c.next()?;
    let quota: i64 = c.next()?;
    let digest = MailboxDigest {
        attribute_hash: c.next()?,
        kind: c.next()?,
        authsource: c.next()?,
        active: c.next()?,
        name: name.unwrap_or_default(),
        username,
    };
    let object: bool = c.next()?;
    if !object {
        return Err(StoreError::Data(format!(
            "mailbox.attributes of {} is not a JSON object",
            digest.username
        )));
    }
    if quota < 0 {
        return Err(StoreError::Data(format!(
            "mailbox.quota of {} is negative",
            digest.username
        )));
    }
    Ok(digest)
}

/// A [`Template`] from `id, template, attributes` (all NULL: no such template).
fn template_from(c: &mut Columns) -> Result<Option<Template>, StoreError> {
    let id: Option<i64> = c.next()?;
    let name: Option<String> = c.next()?;
    let raw: Option<String> = c.next()?;
    let (Some(_), Some(name)) = (id, name) else {
        return Ok(None);
    };
    let raw = raw.ok_or_else(|| {
        StoreError::Data(format!("mailbox template {name} has no attributes (NULL)"))
    })?;
    let attributes = match serde_json::from_str(&raw) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(StoreError::Data(format!(
                "the attributes of mailbox template {name} are not a JSON object"
            )));
        }
    };
    Ok(Some(Template::new(name, raw, attributes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_hex_literals_whatever_they_hold() {
        assert_eq!(
            bind("SELECT 1 WHERE a = ? AND b = ?", &["o'ne\\il", ""]),
            "SELECT 1 WHERE a = _utf8mb4 X'6f276e655c696c' AND b = _utf8mb4 X''"
        );
        let hostile = "x' OR 1=1 -- \\' \" # /* é";
        let text = bind("SELECT ?", &[hostile]);
        assert!(
            text.strip_prefix("SELECT _utf8mb4 X'")
                .and_then(|t| t.strip_suffix('\''))
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit())),
            "{text}"
        );
    }
}

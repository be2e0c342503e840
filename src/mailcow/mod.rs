//! mailcow's MySQL/MariaDB schema: mailbox lookups, templates and provisioning.

pub mod address;
pub mod provision;
pub mod template;

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use crate::config::{DatabaseAddress, DatabaseConfig};

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

/// Adds what was being done to a driver error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, mysql::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { context, source })
    }
}

/// Resource mailboxes (`mailbox.kind`) never log in.
pub const RESOURCE_KINDS: [&str; 3] = ["location", "thing", "group"];

/// One row of `mailbox` with its domain's `active` flag.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub username: String,
    pub name: String,
    /// Bytes; 0 = unlimited.
    pub quota: u64,
    pub local_part: String,
    pub domain: String,
    pub attributes: Map<String, Value>,
    pub kind: String,
    /// `None` for NULL, which mailcow treats as `mailcow`.
    pub authsource: Option<String>,
    pub active: i64,
    /// `None` when the domain row is missing.
    pub domain_active: Option<i64>,
}

impl Mailbox {
    pub fn is_resource(&self) -> bool {
        RESOURCE_KINDS.contains(&self.kind.as_str())
    }

    /// A string-valued key of `attributes` (mailcow writes every value as a string).
    pub fn attribute(&self, key: &str) -> Option<String> {
        match self.attributes.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "1" } else { "0" }.into()),
            _ => None,
        }
    }

    /// mailcow's protocol rule: refused when `<service>_access` exists and is not "1".
    /// Dovecot's submission service sends mail, so it answers to `smtp_access`.
    pub fn service_allowed(&self, service: &str) -> bool {
        let service = service.to_ascii_lowercase();
        let key = match service.as_str() {
            "submission" => "smtp_access".to_owned(),
            other => format!("{other}_access"),
        };
        self.attributes.get(&key).is_none() || self.attribute(&key).as_deref() == Some("1")
    }
}

pub struct Store {
    conn: Conn,
}

impl Store {
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
        Ok(Store { conn })
    }

    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// A read in one round trip, for the per-login queries: `sql` with each `?` replaced by
    /// the string literal the driver's own escaper makes of the parameter (honouring the
    /// server's NO_BACKSLASH_ESCAPES). A prepared statement costs a prepare, an execute and a
    /// close instead, on a connection that lives for one login.
    pub(crate) fn read_row<T: mysql::prelude::FromRow>(
        &mut self,
        sql: &str,
        params: &[&str],
        context: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let no_backslash_escapes = self.conn.no_backslash_escape();
        let mut params = params.iter();
        let mut text = String::with_capacity(sql.len() + 64);
        for (i, part) in sql.split('?').enumerate() {
            if i > 0 {
                let param = params.next().expect("a parameter for every placeholder");
                text.push_str(&mysql::Value::from(*param).as_sql(no_backslash_escapes));
            }
            text.push_str(part);
        }
        debug_assert!(params.next().is_none(), "a placeholder for every parameter");
        self.conn.query_first(text).context(context)
    }

    /// The mailbox with this address (case-insensitive, as mailcow's collation), if any.
    pub fn mailbox(&mut self, username: &str) -> Result<Option<Mailbox>, StoreError> {
        let row: Option<MailboxRow> = self.read_row(
            &format!("{MAILBOX_SELECT} WHERE m.username = ?"),
            &[username],
            "looking up the mailbox",
        )?;
        row.map(mailbox_from_row).transpose()
    }

    /// Every mailbox, in one query (the sync compares the whole directory with it). A row
    /// whose `attributes` is not a JSON object comes back as an [`UnreadableMailbox`], so that
    /// one broken row does not stop the others.
    pub fn all_mailboxes(&mut self) -> Result<Vec<Result<Mailbox, UnreadableMailbox>>, StoreError> {
        let rows: Vec<MailboxRow> = self
            .conn
            .query(MAILBOX_SELECT)
            .context("loading all mailboxes")?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let username = row.0.clone();
                mailbox_from_row(row).map_err(|error| UnreadableMailbox { username, error })
            })
            .collect())
    }
}

impl Store {
    /// Whether the mailbox's SQL password is the empty string, as mailcow leaves it for a
    /// mailbox created with another authsource (it can then not log in with a mailcow
    /// password). Only the comparison leaves the database, never the hash. `None`: no mailbox.
    pub fn password_is_empty(&mut self, username: &str) -> Result<Option<bool>, StoreError> {
        self.conn
            .exec_first(
                "SELECT password = '' FROM mailbox WHERE username = ?",
                (username,),
            )
            .context("reading whether the mailbox has a password")
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
            // As mailcow's own switch: an external authsource cannot change a password, so a
            // pending "force password update" is cleared (only then is `attributes` touched).
            tx.exec_drop(
                "UPDATE mailbox SET authsource = ?, attributes = IF(? <> 'mailcow' \
                 AND JSON_VALUE(attributes, '$.force_pw_update') = '1', \
                 JSON_SET(attributes, '$.force_pw_update', '0'), attributes) \
                 WHERE username = ? AND authsource <=> ?",
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

/// A `mailbox` row that could not be read, and why.
#[derive(Debug)]
pub struct UnreadableMailbox {
    pub username: String,
    pub error: StoreError,
}

/// The columns of [`Mailbox`], with the domain's `active` flag.
const MAILBOX_SELECT: &str = "SELECT m.username, m.name, m.quota, m.local_part, m.domain, \
     m.attributes, m.kind, m.authsource, m.active, d.active \
     FROM mailbox m LEFT JOIN domain d ON d.domain = m.domain";

type MailboxRow = (
    String,
    Option<String>,
    // Signed as the column is: a negative quota is bad data, not a reason to panic.
    i64,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    i64,
    Option<i64>,
);

fn mailbox_from_row(row: MailboxRow) -> Result<Mailbox, StoreError> {
    let (
        username,
        name,
        quota,
        local_part,
        domain,
        attributes,
        kind,
        authsource,
        active,
        domain_active,
    ) = row;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(attributes: Value) -> Mailbox {
        Mailbox {
            username: "a@example.org".into(),
            name: String::new(),
            quota: 0,
            local_part: "a".into(),
            domain: "example.org".into(),
            attributes: attributes.as_object().unwrap().clone(),
            kind: String::new(),
            authsource: Some("ldap".into()),
            active: 1,
            domain_active: Some(1),
        }
    }

    #[test]
    fn literals_come_from_the_drivers_escaper() {
        let hostile = "a'b\\c\0d";
        assert_eq!(
            mysql::Value::from(hostile).as_sql(false),
            "'a\\'b\\\\c\\0d'"
        );
        assert_eq!(mysql::Value::from(hostile).as_sql(true), "'a''b\\c\0d'");
    }

    #[test]
    fn service_access_follows_mailcows_rule() {
        let m = mailbox(serde_json::json!({
            "imap_access": "1", "pop3_access": "0", "smtp_access": 0, "sieve_access": 1
        }));
        assert!(m.service_allowed("imap"));
        assert!(m.service_allowed("IMAP"));
        assert!(!m.service_allowed("pop3"));
        assert!(!m.service_allowed("smtp"));
        assert!(
            !m.service_allowed("submission"),
            "submission sends mail: smtp_access"
        );
        assert!(m.service_allowed("sieve"));
        assert!(m.service_allowed("doveadm"), "no key: allowed");
    }
}

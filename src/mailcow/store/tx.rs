//! The provisioning statements, as typed methods of one transaction. Every value is a
//! parameter of a prepared statement; the statement texts are constants (or constants with a
//! counted run of placeholders).

use mysql::prelude::Queryable;
use mysql::{Conn, Row, TxOpts, Value as SqlValue};

use super::{Columns, Context, StoreError};

/// `user_acl`'s flag columns, in the order of [`UPSERT_USER_ACL`]; template key
/// `acl_<column>` sets each.
pub const USER_ACL_COLUMNS: [&str; 15] = [
    "spam_alias",
    "tls_policy",
    "spam_score",
    "spam_policy",
    "delimiter_action",
    "syncjobs",
    "eas_reset",
    "sogo_profile_reset",
    "pushover",
    "quarantine",
    "quarantine_attachments",
    "quarantine_notification",
    "quarantine_category",
    "app_passwds",
    "pw_reset",
];

/// What mailcow's `update_sogo_static_view()` ends up writing as `c_password` (its "random"
/// password is built from undefined variables, so it is always this value).
pub const SOGO_STATIC_PASSWORD: &str = "{SSHA256}47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

macro_rules! domain_row {
    () => {
        "SELECT active, mailboxes, maxquota, quota FROM domain WHERE domain = ?"
    };
}
const DOMAIN: &str = domain_row!();
const DOMAIN_FOR_UPDATE: &str = concat!(domain_row!(), " FOR UPDATE");

const ALIAS_DOMAIN_TARGET: &str = "SELECT target_domain FROM alias_domain WHERE alias_domain = ?";

/// Whether an address is taken: by a mailbox, an alias, a spam alias.
macro_rules! address_taken {
    () => {
        "EXISTS(SELECT 1 FROM mailbox WHERE username = ?), \
         EXISTS(SELECT 1 FROM alias WHERE address = ?), \
         EXISTS(SELECT 1 FROM spamalias WHERE address = ?)"
    };
}
/// The domain's mailboxes (not resources) and the MiB of quota they hold, in one pass over
/// the domain's rows (the read the domain lock is held for: ~30 ms at 100,000 mailboxes in
/// one domain; two subqueries would read them twice). Always one row (aggregates, no GROUP
/// BY); the address checks before it are uncorrelated subqueries.
macro_rules! domain_usage {
    () => {
        "COUNT(*), CAST(COALESCE(ROUND(SUM(quota) / 1048576), 0) AS SIGNED) \
         FROM mailbox WHERE kind = '' AND domain = ?"
    };
}

/// One statement after the domain lock: under READ COMMITTED it sees what the previous holder
/// of the lock committed.
const CREATION_FACTS: &str = concat!("SELECT ", address_taken!(), ", ", domain_usage!());
/// A batch checks each address ([`ADDRESS_FACTS`]) and writes its rows, then locks the domain
/// row and reads its usage once ([`DOMAIN_USAGE`]), keeping a running total.
const ADDRESS_FACTS: &str = concat!("SELECT ", address_taken!());
const DOMAIN_USAGE: &str = concat!("SELECT ", domain_usage!());

const DOMAIN_WRITES: &str = "SELECT writes FROM mailcow_ldap_auth_domain_writes WHERE domain = ?";
const COUNT_DOMAIN_WRITE: &str = "INSERT INTO mailcow_ldap_auth_domain_writes (domain, writes) \
     VALUES (?, 1) ON DUPLICATE KEY UPDATE writes = writes + 1";

macro_rules! mailbox_state {
    () => {
        "SELECT name, JSON_VALUE(attributes, '$.attribute_hash'), quota, active, authsource, \
         kind FROM mailbox WHERE username = ?"
    };
}
const MAILBOX_STATE: &str = mailbox_state!();
const MAILBOX_STATE_FOR_UPDATE: &str = concat!(mailbox_state!(), " FOR UPDATE");

macro_rules! quota_of_domain {
    () => {
        "SELECT CAST(COALESCE(SUM(quota), 0) AS SIGNED) FROM mailbox \
         WHERE kind = '' AND domain = ?"
    };
}
const QUOTA_OF_DOMAIN: &str = quota_of_domain!();
const QUOTA_OF_OTHERS: &str = concat!(quota_of_domain!(), " AND username <> ?");

const INSERT_MAILBOX: &str = "INSERT INTO mailbox (username, password, name, quota, \
     local_part, domain, attributes, authsource, active, modified) \
     VALUES (?, '', ?, ?, ?, ?, JSON_SET(?, '$.passwd_update', NOW()), 'ldap', ?, NOW())";

const INSERT_QUOTA2: &str = "INSERT INTO quota2 (username, bytes, messages) VALUES (?, 0, 0) \
     ON DUPLICATE KEY UPDATE bytes = 0, messages = 0";
const INSERT_QUOTA2REPLICA: &str = "INSERT INTO quota2replica (username, bytes, messages) \
     VALUES (?, 0, 0) ON DUPLICATE KEY UPDATE bytes = 0, messages = 0";

const INSERT_ALIAS: &str = "INSERT INTO alias (address, goto, domain, active) VALUES (?, ?, ?, ?)";

/// Followed by one `(?, ?)` per tag and [`INSERT_TAGS_END`].
const INSERT_TAGS: &str = "INSERT INTO tags_mailbox (tag_name, username) VALUES (?, ?)";
const INSERT_TAGS_END: &str = " ON DUPLICATE KEY UPDATE tag_name = tag_name";

/// Every `user_acl` column explicit ([`USER_ACL_COLUMNS`], in order).
const UPSERT_USER_ACL: &str = "INSERT INTO user_acl (username, spam_alias, tls_policy, \
     spam_score, spam_policy, delimiter_action, syncjobs, eas_reset, sogo_profile_reset, \
     pushover, quarantine, quarantine_attachments, quarantine_notification, \
     quarantine_category, app_passwds, pw_reset) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE \
     spam_alias = VALUES(spam_alias), tls_policy = VALUES(tls_policy), \
     spam_score = VALUES(spam_score), spam_policy = VALUES(spam_policy), \
     delimiter_action = VALUES(delimiter_action), syncjobs = VALUES(syncjobs), \
     eas_reset = VALUES(eas_reset), sogo_profile_reset = VALUES(sogo_profile_reset), \
     pushover = VALUES(pushover), quarantine = VALUES(quarantine), \
     quarantine_attachments = VALUES(quarantine_attachments), \
     quarantine_notification = VALUES(quarantine_notification), \
     quarantine_category = VALUES(quarantine_category), app_passwds = VALUES(app_passwds), \
     pw_reset = VALUES(pw_reset)";

/// Followed by one `, ?, ?` (JSON path, value) per attribute and [`UPDATE_MAILBOX_END`].
const UPDATE_MAILBOX: &str = "UPDATE mailbox SET quota = ?, active = ?, name = ?, \
     attributes = JSON_SET(COALESCE(attributes, '{}')";
const UPDATE_MAILBOX_END: &str = ") WHERE username = ?";

const UPDATE_ALIAS_ACTIVE: &str = "UPDATE alias SET active = ? WHERE address = ?";

pub(super) const DELETE_SOGO_VIEW: &str = "DELETE FROM _sogo_static_view WHERE c_uid = ?";

/// mailcow's `update_sogo_static_view()` for a list of mailboxes (one or a batch), filled from
/// the grouped_* views' expressions. mailcow joins grouped_mail_aliases (one row per
/// alias.goto list) with `REGEXP '(^|,)<username>($|,)'` on the unescaped address; FIND_IN_SET
/// is the same test. One statement covers all the mailboxes (one scan of `alias` per batch, not
/// one per mailbox), and it never groups every alias and mailbox of the installation into
/// temporary tables. Followed by the usernames as `?, …` twice: after
/// [`REPLACE_SOGO_VIEW`] and after [`REPLACE_SOGO_VIEW_MIDDLE`], each closed by `)`.
const REPLACE_SOGO_VIEW: &str = "REPLACE INTO _sogo_static_view (c_uid, domain, c_name, \
     c_password, c_cn, mail, aliases, ad_aliases, ext_acl, kind, multiple_bookings) \
     SELECT m.username, m.domain, m.username, ?, m.name, m.username, \
     IFNULL(al.aliases, ''), \
     (SELECT IFNULL(GROUP_CONCAT(mb.local_part, '@', ad.alias_domain SEPARATOR ' '), '') \
        FROM mailbox mb LEFT JOIN alias_domain ad ON ad.target_domain = mb.domain \
        WHERE mb.username = m.username), \
     (SELECT IFNULL(GROUP_CONCAT(s.send_as SEPARATOR ' '), '') FROM sender_acl s \
        WHERE s.logged_in_as = m.username AND s.send_as NOT LIKE '@%' AND s.external = '1'), \
     m.kind, m.multiple_bookings \
     FROM mailbox m LEFT JOIN \
       (SELECT ga.username, GROUP_CONCAT(ga.aliases ORDER BY ga.aliases SEPARATOR ' ') AS aliases \
        FROM (SELECT mb.username, \
                GROUP_CONCAT(a.address ORDER BY a.address ASC SEPARATOR ' ') AS aliases \
              FROM mailbox mb JOIN alias a ON FIND_IN_SET(mb.username, a.goto) \
              WHERE a.address <> a.goto AND a.active = '1' AND a.sogo_visible = '1' \
                AND a.address NOT LIKE '@%' AND mb.username IN (";
const REPLACE_SOGO_VIEW_MIDDLE: &str = ") GROUP BY mb.username, a.goto) ga \
        GROUP BY ga.username) al ON al.username = m.username \
     WHERE m.active = '1' AND m.username IN (";

/// The `domain` row's flags and limits (MiB).
#[derive(Debug)]
pub struct DomainRow {
    pub active: i64,
    pub mailboxes: i64,
    pub maxquota_mib: i64,
    pub quota_mib: i64,
}

/// What a new mailbox's checks need, read in one statement after the domain lock.
#[derive(Debug)]
pub struct CreationFacts {
    pub address: AddressFacts,
    pub usage: DomainUsage,
}

/// Whether an address is taken.
#[derive(Debug)]
pub struct AddressFacts {
    pub exists: bool,
    pub is_alias: bool,
    pub is_spam_alias: bool,
}

impl AddressFacts {
    /// By a mailbox, an alias or a spam alias.
    pub fn taken(&self) -> bool {
        self.exists || self.is_alias || self.is_spam_alias
    }
}

/// The domain's mailboxes (not resources) and the quota they hold.
#[derive(Debug, Clone, Copy, Default)]
pub struct DomainUsage {
    pub count: i64,
    pub used_mib: i64,
}

impl DomainUsage {
    /// The usage less `part` of it (a batch's own uncommitted mailboxes).
    pub fn without(self, part: DomainUsage) -> DomainUsage {
        DomainUsage {
            count: self.count - part.count,
            used_mib: self.used_mib - part.used_mib,
        }
    }
}

/// A mailbox row as a template update decides on it (locked in a [`Store::transaction`]).
///
/// [`Store::transaction`]: super::Store::transaction
#[derive(Debug)]
pub struct LockedMailbox {
    pub name: String,
    pub attribute_hash: Option<String>,
    /// Bytes.
    pub quota: i64,
    pub active: i64,
    /// `None` for NULL, which mailcow treats as `mailcow`.
    pub authsource: Option<String>,
    pub kind: String,
}

/// The `mailbox` row of a new mailbox.
pub struct NewMailboxRow<'a> {
    pub username: &'a str,
    pub name: &'a str,
    pub quota_bytes: i64,
    pub local_part: &'a str,
    pub domain: &'a str,
    /// JSON text; `passwd_update` is set to NOW() by the INSERT.
    pub attributes: &'a str,
    pub active: i64,
}

/// The columns a re-applied template sets.
pub struct MailboxUpdate<'a> {
    pub username: &'a str,
    pub quota_bytes: i64,
    pub active: i64,
    pub name: &'a str,
    /// `attributes` keys set (other keys are kept), each with its string value.
    pub attributes: &'a [(&'static str, String)],
}

/// One transaction on the store's connection. Rolled back when dropped uncommitted.
pub struct Tx<'c> {
    tx: mysql::Transaction<'c>,
    /// Whether the decision reads lock their rows (`FOR UPDATE`).
    lock: bool,
    /// Whether writes are counted in `mailcow_ldap_auth_domain_writes` (see store/mod.rs).
    counts_writes: bool,
}

impl<'c> Tx<'c> {
    pub(super) fn start(
        conn: &'c mut Conn,
        lock: bool,
        counts_writes: bool,
    ) -> Result<Tx<'c>, StoreError> {
        let tx = conn
            .start_transaction(TxOpts::default())
            .context("starting a transaction")?;
        Ok(Tx {
            tx,
            lock,
            counts_writes,
        })
    }

    pub fn commit(self, context: &'static str) -> Result<(), StoreError> {
        self.tx.commit().context(context)
    }

    fn first(
        &mut self,
        sql: &str,
        params: impl Into<mysql::Params>,
        context: &'static str,
    ) -> Result<Option<Row>, StoreError> {
        self.tx.exec_first(sql, params).context(context)
    }

    fn drop_exec(
        &mut self,
        sql: &str,
        params: impl Into<mysql::Params>,
        context: &'static str,
    ) -> Result<(), StoreError> {
        self.tx.exec_drop(sql, params).context(context)
    }

    /// The domain row (locked until the transaction ends), `None` when missing.
    pub fn domain(&mut self, domain: &str) -> Result<Option<DomainRow>, StoreError> {
        let sql = if self.lock { DOMAIN_FOR_UPDATE } else { DOMAIN };
        let Some(row) = self.first(sql, (domain,), "locking the domain row")? else {
            return Ok(None);
        };
        let mut c = Columns::new(row, "domain");
        Ok(Some(DomainRow {
            active: c.next()?,
            mailboxes: c.next()?,
            maxquota_mib: c.next()?,
            quota_mib: c.next()?,
        }))
    }

    /// The target of an alias domain, `None` when `domain` is none.
    pub fn alias_domain_target(&mut self, domain: &str) -> Result<Option<String>, StoreError> {
        self.first(ALIAS_DOMAIN_TARGET, (domain,), "looking up alias domains")?
            .map(|row| Columns::new(row, "alias_domain").next())
            .transpose()
    }

    pub fn creation_facts(
        &mut self,
        username: &str,
        domain: &str,
    ) -> Result<CreationFacts, StoreError> {
        let row = self
            .first(
                CREATION_FACTS,
                (username, username, username, domain),
                "checking the domain's limits",
            )?
            .ok_or_else(|| StoreError::Data("the limit checks returned no row".into()))?;
        let mut c = Columns::new(row, "mailbox");
        Ok(CreationFacts {
            address: address_facts(&mut c)?,
            usage: domain_usage(&mut c)?,
        })
    }

    /// Whether `username` is taken (for a batch, before [`Tx::domain_usage`]).
    pub fn address_facts(&mut self, username: &str) -> Result<AddressFacts, StoreError> {
        let row = self
            .first(
                ADDRESS_FACTS,
                (username, username, username),
                "checking whether the address is taken",
            )?
            .ok_or_else(|| StoreError::Data("the address checks returned no row".into()))?;
        address_facts(&mut Columns::new(row, "mailbox"))
    }

    /// How many transactions of this program added mailboxes or quota to `domain` so far;
    /// `None` when this connection does not count them (then read usage under the lock).
    pub fn domain_writes(&mut self, domain: &str) -> Result<Option<u64>, StoreError> {
        if !self.counts_writes {
            return Ok(None);
        }
        let row = self.first(DOMAIN_WRITES, (domain,), "reading the domain's write count")?;
        let writes = match row {
            Some(row) => Columns::new(row, "mailcow_ldap_auth_domain_writes").next()?,
            None => 0,
        };
        Ok(Some(writes))
    }

    /// Counts this transaction as one that adds mailboxes or quota to `domain` (under the
    /// domain lock, before the commit).
    pub fn count_domain_write(&mut self, domain: &str) -> Result<(), StoreError> {
        if !self.counts_writes {
            return Ok(());
        }
        self.drop_exec(COUNT_DOMAIN_WRITE, (domain,), "counting the domain's write")
    }

    /// The domain's mailbox count and quota in use (the batch's own uncommitted rows counted),
    /// read once per batch.
    pub fn domain_usage(&mut self, domain: &str) -> Result<DomainUsage, StoreError> {
        let row = self
            .first(DOMAIN_USAGE, (domain,), "checking the domain's limits")?
            .ok_or_else(|| StoreError::Data("the limit checks returned no row".into()))?;
        domain_usage(&mut Columns::new(row, "mailbox"))
    }

    /// The mailbox as a template update decides on it (locked), `None` when it is gone.
    pub fn mailbox(&mut self, username: &str) -> Result<Option<LockedMailbox>, StoreError> {
        let sql = if self.lock {
            MAILBOX_STATE_FOR_UPDATE
        } else {
            MAILBOX_STATE
        };
        let Some(row) = self.first(sql, (username,), "locking the mailbox")? else {
            return Ok(None);
        };
        let mut c = Columns::new(row, "mailbox");
        Ok(Some(LockedMailbox {
            name: c.next::<Option<String>>()?.unwrap_or_default(),
            attribute_hash: c.next()?,
            quota: c.next()?,
            active: c.next()?,
            authsource: c.next()?,
            kind: c.next()?,
        }))
    }

    /// Bytes of quota the domain's other mailboxes (not resources) hold.
    pub fn quota_of_others(&mut self, domain: &str, username: &str) -> Result<i64, StoreError> {
        match self.first(
            QUOTA_OF_OTHERS,
            (domain, username),
            "summing the domain's quotas",
        )? {
            Some(row) => Columns::new(row, "mailbox").next(),
            None => Ok(0),
        }
    }

    /// Bytes of quota all the domain's mailboxes (not resources) hold.
    pub fn quota_of_domain(&mut self, domain: &str) -> Result<i64, StoreError> {
        match self.first(QUOTA_OF_DOMAIN, (domain,), "summing the domain's quotas")? {
            Some(row) => Columns::new(row, "mailbox").next(),
            None => Ok(0),
        }
    }

    /// The mailbox row, its alias and quota rows (as mailcow's `mailbox('add')`).
    pub fn insert_mailbox(&mut self, new: &NewMailboxRow) -> Result<(), StoreError> {
        self.drop_exec(
            INSERT_MAILBOX,
            (
                new.username,
                new.name,
                new.quota_bytes,
                new.local_part,
                new.domain,
                new.attributes,
                new.active,
            ),
            "inserting the mailbox",
        )?;
        for sql in [INSERT_QUOTA2, INSERT_QUOTA2REPLICA] {
            self.drop_exec(sql, (new.username,), "inserting the quota rows")?;
        }
        self.drop_exec(
            INSERT_ALIAS,
            (new.username, new.username, new.domain, new.active),
            "inserting the mailbox's alias",
        )
    }

    /// Adds tags (never removes any); duplicates, also in the column's collation, are ignored.
    pub fn insert_tags(&mut self, username: &str, tags: &[String]) -> Result<(), StoreError> {
        if tags.is_empty() {
            return Ok(());
        }
        let mut sql = String::from(INSERT_TAGS);
        for _ in 1..tags.len() {
            sql.push_str(", (?, ?)");
        }
        sql.push_str(INSERT_TAGS_END);
        let params: Vec<SqlValue> = tags
            .iter()
            .flat_map(|t| [t.as_str().into(), username.into()])
            .collect();
        self.drop_exec(&sql, params, "inserting the mailbox's tags")
    }

    /// Every `user_acl` column explicit: one flag per [`USER_ACL_COLUMNS`] entry.
    pub fn write_user_acl(&mut self, username: &str, acl: &[bool; 15]) -> Result<(), StoreError> {
        let mut params: Vec<SqlValue> = vec![username.into()];
        params.extend(acl.iter().map(|on| SqlValue::from(i64::from(*on))));
        self.drop_exec(UPSERT_USER_ACL, params, "writing the mailbox's ACL")
    }

    /// The mailbox columns and `attributes` keys a re-applied template sets, and its alias's
    /// `active`.
    pub fn update_mailbox(&mut self, update: &MailboxUpdate) -> Result<(), StoreError> {
        let mut sql = String::from(UPDATE_MAILBOX);
        let mut params: Vec<SqlValue> = vec![
            update.quota_bytes.into(),
            update.active.into(),
            update.name.into(),
        ];
        for (key, value) in update.attributes {
            sql.push_str(", ?, ?");
            params.push(format!("$.{key}").into());
            params.push(value.as_str().into());
        }
        sql.push_str(UPDATE_MAILBOX_END);
        params.push(update.username.into());
        self.drop_exec(&sql, params, "updating the mailbox")?;
        self.drop_exec(
            UPDATE_ALIAS_ACTIVE,
            (update.active, update.username),
            "updating the mailbox's alias",
        )
    }

    /// mailcow's `update_sogo_static_view()` for these mailboxes (address, `active`): a
    /// mailbox's row exists exactly while it has `active = 1`.
    pub fn refresh_sogo_views(&mut self, mailboxes: &[(&str, i64)]) -> Result<(), StoreError> {
        let (active, inactive): (Vec<_>, Vec<_>) = mailboxes.iter().partition(|(_, a)| *a == 1);
        for (username, _) in inactive {
            self.drop_exec(DELETE_SOGO_VIEW, (username,), "removing the SOGo view row")?;
        }
        if active.is_empty() {
            return Ok(());
        }
        let list = vec!["?"; active.len()].join(", ");
        let sql = format!("{REPLACE_SOGO_VIEW}{list}{REPLACE_SOGO_VIEW_MIDDLE}{list})");
        let usernames = active.iter().map(|(u, _)| SqlValue::from(*u));
        let params: Vec<SqlValue> = std::iter::once(SOGO_STATIC_PASSWORD.into())
            .chain(usernames.clone())
            .chain(usernames)
            .collect();
        self.drop_exec(&sql, params, "refreshing the SOGo view rows")
    }
}

fn address_facts(c: &mut Columns) -> Result<AddressFacts, StoreError> {
    Ok(AddressFacts {
        exists: c.next()?,
        is_alias: c.next()?,
        is_spam_alias: c.next()?,
    })
}

fn domain_usage(c: &mut Columns) -> Result<DomainUsage, StoreError> {
    Ok(DomainUsage {
        count: c.next()?,
        used_mib: c.next()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_acl_statement_lists_the_columns_in_order() {
        let listed = UPSERT_USER_ACL
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(columns, _)| columns)
            .unwrap_or_default();
        let listed: Vec<&str> = listed.split(',').map(str::trim).collect();
        assert_eq!(listed[0], "username");
        assert_eq!(listed[1..], USER_ACL_COLUMNS);
        assert_eq!(
            UPSERT_USER_ACL.matches('?').count(),
            1 + USER_ACL_COLUMNS.len()
        );
        for column in USER_ACL_COLUMNS {
            assert!(UPSERT_USER_ACL.contains(&format!("{column} = VALUES({column})")));
        }
    }
}

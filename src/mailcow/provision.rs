//! Creating a mailbox from a template, and re-applying a changed template: the rows mailcow's
//! own `mailbox('add'|'edit', 'mailbox_from_template')` writes, in one transaction each.
//!
//! Deliberate differences from mailcow (see the research notes, §1.12, §1.13 and §9):
//! - every domain check runs before anything is written, under a lock on the `domain` row, so
//!   concurrent first logins respect the limits and a refused login leaves no row behind
//!   (mailcow creates the mailbox of an inactive domain, then refuses the login);
//! - an empty display name falls back to the local part (mailcow's fallback never happens);
//! - an empty LDAP display name keeps the stored name and does not count as a change (mailcow
//!   re-applies the template on every login then);
//! - a re-applied template that raises the quota beyond the domain's limits is skipped as a
//!   whole (mailcow silently applies everything but the mailbox columns); a quota that stays or
//!   shrinks is never checked, so it cannot hold up the rest of the template. The login of a
//!   skipped update is still checked against the mailbox as the template would leave it
//!   (`active`, `*_access`), so a deactivating template never fails open;
//! - an unreadable template (attributes NULL or not a JSON object) is treated like a missing
//!   one by an update (the mailbox is left as it is) and refuses a creation;
//! - the `_sogo_static_view` refresh only touches this mailbox's row;
//! - Redis (`RL_VALUE`) and memcached are not written; the caller logs that they were skipped.

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, TxOpts, Value as SqlValue};
use serde_json::{Map, Value};

use super::address;
use super::template::{MIB, Template};
use super::{Mailbox, Store, StoreError};

/// `user_acl`'s flag columns; template key `acl_<column>` sets each.
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

/// mailcow's `$TAGGING_LIMIT`.
pub const TAG_LIMIT: usize = 25;

/// Lock waits (another login holding the domain row, an admin's long transaction) end as a
/// temporary failure after this long instead of hanging the login.
pub const LOCK_WAIT_SECONDS: u32 = 3;

/// Deadlocks and duplicate-key races are retried this many times in all.
const ATTEMPTS: u32 = 3;

/// The `*_access` keys of `mailbox.attributes`, default "1".
const ACCESS_KEYS: [&str; 7] = [
    "sogo_access",
    "imap_access",
    "pop3_access",
    "smtp_access",
    "sieve_access",
    "eas_access",
    "dav_access",
];

const QUARANTINE_NOTIFICATIONS: [&str; 4] = ["never", "hourly", "daily", "weekly"];
const QUARANTINE_CATEGORIES: [&str; 3] = ["add_header", "reject", "all"];

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A policy refusal (no template, domain missing or full, quota, …): the login is rejected.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of [`create`].
#[derive(Debug)]
pub struct Provisioned {
    pub mailbox: Mailbox,
    /// `false`: another login created the mailbox first, and this one wrote nothing.
    pub created: bool,
    /// Side effects outside MySQL that mailcow performs and this program did not.
    pub skipped: Vec<String>,
}

/// The result of [`apply_template`].
#[derive(Debug)]
pub enum Applied {
    /// Hash and name already match: nothing was written.
    Unchanged,
    /// The template was re-applied; the mailbox as stored now.
    Reapplied {
        mailbox: Box<Mailbox>,
        /// Side effects outside MySQL that were not performed.
        skipped: Vec<String>,
    },
    /// Nothing was written, for this reason (template missing or unreadable, quota).
    Skipped {
        reason: String,
        /// The mailbox as the template would leave it, for the login's access checks: the
        /// stored row with the template's `active` and `*_access` keys applied in memory only
        /// (quota, name and everything else as stored). Without a readable template, the
        /// stored row. A template that deactivates the mailbox or disables a protocol thus
        /// refuses the login even when its update was refused.
        mailbox: Box<Mailbox>,
    },
}

/// Creates the mailbox `username` from `template`, with every row mailcow writes.
///
/// If another login created the mailbox meanwhile, nothing is written and that mailbox is
/// returned (`created: false`).
pub fn create(
    store: &mut Store,
    username: &str,
    display_name: Option<&str>,
    template: &str,
) -> Result<Provisioned, ProvisionError> {
    let loaded = match Template::load(store, template) {
        Ok(loaded) => loaded,
        // The admin's data, not a transient fault: this first login is refused.
        Err(StoreError::Data(why)) => return Err(ProvisionError::Refused(unreadable(&why))),
        Err(e) => return Err(e.into()),
    };
    create_from(store, username, display_name, template, loaded.as_ref())
}

/// [`create`] with the template already loaded (`None`: no template called `name` exists), for
/// callers that use one template many times (the sync).
pub fn create_from(
    store: &mut Store,
    username: &str,
    display_name: Option<&str>,
    name: &str,
    template: Option<&Template>,
) -> Result<Provisioned, ProvisionError> {
    let (new, template) = new_mailbox(username, display_name, name, template)?;
    prepare_session(store)?;
    let created = with_retries(|| try_create(store.conn(), &new)).map_err(|e| match e {
        TxError::Refused(why) => ProvisionError::Refused(why),
        other => ProvisionError::Store(other.into_store()),
    })?;
    let mailbox = store.mailbox(&new.username)?.ok_or_else(|| {
        StoreError::Data(format!(
            "mailbox {} vanished right after it was provisioned",
            new.username
        ))
    })?;
    let skipped = if created {
        outside_mysql(&new.username, template)
    } else {
        Vec::new()
    };
    Ok(Provisioned {
        mailbox,
        created,
        skipped,
    })
}

/// Re-applies a mapped `template` to `mailbox` when the template text (its `attribute_hash`)
/// or the display name changed; writes nothing otherwise.
pub fn apply_template(
    store: &mut Store,
    mailbox: &Mailbox,
    display_name: Option<&str>,
    template: &str,
) -> Result<Applied, ProvisionError> {
    let loaded = match Template::load(store, template) {
        Ok(loaded) => loaded,
        // Like a missing template: the login goes on with the mailbox as it is.
        Err(StoreError::Data(why)) => {
            return Ok(Applied::Skipped {
                reason: format!("{}, mailbox left unchanged", unreadable(&why)),
                mailbox: Box::new(mailbox.clone()),
            });
        }
        Err(e) => return Err(e.into()),
    };
    apply_loaded(store, mailbox, display_name, template, loaded.as_ref())
}

/// [`apply_template`] with the template already loaded (`None`: no template called `name`).
pub fn apply_loaded(
    store: &mut Store,
    mailbox: &Mailbox,
    display_name: Option<&str>,
    name: &str,
    template: Option<&Template>,
) -> Result<Applied, ProvisionError> {
    let Some(template) = template else {
        return Ok(Applied::Skipped {
            reason: missing_for_update(name),
            mailbox: Box::new(mailbox.clone()),
        });
    };
    let update = Update::build(mailbox, display_name, template);
    if update.matches(
        &mailbox.name,
        mailbox.attribute("attribute_hash").as_deref(),
    ) {
        return Ok(Applied::Unchanged);
    }
    prepare_session(store)?;
    let result = with_retries(|| try_apply(store.conn(), mailbox, &update));
    match result {
        Ok(true) => {
            let mailbox = store.mailbox(&mailbox.username)?.ok_or_else(|| {
                StoreError::Data(format!(
                    "mailbox {} vanished right after its template was re-applied",
                    mailbox.username
                ))
            })?;
            let skipped = outside_mysql(&mailbox.username, template);
            Ok(Applied::Reapplied {
                mailbox: Box::new(mailbox),
                skipped,
            })
        }
        // another login re-applied it first
        Ok(false) => Ok(Applied::Unchanged),
        Err(TxError::Refused(why)) => Ok(Applied::Skipped {
            reason: why,
            mailbox: Box::new(update.would_leave(mailbox)),
        }),
        Err(other) => Err(ProvisionError::Store(other.into_store())),
    }
}

/// What [`create_from`] or [`apply_loaded`] would do, found out without writing anything (the
/// sync's `--dry-run`): the same template, domain and limit checks, without locks. Each call
/// sees the database as it is, not what earlier previews would have written.
#[derive(Debug, PartialEq, Eq)]
pub enum Preview {
    /// The mailbox would be created, or the template re-applied.
    Write,
    /// Nothing to write: the mailbox exists already (create), or is up to date (apply).
    Nothing,
    /// An update would be skipped, for this reason.
    Skipped(String),
}

/// [`create_from`] without writing: `Ok(Write)`, `Ok(Nothing)` when the mailbox exists, or the
/// refusal `create_from` would answer.
pub fn preview_create(
    store: &mut Store,
    username: &str,
    display_name: Option<&str>,
    name: &str,
    template: Option<&Template>,
) -> Result<Preview, ProvisionError> {
    let (new, _) = new_mailbox(username, display_name, name, template)?;
    match check_create(store.conn(), &new, false) {
        Ok(true) => Ok(Preview::Write),
        Ok(false) => Ok(Preview::Nothing),
        Err(TxError::Refused(why)) => Err(ProvisionError::Refused(why)),
        Err(other) => Err(ProvisionError::Store(other.into_store())),
    }
}

/// [`apply_loaded`] without writing.
pub fn preview_apply(
    store: &mut Store,
    mailbox: &Mailbox,
    display_name: Option<&str>,
    name: &str,
    template: Option<&Template>,
) -> Result<Preview, ProvisionError> {
    let Some(template) = template else {
        return Ok(Preview::Skipped(missing_for_update(name)));
    };
    let update = Update::build(mailbox, display_name, template);
    if update.matches(
        &mailbox.name,
        mailbox.attribute("attribute_hash").as_deref(),
    ) {
        return Ok(Preview::Nothing);
    }
    match check_apply(store.conn(), mailbox, &update, false) {
        Ok(Some(_)) => Ok(Preview::Write),
        Ok(None) => Ok(Preview::Nothing),
        Err(TxError::Refused(why)) => Ok(Preview::Skipped(why)),
        Err(other) => Err(ProvisionError::Store(other.into_store())),
    }
}

/// The validated new mailbox, or the refusal (malformed address, template missing or invalid).
fn new_mailbox<'t>(
    username: &str,
    display_name: Option<&str>,
    name: &str,
    template: Option<&'t Template>,
) -> Result<(NewMailbox, &'t Template), ProvisionError> {
    let address = address::normalize(username)
        .map_err(|e| ProvisionError::Refused(format!("malformed address {username}: {e}")))?;
    let template =
        template.ok_or_else(|| ProvisionError::Refused(format!("template {name} missing")))?;
    Ok((
        NewMailbox::build(&address, display_name, template)?,
        template,
    ))
}

fn missing_for_update(name: &str) -> String {
    format!("template {name} missing, mailbox left unchanged")
}

/// The reason for a template whose stored attributes cannot be read ([`Template::load`]'s
/// message names the template and the problem).
fn unreadable(why: &str) -> String {
    format!("template unreadable: {why}")
}

/// One leading `<` and one trailing `>` stripped, at most 255 characters (`mailbox.name`).
pub fn clean_name(display_name: Option<&str>) -> String {
    let name = display_name.unwrap_or("");
    let name = name.strip_prefix('<').unwrap_or(name);
    let name = name.strip_suffix('>').unwrap_or(name);
    name.chars().take(255).collect()
}

// ---------------------------------------------------------------------------------------------
// What gets written
// ---------------------------------------------------------------------------------------------

/// Every value of a new mailbox, computed (and validated) before the transaction starts.
struct NewMailbox {
    username: String,
    local_part: String,
    domain: String,
    template: String,
    name: String,
    quota_mib: i64,
    active: i64,
    /// The `attributes` JSON text; `passwd_update` is set to NOW() by the INSERT.
    attributes: String,
    acl: [bool; 15],
    tags: Vec<String>,
}

impl NewMailbox {
    fn build(
        address: &address::Address,
        display_name: Option<&str>,
        template: &Template,
    ) -> Result<NewMailbox, ProvisionError> {
        let invalid = |what: String| {
            ProvisionError::Refused(format!("template {} invalid: {what}", template.name))
        };
        if template.int("quota").unwrap_or(0) < 0 {
            return Err(invalid("negative quota".into()));
        }
        let quarantine_notification = template
            .string("quarantine_notification")
            .unwrap_or_else(|| "hourly".into());
        if !QUARANTINE_NOTIFICATIONS.contains(&quarantine_notification.as_str()) {
            return Err(invalid(format!(
                "quarantine_notification {quarantine_notification}"
            )));
        }
        let quarantine_category = template
            .string("quarantine_category")
            .unwrap_or_else(|| "reject".into());
        if !QUARANTINE_CATEGORIES.contains(&quarantine_category.as_str()) {
            return Err(invalid(format!(
                "quarantine_category {quarantine_category}"
            )));
        }
        let flag = |key: &str, default: i64| {
            Value::String(template.int(key).unwrap_or(default).to_string())
        };

        // Keys and order exactly as mailcow's `mailbox('add', 'mailbox')` writes them.
        let mut attributes = Map::new();
        // always 0 for mailboxes of an identity provider
        attributes.insert("force_pw_update".into(), Value::String("0".into()));
        attributes.insert("force_tfa".into(), flag("force_tfa", 0));
        attributes.insert("tls_enforce_in".into(), flag("tls_enforce_in", 0));
        attributes.insert("tls_enforce_out".into(), flag("tls_enforce_out", 0));
        for key in ACCESS_KEYS {
            attributes.insert(key.into(), flag(key, 1));
        }
        attributes.insert("relayhost".into(), flag("relayhost", 0));
        attributes.insert("passwd_update".into(), Value::String(String::new()));
        attributes.insert("mailbox_format".into(), Value::String("maildir:".into()));
        attributes.insert(
            "quarantine_notification".into(),
            Value::String(quarantine_notification),
        );
        attributes.insert(
            "quarantine_category".into(),
            Value::String(quarantine_category),
        );
        attributes.insert(
            "attribute_hash".into(),
            Value::String(template.attribute_hash()),
        );

        let mut name = clean_name(display_name);
        if name.is_empty() {
            name = address.local_part.clone();
        }
        Ok(NewMailbox {
            username: address.username.clone(),
            local_part: address.local_part.clone(),
            domain: address.domain.clone(),
            template: template.name.clone(),
            name,
            quota_mib: template.quota_mib(),
            active: template.int("active").unwrap_or(1),
            attributes: Value::Object(attributes).to_string(),
            acl: acl_flags(template),
            tags: template_tags(template),
        })
    }
}

/// What a re-applied template changes.
struct Update {
    hash: String,
    name: String,
    /// `None`: the template has no quota; the mailbox keeps its own.
    quota_mib: Option<i64>,
    active: Option<i64>,
    /// `attributes` keys set from the template (JSON_SET pairs); other keys are kept.
    attributes: Vec<(&'static str, String)>,
    acl: [bool; 15],
    tags: Vec<String>,
    template: String,
}

impl Update {
    fn build(mailbox: &Mailbox, display_name: Option<&str>, template: &Template) -> Update {
        let mut name = clean_name(display_name);
        if name.is_empty() {
            name = mailbox.name.clone();
        }
        let hash = template.attribute_hash();
        let mut attributes: Vec<(&'static str, String)> = vec![("force_pw_update", "0".into())];
        for key in ["force_tfa", "tls_enforce_in", "tls_enforce_out"]
            .into_iter()
            .chain(ACCESS_KEYS)
        {
            if let Some(v) = template.int(key) {
                attributes.push((key, v.to_string()));
            }
        }
        // mailcow's quarantine setters ignore invalid values
        if let Some(v) = template
            .string("quarantine_notification")
            .filter(|v| QUARANTINE_NOTIFICATIONS.contains(&v.as_str()))
        {
            attributes.push(("quarantine_notification", v));
        }
        if let Some(v) = template
            .string("quarantine_category")
            .filter(|v| QUARANTINE_CATEGORIES.contains(&v.as_str()))
        {
            attributes.push(("quarantine_category", v));
        }
        attributes.push(("attribute_hash", hash.clone()));
        Update {
            hash,
            name,
            quota_mib: template
                .int("quota")
                .filter(|q| *q >= 0)
                .map(|_| template.quota_mib()),
            active: template.int("active"),
            attributes,
            acl: acl_flags(template),
            tags: template_tags(template),
            template: template.name.clone(),
        }
    }

    /// The mailbox as this update would leave it, as far as the login checks go: `active` and
    /// the `*_access` keys from the template, everything else as given. Nothing is written.
    fn would_leave(&self, mailbox: &Mailbox) -> Mailbox {
        let mut mailbox = mailbox.clone();
        if let Some(active) = self.active {
            mailbox.active = active;
        }
        for (key, value) in &self.attributes {
            if ACCESS_KEYS.contains(key) {
                mailbox
                    .attributes
                    .insert((*key).to_owned(), Value::String(value.clone()));
            }
        }
        mailbox
    }

    /// mailcow's change detection: stored hash and stored name both equal the new ones.
    fn matches(&self, stored_name: &str, stored_hash: Option<&str>) -> bool {
        stored_hash == Some(self.hash.as_str()) && stored_name == self.name
    }
}

fn acl_flags(template: &Template) -> [bool; 15] {
    USER_ACL_COLUMNS.map(|column| template.nonzero(&format!("acl_{column}")))
}

/// Non-empty, distinct tags that fit `tags_mailbox.tag_name`, at most [`TAG_LIMIT`].
fn template_tags(template: &Template) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in template.tags() {
        if tags.len() == TAG_LIMIT {
            break;
        }
        if !tag.is_empty() && tag.chars().count() <= 255 && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags
}

/// What mailcow does outside MySQL on provisioning, which this program leaves out.
fn outside_mysql(username: &str, template: &Template) -> Vec<String> {
    let rl_value = template.string("rl_value").unwrap_or_default();
    let rl_frame = template.string("rl_frame").unwrap_or_else(|| "s".into());
    let rate_limit = if rl_value.is_empty() || rl_value == "0" {
        format!("Redis rate limit (HDEL RL_VALUE {username})")
    } else {
        format!("Redis rate limit (RL_VALUE {username} = {rl_value} / 1{rl_frame})")
    };
    vec![rate_limit, "memcached flush".into()]
}

// ---------------------------------------------------------------------------------------------
// Transactions
// ---------------------------------------------------------------------------------------------

enum TxError {
    /// A policy refusal (create) or a reason to skip the update (apply).
    Refused(String),
    Db {
        context: &'static str,
        source: mysql::Error,
    },
}

impl TxError {
    fn into_store(self) -> StoreError {
        match self {
            TxError::Db { context, source } => StoreError::Query { context, source },
            TxError::Refused(why) => StoreError::Data(why),
        }
    }

    /// Deadlocks and duplicate keys are races with another writer: try again.
    fn is_race(&self) -> bool {
        matches!(self, TxError::Db { source: mysql::Error::MySqlError(e), .. }
            if e.code == 1213 || e.code == 1062)
    }
}

trait TxContext<T> {
    fn tx(self, context: &'static str) -> Result<T, TxError>;
}

impl<T> TxContext<T> for Result<T, mysql::Error> {
    fn tx(self, context: &'static str) -> Result<T, TxError> {
        self.map_err(|source| TxError::Db { context, source })
    }
}

fn with_retries<T>(mut attempt: impl FnMut() -> Result<T, TxError>) -> Result<T, TxError> {
    let mut n = 1;
    loop {
        match attempt() {
            Err(e) if e.is_race() && n < ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(u64::from(n) * 3));
                n += 1;
            }
            other => return other,
        }
    }
}

/// Bounded lock waits, and READ COMMITTED so that the reads after the domain lock see what the
/// previous holder committed and no gap locks are taken.
fn prepare_session(store: &mut Store) -> Result<(), StoreError> {
    store
        .conn()
        .query_drop(format!(
            "SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT_SECONDS}; \
             SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
        ))
        .map_err(|source| StoreError::Query {
            context: "preparing the provisioning session",
            source,
        })
}

/// The `domain` row (locked until the transaction ends when read with `lock`).
struct DomainRow {
    active: i64,
    mailboxes: i64,
    maxquota_mib: i64,
    quota_mib: i64,
}

fn read_domain(
    q: &mut impl Queryable,
    domain: &str,
    lock: bool,
) -> Result<Option<DomainRow>, TxError> {
    let row: Option<(i64, i64, i64, i64)> = q
        .exec_first(
            format!(
                "SELECT active, mailboxes, maxquota, quota FROM domain WHERE domain = ?{}",
                for_update(lock)
            ),
            (domain,),
        )
        .tx("locking the domain row")?;
    Ok(
        row.map(|(active, mailboxes, maxquota_mib, quota_mib)| DomainRow {
            active,
            mailboxes,
            maxquota_mib,
            quota_mib,
        }),
    )
}

/// mailcow's checks for a new mailbox, in mailcow's order and units (domain limits in MiB):
/// Ok(true) when it may be created, Ok(false) when it exists already, `Refused` otherwise.
/// With `lock`, the domain row stays locked until the caller's transaction ends.
fn check_create(q: &mut impl Queryable, new: &NewMailbox, lock: bool) -> Result<bool, TxError> {
    let d = &new.domain;
    let Some(domain) = read_domain(q, d, lock)? else {
        let target: Option<String> = q
            .exec_first(
                "SELECT target_domain FROM alias_domain WHERE alias_domain = ?",
                (d,),
            )
            .tx("looking up alias domains")?;
        return Err(TxError::Refused(match target {
            Some(t) => format!(
                "domain {d} missing (it is an alias domain of {t}; mailboxes need a real domain)"
            ),
            None => format!("domain {d} missing"),
        }));
    };
    if domain.active != 1 {
        return Err(TxError::Refused(format!("domain {d} inactive")));
    }
    // One statement after the lock: under READ COMMITTED it sees what the previous holder
    // of the domain lock committed.
    type Checks = (bool, i64, i64, bool, bool);
    let (exists, count, used_mib, is_alias, is_spam_alias): Checks = q
        .exec_first(
            "SELECT EXISTS(SELECT 1 FROM mailbox WHERE username = ?), \
             (SELECT COUNT(*) FROM mailbox WHERE kind = '' AND domain = ?), \
             (SELECT CAST(COALESCE(ROUND(SUM(quota) / 1048576), 0) AS SIGNED) \
                FROM mailbox WHERE kind = '' AND domain = ?), \
             EXISTS(SELECT 1 FROM alias WHERE address = ?), \
             EXISTS(SELECT 1 FROM spamalias WHERE address = ?)",
            (&new.username, d, d, &new.username, &new.username),
        )
        .tx("checking the domain's limits")?
        .unwrap_or_default();
    if exists {
        return Ok(false);
    }
    if is_alias {
        return Err(TxError::Refused(format!(
            "address {} is already an alias",
            new.username
        )));
    }
    if is_spam_alias {
        return Err(TxError::Refused(format!(
            "address {} is already a spam alias",
            new.username
        )));
    }
    if count >= domain.mailboxes {
        return Err(TxError::Refused(format!(
            "mailbox limit of domain {d} reached ({count} of {})",
            domain.mailboxes
        )));
    }
    if new.quota_mib > domain.maxquota_mib {
        return Err(TxError::Refused(format!(
            "quota: template {} gives {} MiB, domain {d} allows {} MiB per mailbox",
            new.template, new.quota_mib, domain.maxquota_mib
        )));
    }
    if used_mib + new.quota_mib > domain.quota_mib {
        return Err(TxError::Refused(format!(
            "quota: template {} gives {} MiB, domain {d} has {} of {} MiB left",
            new.template,
            new.quota_mib,
            domain.quota_mib - used_mib,
            domain.quota_mib
        )));
    }
    Ok(true)
}

fn for_update(lock: bool) -> &'static str {
    if lock { " FOR UPDATE" } else { "" }
}

/// Ok(true): created; Ok(false): the mailbox already existed, nothing written.
fn try_create(conn: &mut Conn, new: &NewMailbox) -> Result<bool, TxError> {
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .tx("starting the provisioning transaction")?;
    if !check_create(&mut tx, new, true)? {
        return Ok(false);
    }
    let d = &new.domain;
    tx.exec_drop(
        "INSERT INTO mailbox (username, password, name, quota, local_part, domain, attributes, \
         authsource, active, modified) \
         VALUES (?, '', ?, ?, ?, ?, JSON_SET(?, '$.passwd_update', NOW()), 'ldap', ?, NOW())",
        (
            &new.username,
            &new.name,
            new.quota_mib * MIB,
            &new.local_part,
            d,
            &new.attributes,
            new.active,
        ),
    )
    .tx("inserting the mailbox")?;
    insert_tags(&mut tx, &new.username, &new.tags)?;
    for table in ["quota2", "quota2replica"] {
        tx.exec_drop(
            format!(
                "INSERT INTO {table} (username, bytes, messages) VALUES (?, 0, 0) \
                 ON DUPLICATE KEY UPDATE bytes = 0, messages = 0"
            ),
            (&new.username,),
        )
        .tx("inserting the quota rows")?;
    }
    tx.exec_drop(
        "INSERT INTO alias (address, goto, domain, active) VALUES (?, ?, ?, ?)",
        (&new.username, &new.username, d, new.active),
    )
    .tx("inserting the mailbox's alias")?;
    write_user_acl(&mut tx, &new.username, &new.acl)?;
    refresh_sogo_view(&mut tx, &new.username, new.active)?;
    tx.commit().tx("committing the new mailbox")?;
    Ok(true)
}

/// The checks of a template update: Ok(None) when the stored mailbox is up to date already
/// (another login re-applied it), Ok(Some(quota in bytes)) to go ahead, `Refused` to skip it.
/// With `lock`, the domain and mailbox rows stay locked until the caller's transaction ends.
fn check_apply(
    q: &mut impl Queryable,
    mailbox: &Mailbox,
    update: &Update,
    lock: bool,
) -> Result<Option<i64>, TxError> {
    let d = &mailbox.domain;
    let Some(domain) = read_domain(q, d, lock)? else {
        return Err(TxError::Refused(format!("domain {d} missing")));
    };
    let current: Option<(Option<String>, Option<String>, i64)> = q
        .exec_first(
            format!(
                "SELECT name, JSON_VALUE(attributes, '$.attribute_hash'), quota \
                 FROM mailbox WHERE username = ?{}",
                for_update(lock)
            ),
            (&mailbox.username,),
        )
        .tx("locking the mailbox")?;
    let Some((name, hash, current_quota)) = current else {
        return Err(TxError::Refused(format!(
            "mailbox {} vanished",
            mailbox.username
        )));
    };
    if update.matches(name.as_deref().unwrap_or(""), hash.as_deref()) {
        return Ok(None);
    }

    let quota = update
        .quota_mib
        .map_or(current_quota.max(0), |mib| mib * MIB);
    // mailcow's quota checks exist to stop increases: a quota that stays or shrinks cannot
    // break the domain's limits (even on a domain already over them), and must not hold up the
    // rest of the template (`active`, access keys, ACLs).
    if quota <= current_quota {
        return Ok(Some(quota));
    }
    if update
        .quota_mib
        .is_some_and(|mib| mib > domain.maxquota_mib)
    {
        return Err(TxError::Refused(format!(
            "quota: template {} gives {} MiB, domain {d} allows {} MiB per mailbox; \
             template not applied",
            update.template,
            quota / MIB,
            domain.maxquota_mib
        )));
    }
    let others: i64 = q
        .exec_first(
            "SELECT CAST(COALESCE(SUM(quota), 0) AS SIGNED) FROM mailbox \
             WHERE kind = '' AND domain = ? AND username <> ?",
            (d, &mailbox.username),
        )
        .tx("summing the domain's quotas")?
        .unwrap_or(0);
    if others.saturating_add(quota) > domain.quota_mib.saturating_mul(MIB) {
        return Err(TxError::Refused(format!(
            "quota: template {} gives {} MiB, domain {d} has {} of {} MiB left; \
             template not applied",
            update.template,
            quota / MIB,
            (domain.quota_mib * MIB - others) / MIB,
            domain.quota_mib
        )));
    }
    Ok(Some(quota))
}

/// Ok(true): re-applied; Ok(false): already up to date (another login did it).
fn try_apply(conn: &mut Conn, mailbox: &Mailbox, update: &Update) -> Result<bool, TxError> {
    let mut tx = conn
        .start_transaction(TxOpts::default())
        .tx("starting the template update")?;
    let Some(quota) = check_apply(&mut tx, mailbox, update, true)? else {
        return Ok(false);
    };
    let active = update.active.unwrap_or(mailbox.active);
    let mut sql = String::from(
        "UPDATE mailbox SET quota = ?, active = ?, name = ?, \
         attributes = JSON_SET(COALESCE(attributes, '{}')",
    );
    let mut params: Vec<SqlValue> = vec![quota.into(), active.into(), update.name.clone().into()];
    for (key, value) in &update.attributes {
        sql.push_str(&format!(", '$.{key}', ?"));
        params.push(value.clone().into());
    }
    sql.push_str(") WHERE username = ?");
    params.push(mailbox.username.clone().into());
    tx.exec_drop(sql, params).tx("updating the mailbox")?;
    tx.exec_drop(
        "UPDATE alias SET active = ? WHERE address = ?",
        (active, &mailbox.username),
    )
    .tx("updating the mailbox's alias")?;
    write_user_acl(&mut tx, &mailbox.username, &update.acl)?;
    insert_tags(&mut tx, &mailbox.username, &update.tags)?;
    refresh_sogo_view(&mut tx, &mailbox.username, active)?;
    tx.commit().tx("committing the template update")?;
    Ok(true)
}

/// Adds tags (never removes any); duplicates, also in the column's collation, are ignored.
fn insert_tags(
    tx: &mut mysql::Transaction,
    username: &str,
    tags: &[String],
) -> Result<(), TxError> {
    if tags.is_empty() {
        return Ok(());
    }
    let rows = vec!["(?, ?)"; tags.len()].join(", ");
    let params: Vec<SqlValue> = tags
        .iter()
        .flat_map(|t| [t.clone().into(), username.into()])
        .collect();
    tx.exec_drop(
        format!(
            "INSERT INTO tags_mailbox (tag_name, username) VALUES {rows} \
             ON DUPLICATE KEY UPDATE tag_name = tag_name"
        ),
        params,
    )
    .tx("inserting the mailbox's tags")
}

/// Every `user_acl` column explicit: 1 when the template's `acl_<column>` is non-zero.
fn write_user_acl(
    tx: &mut mysql::Transaction,
    username: &str,
    acl: &[bool; 15],
) -> Result<(), TxError> {
    let columns = USER_ACL_COLUMNS.join(", ");
    let marks = vec!["?"; USER_ACL_COLUMNS.len()].join(", ");
    let updates = USER_ACL_COLUMNS
        .iter()
        .map(|c| format!("{c} = VALUES({c})"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut params: Vec<SqlValue> = vec![username.into()];
    params.extend(acl.iter().map(|on| SqlValue::from(i64::from(*on))));
    tx.exec_drop(
        format!(
            "INSERT INTO user_acl (username, {columns}) VALUES (?, {marks}) \
             ON DUPLICATE KEY UPDATE {updates}"
        ),
        params,
    )
    .tx("writing the mailbox's ACL")
}

/// mailcow's `update_sogo_static_view()` for one mailbox: the row exists exactly while the
/// mailbox has `active = 1`, filled from the grouped_* views.
fn refresh_sogo_view(
    tx: &mut mysql::Transaction,
    username: &str,
    active: i64,
) -> Result<(), TxError> {
    if active != 1 {
        return tx
            .exec_drop("DELETE FROM _sogo_static_view WHERE c_uid = ?", (username,))
            .tx("removing the SOGo view row");
    }
    // The three values of mailcow's grouped_* views, for this one mailbox. mailcow joins
    // grouped_mail_aliases (one row per alias.goto list) with `REGEXP '(^|,)<username>($|,)'`
    // on the unescaped address; FIND_IN_SET is the same test. Querying the base tables with
    // the views' expressions gives the same strings without grouping every alias and mailbox
    // of the installation into temporary tables on each login.
    tx.exec_drop(
        "REPLACE INTO _sogo_static_view (c_uid, domain, c_name, c_password, c_cn, mail, \
         aliases, ad_aliases, ext_acl, kind, multiple_bookings) \
         SELECT m.username, m.domain, m.username, ?, m.name, m.username, \
         (SELECT IFNULL(GROUP_CONCAT(ga.aliases ORDER BY ga.aliases SEPARATOR ' '), '') FROM \
            (SELECT IFNULL(GROUP_CONCAT(a.address ORDER BY a.address ASC SEPARATOR ' '), '') \
               AS aliases FROM alias a \
             WHERE a.address <> a.goto AND a.active = '1' AND a.sogo_visible = '1' \
               AND a.address NOT LIKE '@%' AND FIND_IN_SET(?, a.goto) \
             GROUP BY a.goto) ga), \
         (SELECT IFNULL(GROUP_CONCAT(mb.local_part, '@', ad.alias_domain SEPARATOR ' '), '') \
            FROM mailbox mb LEFT JOIN alias_domain ad ON ad.target_domain = mb.domain \
            WHERE mb.username = ?), \
         (SELECT IFNULL(GROUP_CONCAT(s.send_as SEPARATOR ' '), '') FROM sender_acl s \
            WHERE s.logged_in_as = ? AND s.send_as NOT LIKE '@%' AND s.external = '1'), \
         m.kind, m.multiple_bookings \
         FROM mailbox m WHERE m.active = '1' AND m.username = ?",
        (SOGO_STATIC_PASSWORD, username, username, username, username),
    )
    .tx("refreshing the SOGo view row")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_one_angle_bracket_each_side() {
        assert_eq!(clean_name(Some("<Bob Example>")), "Bob Example");
        assert_eq!(clean_name(Some("<<Bob>>")), "<Bob>");
        assert_eq!(clean_name(Some("Bob>")), "Bob");
        assert_eq!(clean_name(Some("<")), "");
        assert_eq!(clean_name(Some("<>")), "");
        assert_eq!(clean_name(None), "");
        assert_eq!(clean_name(Some(&"é".repeat(300))).chars().count(), 255);
    }

    #[test]
    fn new_mailbox_attributes_have_mailcows_keys_in_order() {
        let t = Template::from_text(
            r#"{"quota":1073741824,"tags":["staff","staff","","x"],"pop3_access":0,"force_pw_update":1,"active":2,"acl_spam_alias":1,"acl_pw_reset":"0","acl_syncjobs":"1"}"#,
        );
        let address = address::normalize("Bob@Example.org").unwrap();
        let new = NewMailbox::build(&address, Some(""), &t).unwrap();
        let attrs: Map<String, Value> = serde_json::from_str(&new.attributes).unwrap();
        let keys: Vec<&str> = attrs.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "force_pw_update",
                "force_tfa",
                "tls_enforce_in",
                "tls_enforce_out",
                "sogo_access",
                "imap_access",
                "pop3_access",
                "smtp_access",
                "sieve_access",
                "eas_access",
                "dav_access",
                "relayhost",
                "passwd_update",
                "mailbox_format",
                "quarantine_notification",
                "quarantine_category",
                "attribute_hash"
            ]
        );
        assert!(attrs.values().all(Value::is_string));
        assert_eq!(attrs["force_pw_update"], "0");
        assert_eq!(attrs["pop3_access"], "0");
        assert_eq!(attrs["imap_access"], "1");
        assert_eq!(attrs["attribute_hash"], t.attribute_hash().as_str());
        assert_eq!(new.name, "bob");
        assert_eq!(new.quota_mib, 1024);
        assert_eq!(new.active, 2);
        assert_eq!(new.tags, ["staff", "x"]);
        let on: Vec<&str> = USER_ACL_COLUMNS
            .iter()
            .zip(new.acl)
            .filter(|(_, on)| *on)
            .map(|(c, _)| *c)
            .collect();
        assert_eq!(on, ["spam_alias", "syncjobs"]);
    }

    #[test]
    fn invalid_templates_are_refused() {
        let address = address::normalize("bob@example.org").unwrap();
        for text in [
            r#"{"quarantine_category":"bogus"}"#,
            r#"{"quarantine_notification":"yearly"}"#,
            r#"{"quota":-1}"#,
        ] {
            assert!(matches!(
                NewMailbox::build(&address, None, &Template::from_text(text)),
                Err(ProvisionError::Refused(_))
            ));
        }
    }

    #[test]
    fn tags_are_limited() {
        let tags: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
        let t = Template::from_text(&serde_json::json!({ "tags": tags }).to_string());
        assert_eq!(template_tags(&t).len(), TAG_LIMIT);
        assert_eq!(template_tags(&t)[24], "t24");
    }
}

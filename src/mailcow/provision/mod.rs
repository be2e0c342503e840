//! Creating a mailbox from a template, and re-applying a changed template: the rows mailcow's
//! own `mailbox('add'|'edit', 'mailbox_from_template')` writes, in one transaction each.
//!
//! Deliberate differences from mailcow:
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
//! - memcached is not flushed, and Redis (`RL_VALUE`) is written only with a `redis:` section;
//!   the caller logs what was skipped;
//! - an update decides on the mailbox row as locked, not as read before: a mailbox an admin
//!   switched to another authsource meanwhile is left alone, and one deactivated meanwhile
//!   stays inactive unless the template itself sets `active`.
//!
//! Layout: `plan` computes what gets written (pure), `checks` decides on the rows read inside
//! the transaction, `tx` runs the transactions; every statement lives in the store.

pub mod batch;
mod checks;
mod plan;
mod tx;

use super::ratelimit::RateLimit;
use super::store::{Store, StoreError, TemplateRead};
use super::template::{MIB, Template};
use super::{Mailbox, address};
use crate::config::RedisConfig;
use checks::{ApplyCheck, CreateCheck};
pub use plan::up_to_date;
use plan::{NewMailbox, Update};
use tx::{ApplyDone, TxError, try_apply, try_create, with_retries};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A policy refusal (no template, domain missing or full, quota, …): the login is rejected.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TxError> for ProvisionError {
    fn from(e: TxError) -> ProvisionError {
        match e {
            TxError::Refused(why) => ProvisionError::Refused(why),
            TxError::Store(e) => ProvisionError::Store(e),
        }
    }
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
    /// Nothing was written: another login (or a sync) re-applied the template first. The
    /// mailbox as it is now (read again; gone meanwhile: as the template would leave it), for
    /// the login's access checks and answer: the caller's own read predates that write.
    ReappliedMeanwhile { mailbox: Box<Mailbox> },
    /// Nothing was written: the mailbox, as locked for the update, has another authsource
    /// now (an admin switched it meanwhile; NULL counts as `mailcow`), or became a resource.
    NotLdapBacked { authsource: String },
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
    let loaded = template_for_creation(store, template)?;
    create_from(store, username, display_name, template, loaded.as_ref())
}

/// The template called `name` for a creation (`None`: missing); an unreadable one refuses it.
pub fn template_for_creation(
    store: &mut Store,
    name: &str,
) -> Result<Option<Template>, ProvisionError> {
    match store.template(name) {
        Ok(loaded) => Ok(loaded),
        // The admin's data, not a transient fault: this first login is refused.
        Err(StoreError::Data(why)) => Err(ProvisionError::Refused(unreadable(&why))),
        Err(e) => Err(e.into()),
    }
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
    let created = with_retries(|| try_create(store, &new))?;
    let mailbox = store.mailbox(&new.username)?.ok_or_else(|| {
        StoreError::Data(format!(
            "mailbox {} vanished right after it was provisioned",
            new.username
        ))
    })?;
    let (created, skipped) = match created {
        CreateCheck::Create => (
            true,
            outside_mysql(store, &new.username, RateLimit::on_creation(template)),
        ),
        CreateCheck::Exists => (false, Vec::new()),
    };
    Ok(Provisioned {
        mailbox,
        created,
        skipped,
    })
}

/// Re-applies a mapped template to `mailbox` when the template text (its `attribute_hash`)
/// or the display name changed; writes nothing otherwise. `template` is the template called
/// `name` as read with the mailbox ([`Store::mailbox_with_template`]).
pub fn apply_template(
    store: &mut Store,
    mailbox: &Mailbox,
    display_name: Option<&str>,
    name: &str,
    template: TemplateRead,
) -> Result<Applied, ProvisionError> {
    let loaded = match template {
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
    apply_loaded(store, mailbox, display_name, name, loaded.as_ref())
}

/// Whether [`apply_template`] would find nothing to write: the template read, and the display
/// name and `attribute_hash` already match it (a login then needs no database connection).
pub fn template_unchanged(
    mailbox: &Mailbox,
    display_name: Option<&str>,
    template: &TemplateRead,
) -> bool {
    let Ok(Some(loaded)) = template else {
        return false;
    };
    let start = start_update(mailbox, display_name, &loaded.name, Some(loaded));
    matches!(start, UpdateStart::Unchanged)
}

/// [`apply_template`] with the template already loaded (`None`: no template called `name`).
pub fn apply_loaded(
    store: &mut Store,
    mailbox: &Mailbox,
    display_name: Option<&str>,
    name: &str,
    template: Option<&Template>,
) -> Result<Applied, ProvisionError> {
    let (update, template) = match start_update(mailbox, display_name, name, template) {
        UpdateStart::Update(update, template) => (update, template),
        UpdateStart::Unchanged => return Ok(Applied::Unchanged),
        UpdateStart::Skipped(reason) => {
            return Ok(Applied::Skipped {
                reason,
                mailbox: Box::new(mailbox.clone()),
            });
        }
    };
    let result = with_retries(|| try_apply(store, &mailbox.username, &mailbox.domain, &update));
    match result {
        Ok(ApplyDone::Reapplied) => {
            let mailbox = store.mailbox(&mailbox.username)?.ok_or_else(|| {
                StoreError::Data(format!(
                    "mailbox {} vanished right after its template was re-applied",
                    mailbox.username
                ))
            })?;
            let skipped = outside_mysql(store, &mailbox.username, RateLimit::on_update(template));
            Ok(Applied::Reapplied {
                mailbox: Box::new(mailbox),
                skipped,
            })
        }
        Ok(ApplyDone::UpToDate) => {
            let now = store.mailbox(&mailbox.username)?;
            Ok(Applied::ReappliedMeanwhile {
                mailbox: Box::new(now.unwrap_or_else(|| update.would_leave(mailbox))),
            })
        }
        Ok(ApplyDone::NotLdapBacked(authsource)) => Ok(Applied::NotLdapBacked { authsource }),
        Err(TxError::Refused(why)) => Ok(Applied::Skipped {
            reason: why,
            mailbox: Box::new(update.would_leave(mailbox)),
        }),
        Err(TxError::Store(e)) => Err(e.into()),
    }
}

/// What [`create_from`] or [`apply_loaded`] would do, found out without writing anything (the
/// login's and test-connection's previews): the same template, domain and limit checks,
/// without locks. Each call sees the database as it is.
#[derive(Debug)]
pub enum Preview {
    /// The mailbox would be created, or the template re-applied.
    Write {
        /// The template, what would be written (one line per row) and the limits checked.
        rows: Vec<String>,
        /// The mailbox as it would be left, for the login's access checks.
        mailbox: Box<Mailbox>,
    },
    /// Nothing to write: the mailbox exists already (create), or is up to date (apply).
    Nothing,
    /// An update would be skipped, for this reason; the mailbox as [`Applied::Skipped`] has it.
    Skipped {
        reason: String,
        mailbox: Box<Mailbox>,
    },
    /// An update would not touch the mailbox: it has this other authsource (or is a resource).
    NotLdapBacked(String),
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
    let (new, template) = new_mailbox(username, display_name, name, template)?;
    let checked = checks::check_create(&mut store.snapshot()?, &new)?;
    match checked {
        (CreateCheck::Create, limits) => {
            let mut rows = vec![format!("template {name}: {}", template.raw)];
            rows.extend(new.rows().iter().map(would_write));
            let rate_limit = RateLimit::on_creation(template);
            rows.push(rate_limit_row(store, &new.username, rate_limit));
            rows.push(format!("checked {}", limits.describe(&new)));
            Ok(Preview::Write {
                rows,
                mailbox: Box::new(new.as_created()),
            })
        }
        (CreateCheck::Exists, _) => Ok(Preview::Nothing),
    }
}

/// [`apply_template`] without writing.
pub fn preview_template(
    store: &mut Store,
    mailbox: &Mailbox,
    display_name: Option<&str>,
    name: &str,
    template: TemplateRead,
) -> Result<Preview, ProvisionError> {
    match template {
        Ok(loaded) => preview_apply(store, mailbox, display_name, name, loaded.as_ref()),
        Err(StoreError::Data(why)) => Ok(Preview::Skipped {
            reason: format!("{}, mailbox left unchanged", unreadable(&why)),
            mailbox: Box::new(mailbox.clone()),
        }),
        Err(e) => Err(e.into()),
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
    let (update, template) = match start_update(mailbox, display_name, name, template) {
        UpdateStart::Update(update, template) => (update, template),
        UpdateStart::Unchanged => return Ok(Preview::Nothing),
        UpdateStart::Skipped(reason) => {
            return Ok(Preview::Skipped {
                reason,
                mailbox: Box::new(mailbox.clone()),
            });
        }
    };
    let checked = checks::check_apply(
        &mut store.snapshot()?,
        &mailbox.username,
        &mailbox.domain,
        &update,
    );
    match checked {
        Ok(ApplyCheck::Apply { quota, locked }) => {
            let mut rows = vec![format!("template {name}: {}", template.raw)];
            rows.extend(update.rows(&locked, quota).iter().map(would_write));
            let rate_limit = RateLimit::on_update(template);
            rows.push(rate_limit_row(store, &mailbox.username, rate_limit));
            rows.push(if quota > locked.quota {
                format!(
                    "checked the quota limits of domain {}: {} MiB fits",
                    mailbox.domain,
                    quota / MIB
                )
            } else {
                format!(
                    "limits of domain {} not checked: the quota does not grow",
                    mailbox.domain
                )
            });
            Ok(Preview::Write {
                rows,
                mailbox: Box::new(update.would_leave(mailbox)),
            })
        }
        Ok(ApplyCheck::UpToDate) => Ok(Preview::Nothing),
        Ok(ApplyCheck::NotLdapBacked(authsource)) => Ok(Preview::NotLdapBacked(authsource)),
        Err(TxError::Refused(reason)) => Ok(Preview::Skipped {
            reason,
            mailbox: Box::new(update.would_leave(mailbox)),
        }),
        Err(TxError::Store(e)) => Err(e.into()),
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

/// mailcow's side effects outside MySQL: the rate limit is written to Redis when the store has
/// it (a failure does not undo the provisioning: mailcow ignores it too); what was not done is
/// returned for the log line.
fn outside_mysql(store: &Store, username: &str, rate_limit: RateLimit) -> Vec<String> {
    let mut skipped = Vec::new();
    match redis_for(store, &rate_limit) {
        Some(redis) => {
            if let Err(e) = rate_limit.write(redis, username) {
                skipped.push(format!("rate limit ({e})"));
            }
        }
        _ => skipped.push(format!(
            "Redis rate limit ({})",
            rate_limit.describe(username)
        )),
    }
    skipped.push("memcached flush".into());
    skipped
}

/// Redis, when the store has it and the rate limit is one to write.
fn redis_for<'s>(store: &'s Store, rate_limit: &RateLimit) -> Option<&'s RedisConfig> {
    store
        .redis()
        .filter(|_| *rate_limit != RateLimit::InvalidFrame)
}

/// A preview's line for the rate limit: what [`outside_mysql`] would write or skip.
fn rate_limit_row(store: &Store, username: &str, rate_limit: RateLimit) -> String {
    let what = rate_limit.describe(username);
    match redis_for(store, &rate_limit) {
        Some(_) => format!("would write Redis: {what}"),
        None => {
            format!("would not write Redis (no redis: section, or an invalid rl_frame): {what}")
        }
    }
}

fn would_write(row: &String) -> String {
    format!("would write {row}")
}

/// Where re-applying the template called `name` to `mailbox` starts, for the write and the
/// preview alike.
enum UpdateStart<'t> {
    /// The template or the display name changed: this update is due.
    Update(Update, &'t Template),
    /// Nothing changed.
    Unchanged,
    /// No such template: the mailbox is left as it is, for this reason.
    Skipped(String),
}

fn start_update<'t>(
    mailbox: &Mailbox,
    display_name: Option<&str>,
    name: &str,
    template: Option<&'t Template>,
) -> UpdateStart<'t> {
    let Some(template) = template else {
        return UpdateStart::Skipped(missing_for_update(name));
    };
    if up_to_date(
        template.attribute_hash(),
        display_name,
        mailbox.attribute("attribute_hash").as_deref(),
        |n| n == mailbox.name,
    ) {
        return UpdateStart::Unchanged;
    }
    UpdateStart::Update(Update::build(display_name, template), template)
}

fn missing_for_update(name: &str) -> String {
    format!("template {name} missing, mailbox left unchanged")
}

/// The reason for a template whose stored attributes cannot be read ([`Store::template`]'s
/// message names the template and the problem).
fn unreadable(why: &str) -> String {
    format!("template unreadable: {why}")
}

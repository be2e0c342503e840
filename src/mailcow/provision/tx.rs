//! The provisioning transactions: checks on locked rows, then the writes, retried on races.

use std::time::Duration;

use super::checks::{ApplyCheck, CreateCheck, check_apply, check_create};
use super::plan::{NewMailbox, Update};
use crate::mailcow::store::{LockedMailbox, MailboxUpdate, NewMailboxRow, Store, StoreError, Tx};
use crate::mailcow::template::MIB;

/// Deadlocks and duplicate-key races are retried this many times in all.
pub(super) const ATTEMPTS: u32 = 3;

pub(super) enum TxError {
    /// A policy refusal (create) or a reason to skip the update (apply).
    Refused(String),
    Store(StoreError),
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> TxError {
        TxError::Store(e)
    }
}

/// What [`try_apply`] did.
pub(super) enum ApplyDone {
    Reapplied,
    /// Already up to date (another login did it): nothing written.
    UpToDate,
    /// The mailbox has this other authsource now: nothing written.
    NotLdapBacked(String),
}

pub(super) fn with_retries<T>(
    mut attempt: impl FnMut() -> Result<T, TxError>,
) -> Result<T, TxError> {
    let mut n = 1;
    loop {
        match attempt() {
            Err(TxError::Store(e)) if e.is_race() && n < ATTEMPTS => {
                std::thread::sleep(Duration::from_millis(u64::from(n) * 3));
                n += 1;
            }
            other => return other,
        }
    }
}

/// Creates the mailbox unless it exists by now.
pub(super) fn try_create(store: &mut Store, new: &NewMailbox) -> Result<CreateCheck, TxError> {
    let mut tx = store.transaction()?;
    if let (CreateCheck::Exists, _) = check_create(&mut tx, new)? {
        return Ok(CreateCheck::Exists);
    }
    write_new(&mut tx, new)?;
    tx.refresh_sogo_views(&[(&new.username, new.active)])?;
    tx.count_domain_write(&new.domain)?;
    tx.commit("committing the new mailbox")?;
    Ok(CreateCheck::Create)
}

/// Every row of a new mailbox, in mailcow's order, but its SOGo view row (refreshed once per
/// transaction, after all its mailboxes).
pub(super) fn write_new(tx: &mut Tx, new: &NewMailbox) -> Result<(), StoreError> {
    tx.insert_mailbox(&NewMailboxRow {
        username: &new.username,
        name: &new.name,
        quota_bytes: new.quota_mib * MIB,
        local_part: &new.local_part,
        domain: &new.domain,
        attributes: &new.attributes,
        active: new.active,
    })?;
    tx.insert_tags(&new.username, &new.tags)?;
    tx.write_user_acl(&new.username, &new.acl)
}

/// Re-applies the update to the mailbox as locked now.
pub(super) fn try_apply(
    store: &mut Store,
    username: &str,
    domain: &str,
    update: &Update,
) -> Result<ApplyDone, TxError> {
    let mut tx = store.transaction()?;
    let (quota, locked) = match check_apply(&mut tx, username, domain, update)? {
        ApplyCheck::Apply { quota, locked } => (quota, locked),
        ApplyCheck::UpToDate => return Ok(ApplyDone::UpToDate),
        ApplyCheck::NotLdapBacked(authsource) => return Ok(ApplyDone::NotLdapBacked(authsource)),
    };
    let active = write_update(&mut tx, username, update, quota, &locked)?;
    tx.refresh_sogo_views(&[(username, active)])?;
    if quota > locked.quota {
        tx.count_domain_write(domain)?;
    }
    tx.commit("committing the template update")?;
    Ok(ApplyDone::Reapplied)
}

/// The rows a re-applied template writes, on the mailbox as locked, but the SOGo view row;
/// the `active` it wrote.
pub(super) fn write_update(
    tx: &mut Tx,
    username: &str,
    update: &Update,
    quota: i64,
    locked: &LockedMailbox,
) -> Result<i64, StoreError> {
    let (name, active) = update.name_and_active(locked);
    tx.update_mailbox(&MailboxUpdate {
        username,
        quota_bytes: quota,
        active,
        name,
        attributes: &update.attributes,
    })?;
    tx.write_user_acl(username, &update.acl)?;
    tx.insert_tags(username, &update.tags)?;
    Ok(active)
}

//! The decisions of a creation or an update, made on the rows as read inside the transaction
//! (locked there, so that they still hold when the statements run): domain, limits, quota,
//! and whether the mailbox is still LDAP-backed. Previews run the same checks without locks.

use super::plan::{NewMailbox, Update, still_ldap_backed};
use super::tx::TxError;
use crate::mailcow::store::{LockedMailbox, Tx};
use crate::mailcow::template::MIB;

/// What the checks of a new mailbox found.
pub(super) enum CreateCheck {
    /// It may be created.
    Create,
    /// It exists already (another login created it): nothing to write.
    Exists,
}

/// What the checks of a template update found.
pub(super) enum ApplyCheck {
    /// Go ahead with this quota (bytes) on the row as locked.
    Apply { quota: i64, locked: LockedMailbox },
    /// The stored mailbox is up to date already (another login re-applied it).
    UpToDate,
    /// The mailbox has another authsource now (or became a resource): never re-applied.
    NotLdapBacked(String),
}

/// mailcow's checks for a new mailbox, in mailcow's order and units (domain limits in MiB).
/// `Refused` when it may not be created.
pub(super) fn check_create(tx: &mut Tx, new: &NewMailbox) -> Result<CreateCheck, TxError> {
    let d = &new.domain;
    let Some(domain) = tx.domain(d)? else {
        return Err(TxError::Refused(match tx.alias_domain_target(d)? {
            Some(t) => format!(
                "domain {d} missing (it is an alias domain of {t}; mailboxes need a real domain)"
            ),
            None => format!("domain {d} missing"),
        }));
    };
    if domain.active != 1 {
        return Err(TxError::Refused(format!("domain {d} inactive")));
    }
    let facts = tx.creation_facts(&new.username, d)?;
    if facts.exists {
        return Ok(CreateCheck::Exists);
    }
    if facts.is_alias {
        return Err(TxError::Refused(format!(
            "address {} is already an alias",
            new.username
        )));
    }
    if facts.is_spam_alias {
        return Err(TxError::Refused(format!(
            "address {} is already a spam alias",
            new.username
        )));
    }
    if facts.count >= domain.mailboxes {
        return Err(TxError::Refused(format!(
            "mailbox limit of domain {d} reached ({} of {})",
            facts.count, domain.mailboxes
        )));
    }
    if new.quota_mib > domain.maxquota_mib {
        return Err(TxError::Refused(format!(
            "quota: template {} gives {} MiB, domain {d} allows {} MiB per mailbox",
            new.template, new.quota_mib, domain.maxquota_mib
        )));
    }
    if facts.used_mib.saturating_add(new.quota_mib) > domain.quota_mib {
        return Err(TxError::Refused(format!(
            "quota: template {} gives {} MiB, domain {d} has {} of {} MiB left",
            new.template,
            new.quota_mib,
            domain.quota_mib.saturating_sub(facts.used_mib),
            domain.quota_mib
        )));
    }
    Ok(CreateCheck::Create)
}

/// The checks of a template update, on the domain and mailbox rows as read (and locked) now:
/// `Refused` to skip it.
pub(super) fn check_apply(
    tx: &mut Tx,
    username: &str,
    d: &str,
    update: &Update,
) -> Result<ApplyCheck, TxError> {
    let Some(domain) = tx.domain(d)? else {
        return Err(TxError::Refused(format!("domain {d} missing")));
    };
    let Some(locked) = tx.mailbox(username)? else {
        return Err(TxError::Refused(format!("mailbox {username} vanished")));
    };
    if let Err(authsource) = still_ldap_backed(&locked) {
        return Ok(ApplyCheck::NotLdapBacked(authsource));
    }
    if update.matches(&locked.name, locked.attribute_hash.as_deref()) {
        return Ok(ApplyCheck::UpToDate);
    }

    let current_quota = locked.quota;
    let quota = update
        .quota_mib
        .map_or(current_quota.max(0), |mib| mib * MIB);
    // mailcow's quota checks exist to stop increases: a quota that stays or shrinks cannot
    // break the domain's limits (even on a domain already over them), and must not hold up the
    // rest of the template (`active`, access keys, ACLs).
    if quota <= current_quota {
        return Ok(ApplyCheck::Apply { quota, locked });
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
    let others = tx.quota_of_others(d, username)?;
    if others.saturating_add(quota) > domain.quota_mib.saturating_mul(MIB) {
        return Err(TxError::Refused(format!(
            "quota: template {} gives {} MiB, domain {d} has {} of {} MiB left; \
             template not applied",
            update.template,
            quota / MIB,
            domain.quota_mib.saturating_mul(MIB).saturating_sub(others) / MIB,
            domain.quota_mib
        )));
    }
    Ok(ApplyCheck::Apply { quota, locked })
}

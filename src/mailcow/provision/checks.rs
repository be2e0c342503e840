//! The decisions of a creation or an update, made on the rows as read inside the transaction
//! (locked there, so that they still hold when the statements run): domain, limits, quota,
//! and whether the mailbox is still LDAP-backed. Previews run the same checks without locks.

use super::plan::{NewMailbox, Update, still_ldap_backed};
use super::tx::TxError;
use crate::mailcow::store::{AddressFacts, DomainRow, DomainUsage, LockedMailbox, StoreError, Tx};
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

/// The domain's limits and usage a new mailbox was checked against.
pub(super) struct Limits {
    domain: DomainRow,
    usage: DomainUsage,
}

impl Limits {
    /// What was checked, for a dry run.
    pub(super) fn describe(&self, new: &NewMailbox) -> String {
        let (domain, usage) = (&self.domain, &self.usage);
        format!(
            "limits of domain {}: {} of {} mailboxes used; {} MiB per mailbox allowed, the \
             template gives {} MiB; {} of {} MiB of the domain's quota used",
            new.domain,
            usage.count,
            domain.mailboxes,
            domain.maxquota_mib,
            new.quota_mib,
            usage.used_mib,
            domain.quota_mib
        )
    }
}

/// mailcow's checks for a new mailbox, in mailcow's order and units (domain limits in MiB),
/// and the limits they checked. `Refused` when it may not be created.
pub(super) fn check_create(
    tx: &mut Tx,
    new: &NewMailbox,
) -> Result<(CreateCheck, Limits), TxError> {
    let domain = check_domain(tx, &new.domain)?;
    let facts = tx.creation_facts(&new.username, &new.domain)?;
    let check = check_new(new, &domain, &facts.address, facts.usage)?;
    let limits = Limits {
        domain,
        usage: facts.usage,
    };
    Ok((check, limits))
}

/// The domain row of new mailboxes (locked in a transaction): it must exist and be active.
pub(super) fn check_domain(tx: &mut Tx, d: &str) -> Result<DomainRow, TxError> {
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
    Ok(domain)
}

/// The checks of one new mailbox in an active domain, given whether its address is taken and
/// the domain's usage before it (a batch passes its running total).
pub(super) fn check_new(
    new: &NewMailbox,
    domain: &DomainRow,
    address: &AddressFacts,
    usage: DomainUsage,
) -> Result<CreateCheck, TxError> {
    let d = &new.domain;
    if address.exists {
        return Ok(CreateCheck::Exists);
    }
    if address.is_alias {
        return Err(TxError::Refused(format!(
            "address {} is already an alias",
            new.username
        )));
    }
    if address.is_spam_alias {
        return Err(TxError::Refused(format!(
            "address {} is already a spam alias",
            new.username
        )));
    }
    if usage.count >= domain.mailboxes {
        return Err(TxError::Refused(format!(
            "mailbox limit of domain {d} reached ({} of {})",
            usage.count, domain.mailboxes
        )));
    }
    if new.quota_mib > domain.maxquota_mib {
        return Err(TxError::Refused(format!(
            "quota: template {} gives {} MiB, domain {d} allows {} MiB per mailbox",
            new.template, new.quota_mib, domain.maxquota_mib
        )));
    }
    if usage.used_mib.saturating_add(new.quota_mib) > domain.quota_mib {
        return Err(TxError::Refused(format!(
            "quota: template {} gives {} MiB, domain {d} has {} of {} MiB left",
            new.template,
            new.quota_mib,
            domain.quota_mib.saturating_sub(usage.used_mib),
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
    check_update(tx, &domain, username, d, update, |tx, _| {
        tx.quota_of_others(d, username)
    })
}

/// The checks of one template update in a domain whose row is locked: the mailbox row is
/// locked and decided on here. `quota_of_others(tx, locked)` gives the bytes of quota the
/// domain's other mailboxes hold (read only for a quota increase).
pub(super) fn check_update(
    tx: &mut Tx,
    domain: &DomainRow,
    username: &str,
    d: &str,
    update: &Update,
    quota_of_others: impl FnOnce(&mut Tx, &LockedMailbox) -> Result<i64, StoreError>,
) -> Result<ApplyCheck, TxError> {
    let check = check_mailbox(tx, username, update)?;
    if let ApplyCheck::Apply { quota, locked } = &check {
        if *quota > locked.quota {
            let others = quota_of_others(tx, locked)?;
            check_increase(domain, d, update, *quota, others)?;
        }
    }
    Ok(check)
}

/// The checks of one template update on the mailbox row, locked here: whether it is still
/// LDAP-backed and not up to date, and the quota (bytes) it gets. A quota above the row's
/// must pass [`check_increase`] too.
pub(super) fn check_mailbox(
    tx: &mut Tx,
    username: &str,
    update: &Update,
) -> Result<ApplyCheck, TxError> {
    let Some(locked) = tx.mailbox(username)? else {
        return Err(TxError::Refused(format!("mailbox {username} vanished")));
    };
    if let Err(authsource) = still_ldap_backed(&locked) {
        return Ok(ApplyCheck::NotLdapBacked(authsource));
    }
    if update.matches(&locked.name, locked.attribute_hash.as_deref()) {
        return Ok(ApplyCheck::UpToDate);
    }
    // mailcow's quota checks exist to stop increases: a quota that stays or shrinks cannot
    // break the domain's limits (even on a domain already over them), and must not hold up the
    // rest of the template (`active`, access keys, ACLs).
    let quota = update
        .quota_mib
        .map_or(locked.quota.max(0), |mib| mib * MIB);
    Ok(ApplyCheck::Apply { quota, locked })
}

/// mailcow's checks of a quota increase to `quota` bytes, on the domain row as locked, given
/// the bytes of quota the domain's other mailboxes hold.
pub(super) fn check_increase(
    domain: &DomainRow,
    d: &str,
    update: &Update,
    quota: i64,
    others: i64,
) -> Result<(), TxError> {
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
    Ok(())
}

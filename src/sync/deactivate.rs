//! Opt-in deactivation (`sync.deactivate_missing`): an LDAP-backed, active mailbox whose entry
//! is missing from `sync.missing_runs` complete listings in a row gets `active = 0` and its
//! alias deactivated. mailcow never does this: a user who left the directory keeps IMAP through
//! app passwords and open SOGo sessions.
//!
//! Safety: only a complete listing counts (any listing error ends the run before this step);
//! a run that would deactivate more than `sync.max_deactivate_percent` of the LDAP-backed
//! mailboxes deactivates none and logs an error (a wrong base DN or filter looks like everyone
//! left); `--dry-run` lists who would be deactivated. Activating a mailbox again is an admin's
//! decision: the sync never does it, and leaves alone a mailbox it deactivated that an admin
//! activated again while the entry is still missing.
//!
//! Memory: the run keeps no address in memory; the addresses it listed are in a temporary
//! table of its database connection, and the LDAP-backed mailboxes are streamed from one query
//! that tells for each whether it was listed. Only the mailboxes missing now and the miss
//! counts (a few, unless the directory lost many entries) are held.

use super::chunk::Row;
use super::{Output, SyncError};
use crate::config::Config;
use crate::log::{Severity, printable_word};
use crate::mailcow::Store;
use crate::planner::{MailboxState, ldap_backed};

/// Counts the misses of this run and deactivates who reached `sync.missing_runs`; the number
/// deactivated, `None` when deactivation is off.
pub(super) fn run(
    config: &Config,
    store: &mut Store,
    out: &Output,
) -> Result<Option<u64>, SyncError> {
    let sync = &config.sync;
    if !sync.deactivate_missing {
        return Ok(None);
    }
    let known = store.misses()?;
    let mut ldap_backed_total: u64 = 0;
    let mut missing: Vec<String> = Vec::new();
    let mut back: Vec<String> = Vec::new();
    let mut due: Vec<(String, u32)> = Vec::new();
    store.ldap_backed_with_listed(|row, listed| {
        let Ok(digest) = &row else {
            return;
        };
        let Row::Stored { state, active, .. } = Row::of(&row) else {
            return;
        };
        if !is_ldap_backed(state) {
            return;
        }
        ldap_backed_total += 1;
        let address = digest.username.to_lowercase();
        let seen = known.get(&address);
        if listed {
            if seen.is_some() {
                back.push(address);
            }
            return;
        }
        // Inactive already, or deactivated by a run and activated again by an admin.
        if !active || seen.is_some_and(|m| m.deactivated) {
            return;
        }
        let misses = seen.map_or(0, |m| m.count) + 1;
        if misses >= sync.missing_runs {
            due.push((address.clone(), misses));
        }
        missing.push(address);
    })?;
    due.sort_unstable();

    let dry_run = out.dry_run();
    if !dry_run {
        store.record_misses(&missing, &back)?;
    }
    let share = u64::from(sync.max_deactivate_percent);
    if due.len() as u64 * 100 > share * ldap_backed_total {
        out.line(
            Severity::Error,
            &format!(
                "result=error reason=\"{} of {} LDAP-backed mailboxes are missing from {} \
                 listings in a row, more than sync.max_deactivate_percent ({}%): none \
                 deactivated (check ldap.base_dn and ldap.filter)\"",
                due.len(),
                ldap_backed_total,
                sync.missing_runs,
                sync.max_deactivate_percent
            ),
        );
        return Ok(Some(0));
    }
    let mut deactivated = 0;
    for (address, misses) in due {
        let who = printable_word(&address);
        if dry_run {
            out.line(
                Severity::Info,
                &format!(
                    "user={who} result=deactivated reason=\"would deactivate: missing from \
                     {misses} complete listings in a row\""
                ),
            );
            deactivated += 1;
        } else if store.deactivate(&address)? {
            out.line(
                Severity::Info,
                &format!(
                    "user={who} result=deactivated reason=\"missing from {misses} complete \
                     listings in a row: mailbox and alias deactivated\""
                ),
            );
            deactivated += 1;
        }
    }
    Ok(Some(deactivated))
}

fn is_ldap_backed(state: MailboxState) -> bool {
    ldap_backed(state).is_ok()
}

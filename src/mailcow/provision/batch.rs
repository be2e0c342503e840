//! Provisioning in batches, for the sync: many creations or template updates of one domain in
//! one transaction, each mailbox with exactly the checks and rows of a single creation or
//! update.
//!
//! The domain row is locked last, briefly: a batch first writes every row (and the SOGo view
//! rows), then locks the domain row, reads the domain's usage once — which counts the batch's
//! own uncommitted rows, taken off again — checks the limits in the batch's order with a
//! running total, and commits. A first login or template update of the same domain waits for
//! that last step only, not for the batch's writes. A mailbox the limits refuse at that point
//! was written already: the batch runs again without it.
//!
//! A preview (the sync's `--dry-run`) runs the same checks and running totals on unlocked reads
//! and writes nothing: it says what the batch would do, mailbox by mailbox.
//!
//! A mailbox refused by the checks is left out and the batch goes on. A mailbox whose
//! statements fail on the server (bad data, a trigger, …) rolls the batch back; it is counted
//! as failed and the batch is run again without it. Races (deadlock, duplicate key) run the
//! whole batch again, as for single writes.

use super::checks::{
    ApplyCheck, CreateCheck, check_domain, check_increase, check_mailbox, check_new,
};
use super::plan::{NewMailbox, Update};
use super::tx::{TxError, with_retries, write_new, write_update};
use super::{missing_for_update, new_mailbox, outside_mysql};
use crate::mailcow::ratelimit::RateLimit;
use crate::mailcow::store::{DomainUsage, LockedMailbox, Store, StoreError, Tx};
use crate::mailcow::template::Template;

/// Write the batch, or only find out what it would write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Write,
    Preview,
}

/// A mailbox to create or update, with its template (`None`: no template of that name).
pub struct Item<'a> {
    pub username: &'a str,
    pub display_name: Option<&'a str>,
    pub template_name: &'a str,
    pub template: Option<&'a Template>,
}

/// What a batch did to one mailbox.
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    /// Created, or the template re-applied (a preview: would be); with the side effects
    /// outside MySQL not performed.
    Written { skipped: Vec<String> },
    /// Nothing to write: the mailbox exists already (create) or is up to date (update).
    Nothing,
    /// Update only: the mailbox, as locked, has this other authsource or is a resource.
    NotLdapBacked(String),
    /// Refused by the checks (create), or skipped for this reason (update).
    Refused(String),
    /// Its statements failed; the rest of the batch was written without it.
    Failed(String),
}

/// One run of a batch: done, or the mailbox (position) whose statements failed, or the
/// mailboxes (positions) written before the limits refused them.
enum Attempt {
    Done(Vec<Done>),
    ItemFailed(usize, StoreError),
    Refused(Vec<(usize, String)>),
}

/// Whether a statement's error belongs to the mailbox it was for (the server refused it), or
/// ends the batch (connection) or repeats it (race).
fn item_fault(k: usize, e: StoreError) -> Result<Attempt, TxError> {
    match &e {
        StoreError::Data(_) => Ok(Attempt::ItemFailed(k, e)),
        StoreError::Query {
            source: mysql::Error::MySqlError(_),
            ..
        } if !e.is_race() => Ok(Attempt::ItemFailed(k, e)),
        _ => Err(TxError::Store(e)),
    }
}

/// Runs `attempt` over the pending items until it writes them all, leaving out each item
/// whose statements fail. `results[i]` is filled for every pending item `i`.
fn run<T>(
    mut pending: Vec<(usize, T)>,
    results: &mut [Option<Done>],
    mut attempt: impl FnMut(&[(usize, T)]) -> Result<Attempt, TxError>,
) -> Result<(), StoreError> {
    while !pending.is_empty() {
        match with_retries(|| attempt(&pending)) {
            Ok(Attempt::Done(done)) => {
                for ((i, _), done) in pending.iter().zip(done) {
                    results[*i] = Some(done);
                }
                return Ok(());
            }
            Ok(Attempt::ItemFailed(k, e)) => {
                let (i, _) = pending.remove(k);
                results[i] = Some(Done::Failed(e.to_string()));
            }
            Ok(Attempt::Refused(refused)) => {
                for (k, why) in refused.into_iter().rev() {
                    let (i, _) = pending.remove(k);
                    results[i] = Some(Done::Refused(why));
                }
            }
            // The domain row's checks: the same answer for every mailbox of the batch.
            Err(TxError::Refused(why)) => {
                for (i, _) in pending {
                    results[i] = Some(Done::Refused(why.clone()));
                }
                return Ok(());
            }
            Err(TxError::Store(e)) => return Err(e),
        }
    }
    Ok(())
}

/// A transaction that locks what it decides on (writes), or unlocked reads (previews).
fn begin(store: &mut Store, mode: Mode) -> Result<Tx<'_>, StoreError> {
    match mode {
        Mode::Write => store.transaction(),
        Mode::Preview => store.snapshot(),
    }
}

/// Creates the mailboxes of `items`, all in `domain`; one [`Done`] per item, in order.
pub fn create(
    store: &mut Store,
    domain: &str,
    items: &[Item],
    mode: Mode,
) -> Result<Vec<Done>, StoreError> {
    let mut results: Vec<Option<Done>> = items.iter().map(|_| None).collect();
    let mut pending: Vec<(usize, NewMailbox)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match new_mailbox(
            item.username,
            item.display_name,
            item.template_name,
            item.template,
        ) {
            Ok((new, _)) => pending.push((i, new)),
            Err(e) => results[i] = Some(Done::Refused(e.to_string())),
        }
    }
    run(pending, &mut results, |pending| {
        let mut tx = begin(store, mode)?;
        // Every row first, unlocked (a taken address is decided now: its row or alias exists)
        let mut facts = Vec::with_capacity(pending.len());
        let mut written: Vec<(&str, i64)> = Vec::with_capacity(pending.len());
        let mut ours = DomainUsage::default();
        for (k, (_, new)) in pending.iter().enumerate() {
            let address = match tx.address_facts(&new.username) {
                Ok(address) => address,
                Err(e) => return item_fault(k, e),
            };
            if !address.taken() && mode == Mode::Write {
                if let Err(e) = write_new(&mut tx, new) {
                    return item_fault(k, e);
                }
                written.push((&new.username, new.active));
                ours.count += 1;
                ours.used_mib = ours.used_mib.saturating_add(new.quota_mib);
            }
            facts.push(address);
        }
        if mode == Mode::Write {
            tx.refresh_sogo_views(&written)?;
        }
        // … then the domain lock, held only for the limits and the commit. The usage (counting
        // this batch's uncommitted rows, taken off again) is read before the lock, and again
        // under it only when another transaction added to the domain meanwhile.
        let writes = tx.domain_writes(domain)?;
        let early = writes.map(|_| tx.domain_usage(domain)).transpose()?;
        let domain_row = check_domain(&mut tx, domain)?;
        let usage = match early {
            Some(usage) if tx.domain_writes(domain)? == writes => usage,
            _ => tx.domain_usage(domain)?,
        };
        let mut usage = usage.without(ours);
        let mut done = Vec::with_capacity(pending.len());
        let mut refused = Vec::new();
        for (k, ((_, new), address)) in pending.iter().zip(&facts).enumerate() {
            match check_new(new, &domain_row, address, usage) {
                Ok(CreateCheck::Create) => {
                    usage.count += 1;
                    usage.used_mib = usage.used_mib.saturating_add(new.quota_mib);
                    done.push(Done::Written {
                        skipped: Vec::new(),
                    });
                }
                Ok(CreateCheck::Exists) => done.push(Done::Nothing),
                // Written already: the batch runs again without it.
                Err(TxError::Refused(why)) if mode == Mode::Write && !address.taken() => {
                    refused.push((k, why))
                }
                Err(TxError::Refused(why)) => done.push(Done::Refused(why)),
                Err(TxError::Store(e)) => return item_fault(k, e),
            }
        }
        if !refused.is_empty() {
            return Ok(Attempt::Refused(refused));
        }
        if mode == Mode::Write {
            tx.count_domain_write(domain)?;
            tx.commit("committing a batch of new mailboxes")?;
        }
        Ok(Attempt::Done(done))
    })?;
    Ok(finish(store, items, results, mode, RateLimit::on_creation))
}

/// Re-applies the mapped templates of `items` (mailboxes of `domain`) where the template or
/// the display name changed, deciding on each mailbox row as locked; one [`Done`] per item.
pub fn apply(
    store: &mut Store,
    domain: &str,
    items: &[Item],
    mode: Mode,
) -> Result<Vec<Done>, StoreError> {
    let mut results: Vec<Option<Done>> = items.iter().map(|_| None).collect();
    let mut pending: Vec<(usize, (Update, &str))> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.template {
            Some(t) => pending.push((i, (Update::build(item.display_name, t), item.username))),
            None => results[i] = Some(Done::Refused(missing_for_update(item.template_name))),
        }
    }
    run(pending, &mut results, |pending| {
        let mut tx = begin(store, mode)?;
        // Every mailbox row locked, decided on and written first …
        let mut checks = Vec::with_capacity(pending.len());
        let mut written: Vec<(&str, i64)> = Vec::with_capacity(pending.len());
        // Bytes of quota the written rows added to the domain's sum.
        let mut ours: i64 = 0;
        for (k, (_, (update, username))) in pending.iter().enumerate() {
            match check_mailbox(&mut tx, username, update) {
                Ok(ApplyCheck::Apply { quota, locked }) => {
                    if mode == Mode::Write {
                        match write_update(&mut tx, username, update, quota, &locked) {
                            Ok(active) => written.push((username, active)),
                            Err(e) => return item_fault(k, e),
                        }
                        ours += quota - counted_quota(&locked);
                    }
                    checks.push(Ok(ApplyCheck::Apply { quota, locked }));
                }
                Ok(check) => checks.push(Ok(check)),
                Err(TxError::Refused(why)) => checks.push(Err(why)),
                Err(TxError::Store(e)) => return item_fault(k, e),
            }
        }
        if mode == Mode::Write {
            tx.refresh_sogo_views(&written)?;
        }
        // … then the domain row locked, held only for the checks of quota increases (on the
        // domain's sum before this batch, with a running total in the batch's order) and the
        // commit.
        let Some(domain_row) = tx.domain(domain)? else {
            return Err(TxError::Refused(format!("domain {domain} missing")));
        };
        // The sum before this batch, read on the first increase; the deltas of the batch so far.
        let mut before: Option<i64> = None;
        let mut delta: i64 = 0;
        let mut done = Vec::with_capacity(pending.len());
        let mut refused = Vec::new();
        for (k, ((_, (update, _)), check)) in pending.iter().zip(checks).enumerate() {
            let (quota, locked) = match check {
                Ok(ApplyCheck::Apply { quota, locked }) => (quota, locked),
                Ok(ApplyCheck::UpToDate) => {
                    done.push(Done::Nothing);
                    continue;
                }
                Ok(ApplyCheck::NotLdapBacked(authsource)) => {
                    done.push(Done::NotLdapBacked(authsource));
                    continue;
                }
                Err(why) => {
                    done.push(Done::Refused(why));
                    continue;
                }
            };
            if quota > locked.quota {
                let sum = match before {
                    Some(sum) => sum,
                    None => tx.quota_of_domain(domain)? - ours,
                };
                before = Some(sum);
                let others = sum + delta - counted_quota(&locked);
                match check_increase(&domain_row, domain, update, quota, others) {
                    Ok(()) => {}
                    // Written already: the batch runs again without it.
                    Err(TxError::Refused(why)) if mode == Mode::Write => {
                        refused.push((k, why));
                        continue;
                    }
                    Err(TxError::Refused(why)) => {
                        done.push(Done::Refused(why));
                        continue;
                    }
                    Err(TxError::Store(e)) => return item_fault(k, e),
                }
            }
            delta += quota - counted_quota(&locked);
            done.push(Done::Written {
                skipped: Vec::new(),
            });
        }
        if !refused.is_empty() {
            return Ok(Attempt::Refused(refused));
        }
        if mode == Mode::Write {
            // A quota grew (its check read the sum): counted, as creations are.
            if before.is_some() {
                tx.count_domain_write(domain)?;
            }
            tx.commit("committing a batch of template updates")?;
        }
        Ok(Attempt::Done(done))
    })?;
    Ok(finish(store, items, results, mode, RateLimit::on_update))
}

/// One [`Done`] per item; for a written batch, after its commit, what a single write does
/// then for each mailbox written: the Redis rate limit (with a `redis:` section), and the list
/// of what was left out.
fn finish(
    store: &Store,
    items: &[Item],
    results: Vec<Option<Done>>,
    mode: Mode,
    rate_limit: fn(&Template) -> RateLimit,
) -> Vec<Done> {
    items
        .iter()
        .zip(results)
        .map(|(item, result)| match (result, item.template) {
            (Some(Done::Written { .. }), Some(template)) if mode == Mode::Write => Done::Written {
                skipped: outside_mysql(store, item.username, rate_limit(template)),
            },
            (result, _) => result.unwrap_or(Done::Nothing),
        })
        .collect()
}

/// The quota a mailbox adds to its domain's sum (resources are not counted).
fn counted_quota(locked: &LockedMailbox) -> i64 {
    if locked.kind.is_empty() {
        locked.quota
    } else {
        0
    }
}

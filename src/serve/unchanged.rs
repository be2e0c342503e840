//! Reads after the LDAP bind reused while mailcow's tables are unchanged. That read decides a
//! login's acceptance ([`crate::login`]); `serve` answers it from the same read made by a
//! login moments ago (at most [`FOR`](super::remembered::FOR)) when polls of the database, every
//! `serve.change_poll_ms`, have seen no change to the mailbox, domain, template and app
//! password tables since that read began. So a login of an existing mailbox costs no database
//! round trip, and a change made in mailcow counts from the next poll (docs/design.md).
//!
//! MariaDB publishes a table's last change at commit, as the second its transaction began. A
//! poll counts as "no change" only when every table shows the time the previous poll saw, and
//! that time is more than [`SETTLING_S`] seconds older than the previous poll: a later transaction that
//! began in the same second (a lock wait, a long transaction) publishes the same time when it
//! commits. Anything else — a change, a failed poll, no poll for a while, a server that is not
//! MariaDB — ends the reuse of every read made before it. Left: a transaction open longer than
//! [`SETTLING_S`] seconds that began in the same second as one already seen; a read it makes stale is
//! reused for at most [`FOR`](super::remembered::FOR).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::remembered::{ReadCounts, Recent};
use crate::config::Config;
use crate::connections::{AfterBind, connect_store};
use crate::deadline::Deadline;
use crate::log::{Logger, Severity};
use crate::mailcow::{Mailbox, Store, TableChanges, Template};

/// A read kept for reuse.
#[derive(Clone)]
struct Kept {
    /// The epoch the read began in.
    epoch: u64,
    mailbox: Mailbox,
    /// The template the read was for, as read.
    template: Option<(String, Option<Template>)>,
}

/// How long after its transaction began a change keeps the polls from counting as "no change".
const SETTLING_S: i64 = 5;

pub struct Unchanged {
    /// Moves on with every poll that may have seen a change: reads of an older epoch are not
    /// reused.
    epoch: AtomicU64,
    /// When the last poll ended, in ms since `start`; 0: none yet.
    polled_at: AtomicU64,
    start: Instant,
    /// Reuse ends when no poll ended for this long (a stuck poll, a slow database).
    stale_after: Duration,
    reads: Recent<Kept>,
    pub counts: ReadCounts,
}

impl Unchanged {
    /// Starts polling (unless `serve.change_poll_ms` is 0). The polls stop once the returned
    /// value is dropped (a reload with other database settings).
    pub fn start(config: &'static Config, logger: Arc<Logger>) -> Arc<Unchanged> {
        let every = Duration::from_millis(config.serve.change_poll_ms);
        let unchanged = Arc::new(Unchanged {
            epoch: AtomicU64::new(0),
            polled_at: AtomicU64::new(0),
            start: Instant::now(),
            stale_after: every * 3 + Duration::from_secs(1),
            reads: Recent::default(),
            counts: ReadCounts::default(),
        });
        if !every.is_zero() {
            let watched = Arc::downgrade(&unchanged);
            std::thread::spawn(move || poll(&watched, config, &logger, every));
        }
        unchanged
    }

    /// The epoch of a read that begins now, or `None` when reads may not be reused now.
    pub fn current(&self) -> Option<u64> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let polled_at = self.polled_at.load(Ordering::SeqCst);
        let since = self.millis().saturating_sub(polled_at);
        (polled_at != 0 && u128::from(since) <= self.stale_after.as_millis()).then_some(epoch)
    }

    /// The read after the bind a login of `username` made moments ago for the same template,
    /// if the tables are unchanged since it began.
    pub fn reuse(&self, username: &str, template: Option<&str>) -> Option<AfterBind> {
        let epoch = self.current()?;
        let kept = self.reads.get(username, |kept| {
            kept.epoch == epoch && kept.template.as_ref().map(|(name, _)| name.as_str()) == template
        })?;
        self.counts.reused();
        Some(AfterBind {
            mailbox: kept.mailbox,
            template: kept.template.map(|(_, template)| Ok(template)),
        })
    }

    /// Keeps a read made in the database that began in `epoch` (what [`Unchanged::current`]
    /// said before it).
    pub fn keep(
        &self,
        username: &str,
        epoch: Option<u64>,
        template: Option<&str>,
        read: &Option<AfterBind>,
    ) {
        self.counts.read();
        let kept = match (epoch, read) {
            (Some(epoch), Some(read)) => match (&read.template, template) {
                (None, _) => Some(None),
                (Some(Ok(loaded)), Some(name)) => Some(Some((name.to_owned(), loaded.clone()))),
                _ => None,
            }
            .map(|template| Kept {
                epoch,
                mailbox: read.mailbox.clone(),
                template,
            }),
            _ => None,
        };
        match kept {
            Some(kept) => self.reads.keep(username, kept),
            None => self.reads.forget(username),
        }
    }

    /// Whether reads are being reused now, for `/metrics`.
    pub fn reusing(&self) -> bool {
        self.current().is_some()
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// Polls until `watched` is dropped.
fn poll(watched: &Weak<Unchanged>, config: &'static Config, logger: &Logger, every: Duration) {
    let mut store: Option<Store> = None;
    let mut last: Option<TableChanges> = None;
    let mut failing = false;
    loop {
        std::thread::sleep(every);
        let Some(unchanged) = watched.upgrade() else {
            return;
        };
        let seen = match &mut store {
            Some(store) => store.table_changes().map_err(|e| e.to_string()),
            empty => connect_store(config, &Deadline::after(config.database.timeout))
                .map_err(|e| e.to_string())
                .and_then(|store| {
                    empty
                        .insert(store)
                        .table_changes()
                        .map_err(|e| e.to_string())
                }),
        };
        let seen = match seen {
            Ok(seen) if !seen.mariadb => {
                logger.log(
                    Severity::Warning,
                    "serve: the database is not MariaDB, whose table change times serve relies \
                     on: every login reads its mailbox after the LDAP bind",
                );
                unchanged.epoch.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(seen) => seen,
            Err(e) => {
                unchanged.epoch.fetch_add(1, Ordering::SeqCst);
                if !failing {
                    logger.log(
                        Severity::Warning,
                        &format!(
                            "serve: cannot ask the database whether mailcow's tables changed \
                             ({e}): every login reads its mailbox after the LDAP bind until it \
                             answers"
                        ),
                    );
                }
                (store, last, failing) = (None, None, true);
                continue;
            }
        };
        if !settled(last.as_ref(), &seen) {
            unchanged.epoch.fetch_add(1, Ordering::SeqCst);
        }
        unchanged
            .polled_at
            .store(unchanged.millis().max(1), Ordering::SeqCst);
        if failing {
            logger.log(
                Severity::Info,
                "serve: the database answers again: reads after the bind are reused",
            );
        }
        (last, failing) = (Some(seen), false);
    }
}

/// Whether nothing can have changed between the poll `last` and the poll `seen`: the same
/// times, each more than [`SETTLING_S`] older than `last` (see the module's comment).
fn settled(last: Option<&TableChanges>, seen: &TableChanges) -> bool {
    let Some(last) = last else {
        return false;
    };
    last.tables == seen.tables
        && seen
            .tables
            .iter()
            .all(|(_, changed)| changed.is_none_or(|at| at + SETTLING_S < last.now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(now: i64, mailbox: Option<i64>) -> TableChanges {
        TableChanges {
            now,
            mariadb: true,
            tables: vec![("domain".into(), Some(100)), ("mailbox".into(), mailbox)],
        }
    }

    #[test]
    fn settled_only_with_the_same_times_all_older_than_the_settling_time() {
        // The first poll has nothing to compare with.
        assert!(!settled(None, &changes(200, Some(150))));
        assert!(settled(
            Some(&changes(200, Some(150))),
            &changes(200, Some(150))
        ));
        assert!(settled(Some(&changes(200, None)), &changes(201, None)));
        // A change.
        assert!(!settled(
            Some(&changes(200, Some(150))),
            &changes(200, Some(190))
        ));
        assert!(!settled(
            Some(&changes(200, None)),
            &changes(200, Some(150))
        ));
        // The same time, but recent: a transaction that began in that second may still commit.
        for at in [195, 199, 200] {
            assert!(!settled(
                Some(&changes(200, Some(at))),
                &changes(200, Some(at))
            ));
        }
        assert!(settled(
            Some(&changes(200, Some(194))),
            &changes(200, Some(194))
        ));
        // A table that appeared or went.
        let mut fewer = changes(200, Some(150));
        fewer.tables.pop();
        assert!(!settled(Some(&changes(200, Some(150))), &fewer));
    }
}

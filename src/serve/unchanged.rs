//! Reads after the LDAP bind reused while mailcow's tables are unchanged. That read decides a
//! login's acceptance ([`crate::login`]); `serve` answers it from the same read made by a
//! login moments ago (at most [`FOR`]) when polls of the database, every
//! `serve.change_poll_ms`, have seen no change to the `mailbox`, `domain` and `templates`
//! tables (what the read comes from) since that read began. So a login of an existing mailbox
//! costs no database round trip, and a change made in mailcow counts from the next poll
//! (docs/design.md).
//!
//! MariaDB publishes a table's last change at commit, as the second its transaction began. A
//! poll counts as "no change" only when every table shows the time the previous poll saw, and
//! that time is more than [`SETTLING_S`] seconds older than the previous poll: a later
//! transaction that began in the same second (a lock wait, a long transaction) publishes the
//! same time when it commits. Anything else — a change, a failed poll, polls too far apart, a
//! server that is not a lone MariaDB — ends the reuse of every read made before it. Left: a
//! transaction open longer than [`SETTLING_S`] seconds that began in the same second as one
//! already seen; a read it makes stale is reused for at most [`FOR`]. Reuse also rests on the
//! polls and the reads reaching the same server (no proxy in front of replicas).
//!
//! [`FOR`]: super::remembered::FOR

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
    /// The template the read was for, by name, as read (`None` inside: no such template).
    /// Only a read whose template could be read is kept.
    template: Option<(String, Option<Template>)>,
}

/// How long after its transaction began a change keeps the polls from counting as "no change".
const SETTLING_S: i64 = 5;

pub struct Unchanged {
    /// Moves on with every poll that may have seen a change: reads of an older epoch are not
    /// reused.
    epoch: AtomicU64,
    /// When the last poll that counted began, in ms since `start`; 0: none yet.
    polled_at: AtomicU64,
    start: Instant,
    /// Reuse pauses when no poll began for this long (a stuck poll, a slow database), and a
    /// poll that began this long after the one before moves the epoch on.
    stale_after: Duration,
    reads: Recent<Kept>,
    pub counts: ReadCounts,
}

impl Unchanged {
    fn new(every: Duration) -> Unchanged {
        Unchanged {
            epoch: AtomicU64::new(0),
            polled_at: AtomicU64::new(0),
            start: Instant::now(),
            // Three polls missed, and a second for a slow database.
            stale_after: every * 3 + Duration::from_secs(1),
            reads: Recent::default(),
            counts: ReadCounts::default(),
        }
    }

    /// Starts polling (unless `serve.change_poll_ms` is 0). The polls stop once the returned
    /// value is dropped (a reload with other database settings).
    pub fn start(config: &'static Config, logger: Arc<Logger>) -> Arc<Unchanged> {
        let every = Duration::from_millis(config.serve.change_poll_ms);
        let unchanged = Arc::new(Unchanged::new(every));
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
            reused: true,
        })
    }

    /// Keeps a read made in the database that began at `read_at` in `epoch` (what
    /// [`Unchanged::current`] said before it) for `template`.
    pub fn keep(
        &self,
        username: &str,
        epoch: Option<u64>,
        read_at: Instant,
        template: Option<&str>,
        read: &Option<AfterBind>,
    ) {
        self.counts.read();
        let kept = match (epoch, read) {
            (Some(epoch), Some(read)) => {
                let template = match (template, &read.template) {
                    (None, _) => Some(None),
                    (Some(name), Some(Ok(loaded))) => Some(Some((name.to_owned(), loaded.clone()))),
                    // unreadable: the next login reads again
                    (Some(_), _) => None,
                };
                template.map(|template| Kept {
                    epoch,
                    mailbox: read.mailbox.clone(),
                    template,
                })
            }
            _ => None,
        };
        match kept {
            Some(kept) => self.reads.keep(username, kept, read_at),
            None => self.reads.forget(username),
        }
    }

    /// Whether reads are being reused now, for `/metrics`.
    pub fn reusing(&self) -> bool {
        self.current().is_some()
    }

    /// What a poll that began at `began` (from [`Unchanged::millis`]) found: `settled` when it
    /// saw no possible change since the poll before.
    fn polled(&self, began: u64, settled: bool) {
        let last = self.polled_at.load(Ordering::SeqCst);
        let gap = u128::from(began.saturating_sub(last));
        if !settled || last == 0 || gap > self.stale_after.as_millis() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
        self.polled_at.store(began.max(1), Ordering::SeqCst);
    }

    /// A poll failed, or cannot be trusted: no read is reused until a poll answers again.
    fn unsure(&self) {
        self.polled_at.store(0, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times reuse ended so far, for `/metrics` (a poll that saw a change, failed,
    /// or came late).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
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
        let began = unchanged.millis();
        let seen = match &mut store {
            Some(store) => store.table_changes().map(Some).map_err(|e| e.to_string()),
            empty => connect_and_look(config, empty),
        };
        let seen = match seen {
            Ok(None) => {
                unchanged.unsure();
                logger.log(
                    Severity::Warning,
                    "serve: the database is not a lone MariaDB server, whose table change times \
                     serve relies on: every login reads its mailbox after the LDAP bind",
                );
                return;
            }
            Ok(Some(seen)) => seen,
            Err(e) => {
                unchanged.unsure();
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
        unchanged.polled(began, settled(last.as_ref(), &seen));
        if failing {
            logger.log(
                Severity::Info,
                "serve: the database answers again: reads after the bind are reused once \
                 mailcow's tables are unchanged for a few seconds",
            );
        }
        (last, failing) = (Some(seen), false);
    }
}

/// A new connection for the polls, in `store`, and its first look at the tables; `None` when
/// the server's times cannot be trusted.
fn connect_and_look(
    config: &Config,
    store: &mut Option<Store>,
) -> Result<Option<TableChanges>, String> {
    let mut connected = connect_store(config, &Deadline::after(config.database.timeout))
        .map_err(|e| e.to_string())?;
    if !connected.for_table_changes().map_err(|e| e.to_string())? {
        return Ok(None);
    }
    store
        .insert(connected)
        .table_changes()
        .map(Some)
        .map_err(|e| e.to_string())
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
    use super::super::remembered::FOR;
    use super::*;
    use crate::mailcow::StoreError;

    fn changes(now: i64, mailbox: Option<i64>) -> TableChanges {
        TableChanges {
            now,
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

    fn read() -> Option<AfterBind> {
        Some(AfterBind {
            mailbox: crate::userdb::tests::mailbox("alice", 0),
            template: None,
            reused: false,
        })
    }

    #[test]
    fn a_read_is_reused_only_in_its_epoch_for_its_template_while_the_polls_go_on() {
        let unchanged = Unchanged::new(Duration::from_millis(100));
        assert_eq!(unchanged.current(), None, "no poll yet");
        unchanged.polled(unchanged.millis(), true);
        let epoch = unchanged.current().expect("polled just now");
        let alice = "alice@example.org";
        unchanged.keep(alice, Some(epoch), Instant::now(), None, &read());
        assert!(unchanged.reuse(alice, None).is_some());
        assert!(
            unchanged.reuse(alice, Some("Staff")).is_none(),
            "other template"
        );
        assert!(unchanged.reuse("bob@example.org", None).is_none());
        // a poll that saw no change keeps it; one that may have seen one ends it
        unchanged.polled(unchanged.millis(), true);
        assert!(unchanged.reuse(alice, None).is_some());
        unchanged.polled(unchanged.millis(), false);
        assert!(unchanged.reuse(alice, None).is_none());
        // read in an epoch that ended before it was kept
        unchanged.keep(alice, Some(epoch), Instant::now(), None, &read());
        assert!(unchanged.reuse(alice, None).is_none());
        // a failed poll ends it too
        let epoch = unchanged.current().unwrap();
        unchanged.keep(alice, Some(epoch), Instant::now(), None, &read());
        unchanged.unsure();
        assert_eq!(
            unchanged.current(),
            None,
            "nothing reused until a poll answers"
        );
        assert!(unchanged.reuse(alice, None).is_none());
        unchanged.polled(unchanged.millis(), true);
        assert!(unchanged.reuse(alice, None).is_none());
        // not kept: read while reuse was off, a template that could not be read, older than FOR
        unchanged.keep(alice, None, Instant::now(), None, &read());
        assert!(unchanged.reuse(alice, None).is_none());
        let epoch = unchanged.current().unwrap();
        let unreadable = Some(AfterBind {
            mailbox: crate::userdb::tests::mailbox("alice", 0),
            template: Some(Err(StoreError::Data("bad".into()))),
            reused: false,
        });
        unchanged.keep(
            alice,
            Some(epoch),
            Instant::now(),
            Some("Staff"),
            &unreadable,
        );
        assert!(unchanged.reuse(alice, Some("Staff")).is_none());
        let Some(long_ago) = Instant::now().checked_sub(FOR) else {
            return;
        };
        unchanged.keep(alice, Some(epoch), long_ago, None, &read());
        assert!(unchanged.reuse(alice, None).is_none());
    }

    #[test]
    fn polls_too_far_apart_end_reuse() {
        let unchanged = Unchanged::new(Duration::from_millis(10));
        unchanged.polled(1, true);
        let epoch = unchanged.current();
        // the next poll began long after: a change may have come and gone unseen
        unchanged.polled(1 + 10_000, true);
        assert_ne!(unchanged.current(), epoch);
        // and with no poll for that long, nothing is reused
        let stale = Unchanged::new(Duration::from_millis(10));
        stale.polled(1, true);
        std::thread::sleep(stale.stale_after + Duration::from_millis(20));
        assert_eq!(stale.current(), None);
    }
}

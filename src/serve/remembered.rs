//! Mailbox rows that logins read in the last few seconds, so that a mailbox logging in again
//! soon skips the database read before LDAP (docs/performance.md). The login flow takes a
//! remembered row only to send a login on to LDAP: every refusal is decided on a row read for
//! that login, and every acceptance on the read after the bind ([`crate::login`]; that one is
//! reused only while mailcow's tables are unchanged, [`super::unchanged`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::mailcow::{LoginRead, Mailbox};

/// How long a value is used again.
pub const FOR: Duration = Duration::from_secs(5);
/// Values kept at most (bounds memory whatever the number of mailboxes): when full, the
/// expired ones go, and if that is not enough, all of them.
const AT_MOST: usize = 10_000;

/// Values from logins of the last [`FOR`], by mailbox.
pub struct Recent<V> {
    values: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            values: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> Recent<V> {
    fn values(&self) -> MutexGuard<'_, HashMap<String, (Instant, V)>> {
        self.values.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of `username` kept less than [`FOR`] ago, if `usable` says it fits.
    pub fn get(&self, username: &str, usable: impl Fn(&V) -> bool) -> Option<V> {
        self.values()
            .get(username)
            .filter(|(at, value)| at.elapsed() < FOR && usable(value))
            .map(|(_, value)| value.clone())
    }

    /// Keeps `value`, read from the database at `read_at` (its age counts from then).
    pub fn keep(&self, username: &str, value: V, read_at: Instant) {
        let mut values = self.values();
        if values.len() >= AT_MOST {
            values.retain(|_, (at, _)| at.elapsed() < FOR);
        }
        if values.len() >= AT_MOST {
            values.clear();
        }
        values.insert(username.to_owned(), (read_at, value));
    }

    pub fn forget(&self, username: &str) {
        self.values().remove(username);
    }
}

/// Counts of reads answered from memory and made in the database, for `/metrics`.
#[derive(Default)]
pub struct ReadCounts {
    reused: AtomicU64,
    read: AtomicU64,
}

impl ReadCounts {
    pub fn reused(&self) {
        self.reused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) {
        self.read.fetch_add(1, Ordering::Relaxed);
    }

    /// (reused, read) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.reused.load(Ordering::Relaxed),
            self.read.load(Ordering::Relaxed),
        )
    }
}

/// The rows read before LDAP.
#[derive(Default)]
pub struct Remembered {
    rows: Recent<Mailbox>,
    pub counts: ReadCounts,
}

impl Remembered {
    /// The row of `username` read less than [`FOR`] ago, counted as used.
    pub fn get(&self, username: &str) -> Option<Mailbox> {
        let found = self.rows.get(username, |_| true);
        if found.is_some() {
            self.counts.reused();
        }
        found
    }

    /// Keeps what a login read from the database at `read_at`. Only a mailbox without app
    /// passwords is kept: a login with an app password is decided before LDAP, on a fresh read.
    pub fn keep(&self, username: &str, read: &LoginRead, read_at: Instant) {
        self.counts.read();
        match &read.mailbox {
            Some(mailbox) if read.app_passwords.is_empty() => {
                self.rows.keep(username, mailbox.clone(), read_at);
            }
            _ => self.rows.forget(username),
        }
    }
}

//! Mailbox rows that logins read in the last few seconds, so that a mailbox logging in again
//! soon costs one database round trip instead of two (docs/performance.md). The login flow
//! takes a remembered row only to send a login on to LDAP: every refusal and every acceptance
//! is decided on a row read for that login ([`crate::login`]). So a change an admin makes
//! counts at once; at most, a login of a mailbox deactivated in the last seconds still
//! reaches LDAP before the refusal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::mailcow::{LoginRead, Mailbox};

/// How long a row is used again.
const FOR: Duration = Duration::from_secs(5);
/// Rows kept at most (bounds memory whatever the number of mailboxes): when full, the
/// expired rows go, and if that is not enough, all of them.
const AT_MOST: usize = 10_000;

#[derive(Default)]
pub struct Remembered {
    rows: Mutex<HashMap<String, (Instant, Mailbox)>>,
    used: AtomicU64,
    read: AtomicU64,
}

impl Remembered {
    fn rows(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Mailbox)>> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The row of `username` read less than [`FOR`] ago, counted as used.
    pub fn get(&self, username: &str) -> Option<Mailbox> {
        let found = self
            .rows()
            .get(username)
            .filter(|(at, _)| at.elapsed() < FOR)
            .map(|(_, mailbox)| mailbox.clone());
        if found.is_some() {
            self.used.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Keeps what a login read from the database. Only a mailbox without app passwords is
    /// kept: a login with an app password is decided before LDAP, on a fresh read.
    pub fn keep(&self, username: &str, read: &LoginRead) {
        self.read.fetch_add(1, Ordering::Relaxed);
        let mut rows = self.rows();
        match &read.mailbox {
            Some(mailbox) if read.app_passwords.is_empty() => {
                if rows.len() >= AT_MOST {
                    rows.retain(|_, (at, _)| at.elapsed() < FOR);
                }
                if rows.len() >= AT_MOST {
                    rows.clear();
                }
                rows.insert(username.to_owned(), (Instant::now(), mailbox.clone()));
            }
            _ => {
                rows.remove(username);
            }
        }
    }

    /// (reads answered from here, reads made in the database) so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.used.load(Ordering::Relaxed),
            self.read.load(Ordering::Relaxed),
        )
    }
}

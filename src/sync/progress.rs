//! A one-line progress display on a terminal: entries listed and mailboxes created and
//! re-applied so far, with the rate. The listing is written chunk by chunk as it arrives, so
//! the number of entries (and an ETA) is known only at the end. Without a terminal on
//! standard error it shows nothing.

use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraws at most this often.
const EVERY: Duration = Duration::from_millis(200);

pub(super) struct Progress {
    shown: bool,
    /// Start of the listing, for the rate.
    started: Instant,
    last: Cell<Option<Instant>>,
    listed: Cell<u64>,
    created: Cell<u64>,
    reapplied: Cell<u64>,
    /// Whether a line is on the screen (cleared before a log line).
    drawn: Cell<bool>,
}

impl Progress {
    /// Shown only when standard error is a terminal (not under cron or systemd).
    pub(super) fn new() -> Progress {
        Progress {
            shown: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: Cell::new(None),
            listed: Cell::new(0),
            created: Cell::new(0),
            reapplied: Cell::new(0),
            drawn: Cell::new(false),
        }
    }

    pub(super) fn listed(&self) {
        self.listed.set(self.listed.get() + 1);
        self.tick();
    }

    pub(super) fn wrote(&self, created: u64, reapplied: u64) {
        self.created.set(self.created.get() + created);
        self.reapplied.set(self.reapplied.get() + reapplied);
        self.tick();
    }

    fn tick(&self) {
        if !self.shown {
            return;
        }
        let now = Instant::now();
        if self.last.get().is_some_and(|t| now - t < EVERY) {
            return;
        }
        self.last.set(Some(now));
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let listed = self.listed.get();
        let line = format!(
            "listing: {listed} entries ({:.0}/s) · {} created · {} re-applied",
            listed as f64 / secs,
            self.created.get(),
            self.reapplied.get()
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.drawn.set(true);
    }

    /// Clears the line (before a log line, and at the end).
    pub(super) fn clear(&self) {
        if self.drawn.replace(false) {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

//! A one-line progress display on a terminal: entries listed, then mailboxes created and
//! re-applied, with rate and ETA. Without a terminal on standard error it shows nothing.

use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraws at most this often.
const EVERY: Duration = Duration::from_millis(200);

pub(super) struct Progress {
    shown: bool,
    /// Start of the current phase (listing, writing), for the rate.
    started: Cell<Instant>,
    last: Cell<Option<Instant>>,
    listed: Cell<u64>,
    /// Work done (created, re-applied or settled) of the total to do.
    done: Cell<u64>,
    total: Cell<u64>,
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
            started: Cell::new(Instant::now()),
            last: Cell::new(None),
            listed: Cell::new(0),
            done: Cell::new(0),
            total: Cell::new(0),
            created: Cell::new(0),
            reapplied: Cell::new(0),
            drawn: Cell::new(false),
        }
    }

    pub(super) fn listed(&self) {
        self.listed.set(self.listed.get() + 1);
        self.tick();
    }

    /// The writing starts: `total` mailboxes to create or re-apply.
    pub(super) fn start_writing(&self, total: u64) {
        self.total.set(total);
        self.done.set(0);
        self.started.set(Instant::now());
    }

    pub(super) fn wrote(&self, created: u64, reapplied: u64, done: u64) {
        self.created.set(self.created.get() + created);
        self.reapplied.set(self.reapplied.get() + reapplied);
        self.done.set(self.done.get() + done);
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
        let secs = self.started.get().elapsed().as_secs_f64().max(0.001);
        let line = if self.total.get() == 0 {
            let rate = self.listed.get() as f64 / secs;
            format!("listing: {} entries ({rate:.0}/s)", self.listed.get())
        } else {
            let (done, total) = (self.done.get(), self.total.get());
            let rate = done as f64 / secs;
            let eta = if rate > 0.0 {
                format!("{:.0} s", (total - done.min(total)) as f64 / rate)
            } else {
                "?".to_owned()
            };
            format!(
                "{} listed · {done}/{total} written ({} created, {} re-applied) · {rate:.0}/s · ETA {eta}",
                self.listed.get(),
                self.created.get(),
                self.reapplied.get()
            )
        };
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

//! What a run counts and says: one outcome per LDAP entry, the summary line, the `--json`
//! object.

use std::time::Instant;

use serde::Serialize;

use crate::log::Severity;

/// What happened to each entry of the listing, and to mailboxes missing from it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub created: u64,
    pub reapplied: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub failed: u64,
    pub entries: u64,
    /// `None` unless `sync.deactivate_missing` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivated: Option<u64>,
}

impl Counts {
    pub(super) fn add(&mut self, kind: Kind) {
        let counter = match kind {
            Kind::Created => &mut self.created,
            Kind::Reapplied => &mut self.reapplied,
            Kind::Unchanged => &mut self.unchanged,
            Kind::Skipped => &mut self.skipped,
            Kind::Failed => &mut self.failed,
        };
        *counter += 1;
    }

    /// The summary's `key=value` words.
    pub(super) fn summary(&self, started: Instant) -> String {
        let deactivated = self
            .deactivated
            .map_or_else(String::new, |n| format!(" deactivated={n}"));
        format!(
            "created={} reapplied={} unchanged={} skipped={} failed={} entries={}{deactivated} \
             ms={}",
            self.created,
            self.reapplied,
            self.unchanged,
            self.skipped,
            self.failed,
            self.entries,
            started.elapsed().as_millis()
        )
    }
}

/// The `--json` summary: one object on standard output.
#[derive(Serialize)]
pub(super) struct JsonSummary<'a> {
    /// `ok`, `tempfail`, `not_due`, `busy` (another run holds the lock) or `off`.
    pub(super) result: &'a str,
    pub(super) dry_run: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub(super) counts: Option<Counts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    pub(super) ms: u128,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Created,
    Reapplied,
    Unchanged,
    Skipped,
    Failed,
}

impl Kind {
    pub(super) fn word(self) -> &'static str {
        match self {
            Kind::Created => "created",
            Kind::Reapplied => "reapplied",
            Kind::Unchanged => "unchanged",
            Kind::Skipped => "skipped",
            Kind::Failed => "failed",
        }
    }
}

/// What happened to one entry, and the log line it deserves.
pub(super) struct Outcome {
    pub(super) kind: Kind,
    /// The log line's severity and reason; `None`: nothing worth a line (most entries: boxed,
    /// so that the sync's per-address record stays small).
    pub(super) note: Option<Box<(Severity, String)>>,
}

impl Outcome {
    pub(super) fn quiet(kind: Kind) -> Outcome {
        Outcome { kind, note: None }
    }
    pub(super) fn info(kind: Kind, reason: String) -> Outcome {
        Outcome {
            kind,
            note: Some(Box::new((Severity::Info, reason))),
        }
    }
    pub(super) fn warn(kind: Kind, reason: String) -> Outcome {
        Outcome {
            kind,
            note: Some(Box::new((Severity::Warning, reason))),
        }
    }
}

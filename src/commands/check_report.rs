//! The checklist `test-connection` produces: every check with its status, detail and duration,
//! and for `--user` what was found about that login. Text prints each line as the check ends
//! (an admin watching a hanging host sees where it hangs); `--json` prints one object at the
//! end, for monitoring. Both come from the same records, so they cannot disagree.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked: `configuration`, `ldap`, `ldap_bind`, `ldap_base_dn`, `database`,
    /// `template`, `user_address`, `user_entry`, `user_mailbox`, `user_next_login`.
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// Time spent on this check: since the previous check ended (checks run one after another).
    pub duration_ms: f64,
}

/// What `--user` found about one login.
#[derive(Debug, Default, Serialize)]
pub struct UserFindings {
    /// The normalised address (lower case, IDN domain in ASCII), as given when malformed.
    pub address: String,
    pub dn: Option<String>,
    /// The entry's `ldap.attribute_field` values, which select the template.
    pub attribute_values: Vec<String>,
    pub display_name: Option<String>,
    /// The first `attribute_mapping` entry the values match.
    pub mapped_template: Option<String>,
    pub mailbox: Option<MailboxFindings>,
    pub next_login: Option<NextLogin>,
}

#[derive(Debug, Serialize)]
pub struct MailboxFindings {
    pub authsource: String,
    pub active: i64,
    /// `None` when the domain row is missing.
    pub domain_active: Option<i64>,
}

/// What the user's next login would write (nothing is written by the check).
#[derive(Debug, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum NextLogin {
    Create { template: String },
    Reapply { template: String },
    Nothing { reason: String },
    Refused { reason: String },
}

pub struct Report {
    format: Format,
    started: Instant,
    last_check_end: Instant,
    checks: Vec<Check>,
    /// Where each LDAP and mapping setting came from (the file or mailcow's table).
    pub settings: BTreeMap<&'static str, String>,
    pub user: Option<UserFindings>,
}

impl Report {
    pub fn new(format: Format) -> Report {
        let now = Instant::now();
        Report {
            format,
            started: now,
            last_check_end: now,
            checks: Vec::new(),
            settings: BTreeMap::new(),
            user: None,
        }
    }

    /// Records a passed (`ok`) or failed check.
    pub fn check(&mut self, name: &'static str, ok: bool, detail: impl Into<String>) {
        let status = if ok { Status::Ok } else { Status::Fail };
        self.record(name, status, detail.into());
    }

    /// Records something that works but should not stay so (it does not change the exit code).
    pub fn warn(&mut self, name: &'static str, detail: impl Into<String>) {
        self.record(name, Status::Warn, detail.into());
    }

    /// A line of context under the previous check (text only: JSON has it in `user`).
    pub fn info(&self, line: impl AsRef<str>) {
        if self.format == Format::Text {
            println!("      {}", line.as_ref());
        }
    }

    fn record(&mut self, name: &'static str, status: Status, detail: String) {
        let now = Instant::now();
        let duration_ms = millis(now - self.last_check_end);
        self.last_check_end = now;
        if self.format == Format::Text {
            match status {
                Status::Ok => println!("ok    {detail}"),
                Status::Fail => println!("FAIL  {detail}"),
                // Warnings stay on stderr, where every command prints them.
                Status::Warn => eprintln!("warning: {detail}"),
            }
        }
        self.checks.push(Check {
            name,
            status,
            detail,
            duration_ms,
        });
    }

    /// The worst status of all checks (`ok` when there were none).
    fn result(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// Prints the JSON object (with `--json`) and answers the worst status (`exit.rs` maps it).
    pub fn finish(self) -> Status {
        let result = self.result();
        if self.format == Format::Json {
            let object = serde_json::json!({
                "result": result,
                "duration_ms": millis(self.started.elapsed()),
                "checks": self.checks,
                "settings": self.settings,
                "user": self.user,
            });
            println!("{object:#}");
        }
        result
    }
}

/// Milliseconds to the microsecond (JSON readers need no more digits).
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitCode;

    #[test]
    fn the_worst_status_decides_result_and_exit_code() {
        let mut report = Report::new(Format::Json);
        assert_eq!(report.result(), Status::Ok);
        report.check("database", true, "db");
        report.warn("configuration", "w");
        assert_eq!(report.result(), Status::Warn);
        report.check("template", false, "missing");
        assert_eq!(report.result(), Status::Fail);
        assert_eq!(ExitCode::from(report.finish()), ExitCode::TempFail);

        let mut report = Report::new(Format::Json);
        report.warn("configuration", "w");
        assert_eq!(ExitCode::from(report.finish()), ExitCode::Ok);
    }

    #[test]
    fn next_login_serialises_with_its_action() {
        let plan = NextLogin::Create {
            template: "Staff".into(),
        };
        assert_eq!(
            serde_json::to_value(&plan).unwrap(),
            serde_json::json!({"action": "create", "template": "Staff"})
        );
    }
}

//! Logging: syslog (facility mail) and stderr, which Dovecot copies into its own log as errors.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;

use syslog::{Facility, Formatter3164, LoggerBackend};

use crate::config::{LogConfig, StderrLevel};

pub const IDENT: &str = "mailcow-ldap-auth";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

pub struct Logger {
    syslog: Option<Mutex<syslog::Logger<LoggerBackend, Formatter3164>>>,
    stderr: StderrLevel,
}

impl Logger {
    pub fn new(config: &LogConfig) -> Logger {
        let syslog = config
            .syslog
            .then(|| {
                syslog::unix(Formatter3164 {
                    facility: Facility::LOG_MAIL,
                    hostname: None,
                    process: IDENT.into(),
                    pid: std::process::id(),
                })
                .ok()
            })
            .flatten()
            .map(Mutex::new);
        Logger {
            syslog,
            stderr: config.stderr,
        }
    }

    /// For problems found before the configuration could be read.
    pub fn fallback() -> Logger {
        Logger::new(&LogConfig::default())
    }

    pub fn log(&self, severity: Severity, line: &str) {
        if let Some(syslog) = &self.syslog {
            let mut syslog = syslog.lock().unwrap_or_else(|e| e.into_inner());
            // A lost syslog line must not change the answer to Dovecot.
            let _ = match severity {
                Severity::Info => syslog.info(line),
                Severity::Warning => syslog.warning(line),
                Severity::Error => syslog.err(line),
            };
        }
        let to_stderr = match self.stderr {
            StderrLevel::None => false,
            // Dovecot logs every stderr line as an error: only real errors go there.
            StderrLevel::Errors => severity == Severity::Error,
            StderrLevel::All => true,
        };
        if to_stderr {
            let _ = writeln!(std::io::stderr().lock(), "{IDENT}: {line}");
        }
    }
}

/// A value for a `key=value` log field: control characters escaped, so that a hostile login
/// name cannot forge log lines.
pub fn printable(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() || c == '"' || c == '\\' {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A value for an unquoted `key=value` field (`user=`, `service=`, `rip=`): spaces and `=`
/// escaped as well, so that a login name cannot add fields of its own.
pub fn printable_word(value: &str) -> String {
    printable(value).replace(' ', "\\x20").replace('=', "\\x3d")
}

#[cfg(test)]
mod tests {
    use super::{printable, printable_word};

    #[test]
    fn words_cannot_add_fields() {
        assert_eq!(printable_word("x result=ok"), "x\\x20result\\x3dok");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\nb\"c"), "a\\nb\\\"c");
        assert_eq!(printable("jörg@example.org"), "jörg@example.org");
    }
}

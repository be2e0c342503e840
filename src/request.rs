//! One Dovecot request, whatever front end brought it (checkpassword, Lua): read the config,
//! bound the whole request by the deadline, run the login flow or lookup mode, write the one
//! log line. The front ends only read the request and deliver the [`Answer`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::connections::{Connections, Fresh};
use crate::deadline::Deadline;
use crate::exit::ExitCode;
use crate::log::{Logger, Severity, printable, printable_word};
use crate::login::{self, LoginRequest, Refusal, Verdict};
use crate::mailcow::Mailbox;

pub struct Request<'a> {
    /// Bytes as sent; a name that is not UTF-8 matches no mailbox and no LDAP entry.
    pub user: &'a [u8],
    /// Empty in lookup mode.
    pub password: &'a [u8],
    /// Dovecot's service (imap, pop3, lmtp, …), `unknown` when not told.
    pub service: String,
    /// The client's IP for the log line and `sasl_log`, [`UNKNOWN_IP`] when not told.
    pub remote_ip: String,
    /// A userdb lookup (no password, no LDAP), not a password check.
    pub lookup: bool,
}

/// [`Request::remote_ip`] when the front end was not told the client's IP.
pub const UNKNOWN_IP: &str = "-";

/// What a request came to; `exit.rs` maps it to exit codes and Lua results.
#[derive(Debug)]
pub enum Answer {
    /// Login accepted, or lookup found the mailbox; `userdb` holds the configured
    /// `dovecot.userdb_fields` filled in for it.
    Found {
        mailbox: Box<Mailbox>,
        userdb: BTreeMap<String, String>,
    },
    /// Login refused.
    Refused(Refusal),
    /// Lookup: no mailbox that may receive mail.
    Unknown,
    /// LDAP, database, TLS, timeout, deadline or configuration fault.
    Fault,
}

/// The answer and what a front end needs to deliver it.
pub struct Served {
    pub answer: Answer,
    /// Why, as logged (for a front end that can pass it on).
    pub reason: String,
    pub logger: Arc<Logger>,
    /// Keeps the deadline enforced while the front end delivers the answer.
    _watchdog: Watchdog,
}

/// Runs one request; `watchdog` was started when the front end began reading it.
pub fn serve(config_path: &Path, request: &Request, watchdog: Watchdog) -> Served {
    let started = watchdog.started;
    let report = Arc::new(RequestLog::new(request, started));
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            let logger = Arc::new(Logger::fallback());
            let reason = e.to_string();
            logger.log(Severity::Error, &report.line("tempfail", &reason));
            return Served {
                answer: Answer::Fault,
                reason,
                logger,
                _watchdog: watchdog,
            };
        }
    };
    let logger = Arc::new(Logger::new(&config.log));
    let deadline = Deadline::starting_at(started, config.deadline);
    watchdog.arm(Armed {
        deadline,
        budget_ms: config.deadline.as_millis(),
        logger: logger.clone(),
        report: report.clone(),
    });
    for warning in &config.warnings {
        logger.log(Severity::Warning, warning);
    }

    let (answer, reason) = answer_logged(
        &config,
        &mut Fresh::new(&config),
        &logger,
        request,
        &report,
        &deadline,
    );
    Served {
        answer,
        reason,
        logger,
        _watchdog: watchdog,
    }
}

/// Answers `request` on `connections` and writes its log line.
pub(crate) fn answer_logged(
    config: &Config,
    connections: &mut dyn Connections,
    logger: &Logger,
    request: &Request,
    report: &RequestLog,
    deadline: &Deadline,
) -> (Answer, String) {
    let (answer, reason) = answer(config, connections, request, deadline);
    log_answer(logger, request, report, &answer, &reason);
    (answer, reason)
}

/// Writes the log line of an answer.
pub(crate) fn log_answer(
    logger: &Logger,
    request: &Request,
    report: &RequestLog,
    answer: &Answer,
    reason: &str,
) {
    let code = ExitCode::of(answer);
    let severity = if matches!(answer, Answer::Fault) {
        Severity::Error
    } else {
        Severity::Info
    };
    logger.log(
        severity,
        &report.line(code.log_word(request.lookup), reason),
    );
}

fn answer(
    config: &Config,
    connections: &mut dyn Connections,
    request: &Request,
    deadline: &Deadline,
) -> (Answer, String) {
    let (Ok(user), Ok(password)) = (
        std::str::from_utf8(request.user),
        std::str::from_utf8(request.password),
    ) else {
        let answer = if request.lookup {
            Answer::Unknown
        } else {
            Answer::Refused(Refusal::NotUtf8)
        };
        return (answer, "login name or password is not UTF-8".to_owned());
    };
    if request.lookup {
        return match login::lookup(connections, user, deadline) {
            Ok(Some(mailbox)) => found(config, Box::new(mailbox), "ok".to_owned(), true),
            Ok(None) => (
                Answer::Unknown,
                "no mailbox that may receive mail".to_owned(),
            ),
            Err(e) => (Answer::Fault, e.to_string()),
        };
    }
    let login = LoginRequest {
        username: user,
        password,
        service: &request.service,
        remote_ip: (request.remote_ip != UNKNOWN_IP).then_some(request.remote_ip.as_str()),
    };
    match login::authenticate_with(connections, config, &login, deadline) {
        Ok(Verdict::Accepted { mailbox, note, .. }) => found(config, mailbox, note, false),
        Ok(Verdict::Refused(refusal)) => {
            let reason = refusal.to_string();
            (Answer::Refused(refusal), reason)
        }
        Err(e) => (Answer::Fault, e.to_string()),
    }
}

/// The answer for a mailbox that may log in or receive mail, with its userdb fields; a mailbox
/// whose name cannot go into them safely is refused like any other that may not log in.
pub(crate) fn found(
    config: &Config,
    mailbox: Box<Mailbox>,
    note: String,
    lookup: bool,
) -> (Answer, String) {
    match config.dovecot.expand_userdb_fields(
        &mailbox.username,
        &mailbox.local_part,
        &mailbox.domain,
    ) {
        Ok(userdb) => (Answer::Found { mailbox, userdb }, note),
        Err(why) if lookup => (Answer::Unknown, why),
        Err(why) => (
            Answer::Refused(Refusal::UnsafeUserdbField(why.clone())),
            why,
        ),
    }
}

/// The one log line every request ends with.
pub(crate) struct RequestLog {
    user: String,
    service: String,
    remote_ip: String,
    lookup: bool,
    started: Instant,
}

impl RequestLog {
    pub(crate) fn new(request: &Request, started: Instant) -> RequestLog {
        RequestLog {
            user: String::from_utf8_lossy(request.user).into_owned(),
            service: request.service.clone(),
            remote_ip: request.remote_ip.clone(),
            lookup: request.lookup,
            started,
        }
    }

    fn line(&self, result: &str, reason: &str) -> String {
        let kind = if self.lookup { "lookup" } else { "login" };
        let rip = if self.lookup {
            String::new()
        } else {
            format!(" rip={}", printable_word(&self.remote_ip))
        };
        format!(
            "{kind} user={} service={}{rip} result={result} reason=\"{}\" ms={}",
            printable_word(&self.user),
            printable_word(&self.service),
            printable(reason),
            self.started.elapsed().as_millis()
        )
    }
}

/// Dovecot waits forever for a checkpassword child and gives a Lua auth-worker request 60 s:
/// past the deadline the watchdog answers "try later" itself (exit 111). A front end starts
/// it first thing, so that reading the request is bounded too.
pub struct Watchdog {
    armer: mpsc::Sender<Armed>,
    started: Instant,
}

/// What the watchdog needs once the configuration is known.
struct Armed {
    deadline: Deadline,
    budget_ms: u128,
    logger: Arc<Logger>,
    report: Arc<RequestLog>,
}

impl Watchdog {
    /// Starts before the request and the configuration are read: should reading them, or
    /// logging why that failed, block for the default deadline, the process ends with 111
    /// all the same. `front_end` and `request` name them in that case's log line.
    pub fn start(front_end: &'static str, request: &'static str) -> Watchdog {
        let started = Instant::now();
        let (tx, rx) = mpsc::channel::<Armed>();
        std::thread::spawn(move || {
            let unarmed = Deadline::starting_at(started, crate::config::DEFAULT_DEADLINE);
            let armed =
                match rx.recv_timeout(unarmed.end().saturating_duration_since(Instant::now())) {
                    Ok(armed) => armed,
                    // Never armed (the configuration could not be read): the default deadline
                    // still holds while the front end delivers its answer.
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(unarmed.end().saturating_duration_since(Instant::now()));
                        hard_exit();
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => exit_logged(
                        &Logger::fallback(),
                        &format!(
                            "{front_end} result=tempfail reason=\"deadline of {} ms exceeded \
                             before {request} and the configuration were read\"",
                            crate::config::DEFAULT_DEADLINE.as_millis()
                        ),
                    ),
                };
            std::thread::sleep(
                armed
                    .deadline
                    .end()
                    .saturating_duration_since(Instant::now()),
            );
            let reason = format!("deadline of {} ms exceeded", armed.budget_ms);
            exit_logged(&armed.logger, &armed.report.line("tempfail", &reason));
        });
        Watchdog { armer: tx, started }
    }

    fn arm(&self, armed: Armed) {
        // The watchdog thread only goes away by ending the process.
        let _ = self.armer.send(armed);
    }
}

/// Logs `line`, then exits 111. The line may block (a full stderr pipe, a stalled syslog, or the
/// main thread holding the logger while blocked there): it gets a moment, then the answer stands.
fn exit_logged(logger: &Logger, line: &str) -> ! {
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(200));
        hard_exit();
    });
    logger.log(Severity::Error, line);
    ExitCode::of(&Answer::Fault).exit();
}

/// Exit 111 at once, without exit handlers or buffer flushes that could block too.
fn hard_exit() -> ! {
    // SAFETY: _exit only ends the process.
    unsafe { libc::_exit(ExitCode::of(&Answer::Fault) as i32) }
}

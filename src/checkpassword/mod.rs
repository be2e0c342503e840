//! The Dovecot checkpassword front end: a thin adapter around [`crate::login`].

pub mod input;
pub mod reply;

use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::deadline::Deadline;
use crate::exit::ExitCode;
use crate::log::{Logger, Severity, printable, printable_word};
use crate::login::{self, LoginRequest, Outcome};

/// What Dovecot tells us about the request through the environment.
struct RequestEnv {
    service: String,
    remote_ip: String,
    /// `AUTHORIZED=1`: a userdb or credentials lookup, not a password check.
    lookup: bool,
}

impl RequestEnv {
    fn from_env() -> RequestEnv {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        RequestEnv {
            service: var("SERVICE").unwrap_or_else(|| "unknown".into()),
            remote_ip: var("TCPREMOTEIP")
                .or_else(|| var("REMOTE_IP"))
                .unwrap_or_else(|| "-".into()),
            lookup: var("AUTHORIZED").as_deref() == Some("1"),
        }
    }
}

/// The one log line every request ends with.
struct Report {
    user: String,
    service: String,
    remote_ip: String,
    lookup: bool,
    started: Instant,
}

impl Report {
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

/// Runs one checkpassword request; returns only when not exec'ing the reply program.
pub fn run(config_path: &Path, reply_program: &[OsString]) -> ExitCode {
    let started = Instant::now();
    let misuse = |e: input::InputError| {
        eprintln!("{}: {e}", crate::log::IDENT);
        ExitCode::Misuse
    };
    // First thing: nothing may open a file before fd 3 is taken.
    let fd3 = match input::take_fd3() {
        Ok(fd3) => fd3,
        Err(e) => return misuse(e),
    };
    // Before the read: a writer that never closes fd 3 must not hang the process.
    let watchdog = Watchdog::start(started);
    let credentials = match input::read_request(fd3) {
        Ok(c) => c,
        Err(e) => return misuse(e),
    };
    let env = RequestEnv::from_env();
    let report = Arc::new(Report {
        user: String::from_utf8_lossy(credentials.user()).into_owned(),
        service: env.service.clone(),
        remote_ip: env.remote_ip,
        lookup: env.lookup,
        started,
    });
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            Logger::fallback().log(Severity::Error, &report.line("tempfail", &e.to_string()));
            return ExitCode::TempFail;
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

    let (user, password) = match (
        std::str::from_utf8(credentials.user()),
        std::str::from_utf8(credentials.password()),
    ) {
        (Ok(u), Ok(p)) => (u, p),
        _ => {
            let code = if env.lookup {
                ExitCode::UnknownUser
            } else {
                ExitCode::Rejected
            };
            logger.log(
                Severity::Info,
                &report.line(
                    result_word(code, env.lookup),
                    "login name or password is not UTF-8",
                ),
            );
            return code;
        }
    };

    let (code, mailbox, reason) = if env.lookup {
        match login::lookup(&config, user, &deadline) {
            Ok(Some(mailbox)) => (ExitCode::Ok, Some(Box::new(mailbox)), "ok".to_owned()),
            Ok(None) => (
                ExitCode::UnknownUser,
                None,
                "no mailbox that may receive mail".to_owned(),
            ),
            Err(e) => (ExitCode::TempFail, None, e.to_string()),
        }
    } else {
        let request = LoginRequest {
            username: user,
            password,
            service: &env.service,
        };
        let result = login::authenticate(&config, &request, &deadline);
        let code = ExitCode::of_login(&result);
        match result {
            Ok(Outcome::Accepted { mailbox, note }) => (code, Some(mailbox), note),
            Ok(Outcome::Rejected(refusal)) => (code, None, refusal.to_string()),
            Err(e) => (code, None, e.to_string()),
        }
    };
    drop(credentials);
    // The answer carries the userdb fields: a mailbox whose name cannot go into them safely
    // is refused like any other mailbox that may not log in.
    let (code, answer, reason) = match mailbox {
        Some(mailbox) => match reply::userdb_fields(&mailbox, &config.dovecot) {
            Ok(fields) => (code, Some((mailbox, fields)), reason),
            Err(why) if env.lookup => (ExitCode::UnknownUser, None, why),
            Err(why) => (ExitCode::Rejected, None, why),
        },
        None => (code, None, reason),
    };

    let severity = if code == ExitCode::TempFail {
        Severity::Error
    } else {
        Severity::Info
    };
    logger.log(
        severity,
        &report.line(result_word(code, env.lookup), &reason),
    );
    match answer {
        Some((mailbox, fields)) => {
            let error = reply::exec(reply_program, &mailbox, &fields, env.lookup);
            logger.log(
                Severity::Error,
                &format!(
                    "cannot run the reply program {:?}: {error}",
                    reply_program[0]
                ),
            );
            ExitCode::TempFail
        }
        None => code,
    }
}

fn result_word(code: ExitCode, lookup: bool) -> &'static str {
    match (code, lookup) {
        (ExitCode::Ok, false) => "ok",
        (ExitCode::Ok, true) => "found",
        (ExitCode::UnknownUser, _) => "unknown",
        (ExitCode::TempFail, _) => "tempfail",
        _ => "rejected",
    }
}

/// Dovecot waits forever for a checkpassword child and never kills it: past the deadline the
/// watchdog answers "try later" itself.
struct Watchdog(mpsc::Sender<Armed>);

/// What the watchdog needs once the configuration is known.
struct Armed {
    deadline: Deadline,
    budget_ms: u128,
    logger: Arc<Logger>,
    report: Arc<Report>,
}

impl Watchdog {
    /// Starts before fd 3 and the configuration are read: should reading them, or logging
    /// why that failed, block for the default deadline, the process ends with 111 all the same.
    fn start(started: Instant) -> Watchdog {
        let (tx, rx) = mpsc::channel::<Armed>();
        std::thread::spawn(move || {
            let unarmed = Deadline::starting_at(started, crate::config::DEFAULT_DEADLINE);
            let wait = unarmed.end().saturating_duration_since(Instant::now());
            let armed = match rx.recv_timeout(wait) {
                Ok(armed) => armed,
                // The request ended before the configuration was read (misuse, a broken
                // configuration): the main thread answers.
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
                Err(mpsc::RecvTimeoutError::Timeout) => exit_logged(
                    &Logger::fallback(),
                    &format!(
                        "checkpassword result=tempfail reason=\"deadline of {} ms exceeded \
                         before the request on fd 3 and the configuration were read\"",
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
        Watchdog(tx)
    }

    fn arm(&self, armed: Armed) {
        // The watchdog thread only goes away by ending the process.
        let _ = self.0.send(armed);
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
    ExitCode::TempFail.exit();
}

/// Exit 111 at once, without exit handlers or buffer flushes that could block too.
fn hard_exit() -> ! {
    // SAFETY: _exit only ends the process.
    unsafe { libc::_exit(ExitCode::TempFail as i32) }
}

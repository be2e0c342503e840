//! The Dovecot checkpassword front end (Dovecot 2.3): fd 3 and the environment in, exit code or
//! the reply program out; the request itself is [`crate::request`]'s.

pub mod input;
pub(crate) mod reply;

use std::ffi::OsString;
use std::path::Path;

use crate::exit::ExitCode;
use crate::log::Severity;
use crate::request::{self, Answer, Request, Watchdog};

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
                .unwrap_or_else(|| request::UNKNOWN_IP.into()),
            lookup: var("AUTHORIZED").as_deref() == Some("1"),
        }
    }
}

/// Runs one checkpassword request; returns only when not exec'ing the reply program.
pub(crate) fn run(config_path: &Path, reply_program: &[OsString]) -> ExitCode {
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
    let watchdog = Watchdog::start("checkpassword", "the request on fd 3");
    let credentials = match input::read_request(fd3) {
        Ok(c) => c,
        Err(e) => return misuse(e),
    };
    let env = RequestEnv::from_env();
    let served = request::serve(
        config_path,
        &Request {
            user: credentials.user(),
            password: credentials.password(),
            service: env.service,
            remote_ip: env.remote_ip,
            lookup: env.lookup,
        },
        watchdog,
    );
    drop(credentials);

    match &served.answer {
        Answer::Found { mailbox, userdb } => {
            let error = reply::exec(reply_program, mailbox, userdb, env.lookup);
            served.logger.log(
                Severity::Error,
                &format!(
                    "cannot run the reply program {:?}: {error}",
                    reply_program[0]
                ),
            );
            ExitCode::of(&Answer::Fault)
        }
        answer => ExitCode::of(answer),
    }
}

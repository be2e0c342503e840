//! `login`: one login from a shell through the same flow Dovecot's logins take.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use zeroize::Zeroizing;

use crate::deadline::Deadline;
use crate::exit::ExitCode;
use crate::login::{self, LoginRequest, Verdict};
use crate::request::{self, Answer};

pub fn run(config_path: &Path, user: &str, service: &str, dry_run: bool) -> ExitCode {
    let Some(config) = super::load_config(config_path) else {
        return ExitCode::of(&Answer::Fault);
    };
    let password = match read_password(user) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot read the password: {e}");
            return ExitCode::Misuse;
        }
    };
    let deadline = Deadline::after(config.deadline);
    let request = LoginRequest {
        username: user,
        password: &password,
        service,
        // Not a client's login: no sasl_log row.
        remote_ip: None,
    };
    let outcome = if dry_run {
        let (outcome, steps) = login::dry_run(&config, &request, &deadline);
        for step in steps {
            println!("dry-run: {step}");
        }
        outcome
    } else {
        login::authenticate(&config, &request, &deadline)
    };
    let (answer, line) = match outcome {
        Ok(Verdict::Accepted { mailbox, note, .. }) => {
            let (answer, reason) = request::found(&config, mailbox, note, false);
            let line = match &answer {
                Answer::Found { mailbox, .. } => format!("ok: {} ({reason})", mailbox.username),
                _ => format!("rejected: {reason}"),
            };
            (answer, line)
        }
        Ok(Verdict::Refused(refusal)) => {
            let line = format!("rejected: {refusal}");
            (Answer::Refused(refusal), line)
        }
        Err(e) => (Answer::Fault, format!("tempfail: {e}")),
    };
    if dry_run {
        println!("dry-run: nothing written; the login would answer {line}");
    } else {
        println!("{line}");
    }
    ExitCode::of(&answer)
}

/// From a terminal without echo, else the first line of standard input.
fn read_password(user: &str) -> std::io::Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("password for {user}: ")).map(Zeroizing::new);
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let len = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(len);
    Ok(line)
}

//! Exit codes, and the one place that decides which one an answer gets.

use crate::login::{LoginError, Outcome};

/// The checkpassword exit codes as Dovecot 2.3 reads them (and the `login` command reuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Authenticated (normally reached through the reply program).
    Ok = 0,
    /// Wrong password, unknown user or refused login.
    Rejected = 1,
    /// The program was called wrongly (fd 3 missing or malformed).
    Misuse = 2,
    /// Lookup mode: no such user.
    UnknownUser = 3,
    /// LDAP, database, TLS, timeout or configuration fault: try again later.
    TempFail = 111,
}

impl ExitCode {
    pub fn of_login(result: &Result<Outcome, LoginError>) -> ExitCode {
        match result {
            Ok(Outcome::Accepted { .. }) => ExitCode::Ok,
            Ok(Outcome::Rejected(_)) => ExitCode::Rejected,
            Err(_) => ExitCode::TempFail,
        }
    }

    pub fn exit(self) -> ! {
        std::process::exit(self as i32)
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

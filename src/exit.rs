//! Exit codes, Lua results and `serve`'s JSON results: the one place that maps an answer (and
//! every command's typed result) to what Dovecot, a timer or a shell is told.

use crate::commands::authsource::AuthsourceResult;
use crate::commands::check_report::Status;
use crate::login::Refusal;
use crate::request::Answer;
use crate::serve::ServeResult;
use crate::sync::SyncResult;

/// The checkpassword exit codes as Dovecot 2.3 reads them (the `login` and `dovecot-lua`
/// commands reuse them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitCode {
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
    pub(crate) fn of(answer: &Answer) -> ExitCode {
        match answer {
            Answer::Found { .. } => ExitCode::Ok,
            Answer::Refused(_) => ExitCode::Rejected,
            Answer::Unknown => ExitCode::UnknownUser,
            Answer::Fault => ExitCode::TempFail,
        }
    }

    /// The `result=` word of a request's log line.
    pub(crate) fn log_word(self, lookup: bool) -> &'static str {
        match (self, lookup) {
            (ExitCode::Ok, false) => "ok",
            (ExitCode::Ok, true) => "found",
            (ExitCode::UnknownUser, _) => "unknown",
            (ExitCode::TempFail, _) => "tempfail",
            _ => "rejected",
        }
    }

    pub(crate) fn exit(self) -> ! {
        std::process::exit(self as i32)
    }
}

/// `sync` run by a timer: only a fault is worth a failed unit; off, not due and busy are not.
impl From<SyncResult> for ExitCode {
    fn from(result: SyncResult) -> Self {
        match result {
            SyncResult::Completed | SyncResult::Off | SyncResult::NotDue | SyncResult::Busy => {
                ExitCode::Ok
            }
            SyncResult::Fault => ExitCode::TempFail,
        }
    }
}

impl From<AuthsourceResult> for ExitCode {
    fn from(result: AuthsourceResult) -> Self {
        match result {
            AuthsourceResult::AllDone => ExitCode::Ok,
            AuthsourceResult::SomeRefused => ExitCode::Rejected,
            AuthsourceResult::Fault => ExitCode::TempFail,
        }
    }
}

/// `test-connection`: warnings pass, a failed check is a fault.
impl From<Status> for ExitCode {
    fn from(status: Status) -> Self {
        match status {
            Status::Ok | Status::Warn => ExitCode::Ok,
            Status::Fail => ExitCode::TempFail,
        }
    }
}

impl From<ServeResult> for ExitCode {
    fn from(result: ServeResult) -> Self {
        match result {
            ServeResult::Stopped => ExitCode::Ok,
            ServeResult::NotStarted => ExitCode::TempFail,
        }
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}

/// The result a Lua passdb/userdb returns, as the word `dovecot-lua` replies with; the script
/// turns `WORD` into `dovecot.auth.PASSDB_RESULT_WORD` (or `USERDB_RESULT_WORD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LuaResult {
    Ok,
    PasswordMismatch,
    UserUnknown,
    UserDisabled,
    /// Not ours to answer: the next passdb decides.
    Next,
    InternalFailure,
}

impl LuaResult {
    pub(crate) fn of(answer: &Answer) -> LuaResult {
        match answer {
            Answer::Found { .. } => LuaResult::Ok,
            Answer::Unknown => LuaResult::UserUnknown,
            Answer::Fault => LuaResult::InternalFailure,
            Answer::Refused(refusal) => match refusal {
                Refusal::EmptyPassword
                | Refusal::NulInPassword
                | Refusal::NotUtf8
                | Refusal::WrongPassword(_) => LuaResult::PasswordMismatch,
                Refusal::MalformedLogin
                | Refusal::NoLdapEntry
                | Refusal::Ambiguous(_)
                | Refusal::ProvisioningOff
                | Refusal::NoMapping(_)
                | Refusal::MailboxVanished => LuaResult::UserUnknown,
                // The mailbox exists (or the template/domain forbid it): it may not log in.
                Refusal::Resource
                | Refusal::MailboxInactive
                | Refusal::DomainInactive
                | Refusal::ServiceDisabled(_)
                | Refusal::Provisioning(_)
                | Refusal::UnsafeUserdbField(_) => LuaResult::UserDisabled,
                Refusal::NotLdapBacked(_) => LuaResult::Next,
            },
        }
    }

    pub(crate) fn word(self) -> &'static str {
        match self {
            LuaResult::Ok => "OK",
            LuaResult::PasswordMismatch => "PASSWORD_MISMATCH",
            LuaResult::UserUnknown => "USER_UNKNOWN",
            LuaResult::UserDisabled => "USER_DISABLED",
            LuaResult::Next => "NEXT",
            LuaResult::InternalFailure => "INTERNAL_FAILURE",
        }
    }

    /// The `result` of `serve`'s JSON answer (the script maps it back to the Lua result).
    pub(crate) fn json_word(self) -> &'static str {
        match self {
            LuaResult::Ok => "ok",
            LuaResult::PasswordMismatch => "mismatch",
            LuaResult::UserUnknown => "unknown",
            LuaResult::UserDisabled => "disabled",
            LuaResult::Next => "next",
            LuaResult::InternalFailure => "tempfail",
        }
    }
}

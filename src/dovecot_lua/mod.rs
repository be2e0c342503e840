//! The front end Dovecot's Lua passdb/userdb runs (`contrib/dovecot/lua/mailcow-ldap-auth.lua`,
//! Dovecot 2.3 and 2.4): the login name and request fields as arguments, the password on
//! standard input, the answer as a [`reply`] written to a file the script created.

pub(crate) mod reply;

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::exit::ExitCode;
use crate::log::Severity;
use crate::request::{self, Answer, Request, Watchdog};
use crate::userdb::DovecotVersion;

/// A password longer than this is refused as misuse (exit 2) rather than read on forever.
pub(crate) const MAX_PASSWORD: usize = 4096;

#[derive(Debug, clap::Subcommand)]
pub enum Mode {
    /// Check a password (passdb): the password is read from standard input up to its end,
    /// byte for byte (no newline is stripped).
    Verify(Args),
    /// Look a mailbox up without a password (userdb): no LDAP traffic.
    Lookup(Args),
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The login name as Dovecot passes it.
    pub user: OsString,
    /// Dovecot's service or protocol (imap, pop3, lmtp, …).
    #[arg(long, default_value = "unknown")]
    pub service: String,
    /// The client's IP (the log line, and `sasl_log` on success).
    #[arg(long, default_value = crate::request::UNKNOWN_IP)]
    pub remote_ip: String,
    /// The Dovecot that reads the reply: selects the userdb field names (quota).
    #[arg(long, value_enum)]
    pub dovecot: DovecotVersion,
    /// An existing file (the script's `os.tmpname()`) the reply is written to; standard
    /// output when not given. The file is never created.
    #[arg(long, value_name = "PATH")]
    pub reply_file: Option<PathBuf>,
}

pub(crate) fn run(config_path: &Path, mode: &Mode) -> ExitCode {
    let watchdog = Watchdog::start("dovecot-lua", "the password on standard input");
    let (args, lookup) = match mode {
        Mode::Verify(args) => (args, false),
        Mode::Lookup(args) => (args, true),
    };
    let password = if lookup {
        Zeroizing::new(Vec::new())
    } else {
        match read_password() {
            Ok(p) => p,
            Err(e) => {
                eprintln!(
                    "{}: cannot read the password from standard input: {e}",
                    crate::log::IDENT
                );
                return ExitCode::Misuse;
            }
        }
    };
    let served = request::serve(
        config_path,
        &Request {
            user: args.user.as_bytes(),
            password: &password,
            service: args.service.clone(),
            remote_ip: args.remote_ip.clone(),
            lookup,
        },
        watchdog,
    );
    drop(password);

    let text = reply::render(&served.answer, &served.reason, args.dovecot, lookup);
    let delivered = text.and_then(|text| reply::deliver(args.reply_file.as_deref(), &text));
    match delivered {
        Ok(()) => ExitCode::of(&served.answer),
        Err(e) => {
            served.logger.log(
                Severity::Error,
                &format!("cannot reply to Dovecot's Lua: {e}"),
            );
            ExitCode::of(&Answer::Fault)
        }
    }
}

/// Standard input to its end, in a buffer wiped on drop.
fn read_password() -> std::io::Result<Zeroizing<Vec<u8>>> {
    // Room for all of it up front: a growing Vec would leave unwiped copies behind.
    let mut buffer = Zeroizing::new(Vec::with_capacity(MAX_PASSWORD + 1));
    std::io::stdin()
        .lock()
        .take(MAX_PASSWORD as u64 + 1)
        .read_to_end(&mut buffer)?;
    if buffer.len() > MAX_PASSWORD {
        return Err(std::io::Error::other(format!(
            "longer than {MAX_PASSWORD} bytes"
        )));
    }
    Ok(buffer)
}

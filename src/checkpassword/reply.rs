//! The success answer: export `USER`, `EXTRA` and the userdb fields, then exec the reply program.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::mailcow::Mailbox;
use crate::userdb::{self, DovecotVersion};

/// Replaces this process with the reply program; returns only if the exec failed.
/// In lookup mode `AUTHORIZED=2` tells checkpassword-reply to answer "found" (exit 2).
pub fn exec(
    program: &[OsString],
    mailbox: &Mailbox,
    configured: &BTreeMap<String, String>,
    lookup: bool,
) -> io::Error {
    // checkpassword exists only up to Dovecot 2.3.
    let fields: Vec<(String, String)> = userdb::fields(mailbox, configured, DovecotVersion::V2_3)
        .into_iter()
        .map(|(name, value)| (format!("userdb_{name}"), value))
        .collect();
    let extra = fields
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = Command::new(&program[0]);
    command
        .args(&program[1..])
        .env("USER", mailbox.username.to_lowercase())
        .env("EXTRA", extra)
        .envs(fields);
    if lookup {
        command.env("AUTHORIZED", "2");
    }
    command.exec()
}

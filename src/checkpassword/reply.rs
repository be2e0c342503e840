//! The success answer: export `USER`, `EXTRA` and the userdb fields, then exec the reply program.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::config::DovecotConfig;
use crate::mailcow::Mailbox;

/// `userdb_*` variables for Dovecot, in the order they are exported; an error when a field
/// cannot hold this mailbox's name safely (see [`DovecotConfig::expand_userdb_fields`]).
pub fn userdb_fields(
    mailbox: &Mailbox,
    dovecot: &DovecotConfig,
) -> Result<BTreeMap<String, String>, String> {
    let mut fields = BTreeMap::new();
    if mailbox.quota > 0 {
        fields.insert(
            "userdb_quota_rule".to_owned(),
            format!("*:bytes={}", mailbox.quota),
        );
    }
    let configured =
        dovecot.expand_userdb_fields(&mailbox.username, &mailbox.local_part, &mailbox.domain)?;
    for (name, value) in configured {
        fields.insert(format!("userdb_{name}"), value);
    }
    Ok(fields)
}

/// Replaces this process with the reply program; returns only if the exec failed.
/// In lookup mode `AUTHORIZED=2` tells checkpassword-reply to answer "found" (exit 2).
pub fn exec(
    program: &[OsString],
    mailbox: &Mailbox,
    fields: &BTreeMap<String, String>,
    lookup: bool,
) -> io::Error {
    let extra = fields.keys().cloned().collect::<Vec<_>>().join(" ");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_substitute_placeholders_and_add_quota() {
        let mailbox = Mailbox {
            username: "bob@example.org".into(),
            name: String::new(),
            quota: 1024,
            local_part: "bob".into(),
            domain: "example.org".into(),
            attributes: Default::default(),
            kind: String::new(),
            authsource: Some("ldap".into()),
            active: 1,
            domain_active: Some(1),
        };
        let mut dovecot = DovecotConfig::default();
        dovecot
            .userdb_fields
            .insert("home".into(), "/var/vmail/{domain}/{local_part}".into());
        dovecot.userdb_fields.insert("uid".into(), "5000".into());
        let fields = userdb_fields(&mailbox, &dovecot).unwrap();
        assert_eq!(fields["userdb_home"], "/var/vmail/example.org/bob");
        assert_eq!(fields["userdb_uid"], "5000");
        assert_eq!(fields["userdb_quota_rule"], "*:bytes=1024");
        let unlimited = Mailbox {
            quota: 0,
            ..mailbox
        };
        assert!(
            !userdb_fields(&unlimited, &dovecot)
                .unwrap()
                .contains_key("userdb_quota_rule")
        );
    }
}

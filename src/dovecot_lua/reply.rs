//! The reply the Lua script parses: the result word on the first line, then `key=value` lines
//! (the key is everything before the first `=`; the value, the rest of the line, may hold
//! spaces, `=` and any UTF-8). A line break or NUL in a value is refused, never passed on.
//!
//! ```text
//! OK                                  USER_DISABLED
//! user=alice@example.org              reason=service pop3 disabled for this mailbox
//! userdb_home=/var/vmail/example.org/alice
//! userdb_quota_storage_size=1073741824
//! ```
//!
//! After a password check the userdb fields carry the `userdb_` prefix (for `userdb
//! prefetch`); after a lookup they come bare. Only `OK` carries fields; the other words may
//! carry a `reason`, already made printable for the log.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::exit::LuaResult;
use crate::log::printable;
use crate::request::Answer;
use crate::userdb::{self, DovecotVersion};

pub fn render(
    answer: &Answer,
    reason: &str,
    version: DovecotVersion,
    lookup: bool,
) -> io::Result<String> {
    let mut lines = vec![LuaResult::of(answer).word().to_owned()];
    match answer {
        Answer::Found { mailbox, userdb } => {
            let prefix = if lookup { "" } else { "userdb_" };
            lines.push(line("user", &mailbox.username)?);
            for (name, value) in userdb::fields(mailbox, userdb, version) {
                lines.push(line(&format!("{prefix}{name}"), &value)?);
            }
        }
        _ => lines.push(line("reason", &printable(reason))?),
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(text)
}

fn line(key: &str, value: &str) -> io::Result<String> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(io::Error::other(format!(
            "the value of {key} holds a line break or NUL"
        )));
    }
    Ok(format!("{key}={value}"))
}

/// Into the existing reply file (never created, never through a symlink), or to stdout.
pub fn deliver(path: Option<&Path>, text: &str) -> io::Result<()> {
    match path {
        Some(path) => {
            let mut file = OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            file.write_all(text.as_bytes())
        }
        None => {
            let mut out = io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::Refusal;
    use std::collections::BTreeMap;

    fn found(quota: u64, home: &str) -> Answer {
        Answer::Found {
            mailbox: Box::new(crate::userdb::tests::mailbox("alice", quota)),
            userdb: BTreeMap::from([("home".to_owned(), home.to_owned())]),
        }
    }

    #[test]
    fn passdb_reply_prefixes_userdb_fields() {
        let text = render(
            &found(1024, "/m/alice x=ü"),
            "ok",
            DovecotVersion::V2_4,
            false,
        )
        .unwrap();
        assert_eq!(
            text,
            "OK\nuser=alice@example.org\nuserdb_home=/m/alice x=ü\nuserdb_quota_storage_size=1024\n"
        );
    }

    #[test]
    fn lookup_reply_has_bare_fields() {
        let text = render(&found(0, "/m"), "ok", DovecotVersion::V2_3, true).unwrap();
        assert_eq!(text, "OK\nuser=alice@example.org\nhome=/m\n");
    }

    #[test]
    fn refusal_carries_a_printable_reason() {
        let refusal = Refusal::WrongPassword(" (server: a\nb)".into());
        let reason = refusal.to_string();
        let text = render(
            &Answer::Refused(refusal),
            &reason,
            DovecotVersion::V2_3,
            false,
        )
        .unwrap();
        assert_eq!(
            text,
            "PASSWORD_MISMATCH\nreason=wrong password (server: a\\nb)\n"
        );
    }

    #[test]
    fn a_line_break_in_a_value_is_refused() {
        let result = render(&found(0, "/m/al\nice"), "ok", DovecotVersion::V2_3, false);
        assert!(result.is_err());
    }
}

//! The `dovecot-lua` subcommand (what contrib/dovecot/lua/mailcow-ldap-auth.lua runs), driven
//! directly: the reply format, the result words, the reply file, and refusals of odd input.
//! The real binary against a throwaway slapd and MariaDB.
mod common;

use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PW: &str = "Alice-Pw-1 ä=*()\\ \"'$(x)`x` %u";

fn alice_env() -> TestEnv {
    common::alice_env(PW)
}

/// A reply file as the script makes it (mkstemp: empty, 0600).
fn reply_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in(common::process::scratch()).expect("temp dir");
    let path = dir.path().join("reply");
    std::fs::write(&path, "").expect("create reply file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (dir, path)
}

/// `dovecot-lua MODE --service S --remote-ip 192.0.2.10 --dovecot V --reply-file F -- USER`.
fn lua(env: &TestEnv, mode: &str, user: &str, service: &str, version: &str, reply: &Path) -> Run {
    let reply = reply.to_str().expect("utf-8 path");
    Run::subcommand(
        &env.cfg,
        &[
            "dovecot-lua",
            mode,
            "--service",
            service,
            "--remote-ip",
            "192.0.2.10",
            "--dovecot",
            version,
            "--reply-file",
            reply,
            "--",
            user,
        ],
    )
}

/// The reply: the result word and the key=value lines, in order.
fn read_reply(path: &Path) -> (String, Vec<(String, String)>) {
    let text = std::fs::read_to_string(path).expect("read reply");
    assert!(
        text.ends_with('\n'),
        "reply not newline-terminated: {text:?}"
    );
    let mut lines = text.lines();
    let word = lines.next().expect("result word").to_string();
    let fields = lines
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not key=value: {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect();
    (word, fields)
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[track_caller]
fn assert_no_ldap_traffic(bh: &BlackHole, out: &Outcome) {
    assert_eq!(bh.connections(), 0, "LDAP contacted:\n{out}");
}

#[test]
fn verify_ok_replies_user_and_prefixed_userdb_fields_per_dovecot_version() {
    let mut env = alice_env();
    env.cfg["dovecot"]["userdb_fields"]["mail"] = json!("maildir:~/M x=y ü");
    let (_dir, path) = reply_file();
    for (version, quota) in [
        ("2.3", ("userdb_quota_rule", "*:bytes=1073741824")),
        ("2.4", ("userdb_quota_storage_size", "1073741824")),
    ] {
        let out = lua(&env, "verify", "Alice@Example.org", "imap", version, &path)
            .stdin(PW.as_bytes())
            .run();
        out.assert_code(0).assert_never_printed(PW);
        assert!(out.stdout.is_empty(), "{out}");
        let (word, fields) = read_reply(&path);
        assert_eq!(word, "OK", "{out}");
        let mut want = pairs(&[
            ("user", "alice@example.org"),
            ("userdb_gid", "5000"),
            ("userdb_home", "/var/vmail/example.org/alice"),
            ("userdb_mail", "maildir:~/M x=y ü"),
            quota,
            ("userdb_uid", "5000"),
        ]);
        want.sort();
        let mut got = fields.clone();
        got.sort();
        assert_eq!(got, want, "{out}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600,
            "the reply file keeps its mode"
        );
        assert!(!std::fs::read_to_string(&path).unwrap().contains(PW));
    }
}

#[test]
fn the_password_is_all_of_stdin_byte_for_byte() {
    let env = alice_env();
    let (_dir, path) = reply_file();
    // a trailing newline is part of the password, so this one is wrong
    let out = lua(&env, "verify", "alice@example.org", "imap", "2.3", &path)
        .stdin(format!("{PW}\n").as_bytes())
        .run();
    out.assert_code(1);
    assert_eq!(read_reply(&path).0, "PASSWORD_MISMATCH", "{out}");
}

#[test]
fn refusals_map_to_lua_result_words() {
    let mut env = alice_env();
    env.db
        .add_mailbox(&Mailbox::new("off@example.org").active(0));
    env.db
        .add_mailbox(&Mailbox::new("nopop@example.org").attr("pop3_access", "0"));
    env.db
        .add_mailbox(&Mailbox::new("room@example.org").kind("location"));
    env.db
        .add_mailbox(&Mailbox::new("sql@example.org").authsource("mailcow"));
    let (_dir, path) = reply_file();

    let out = lua(&env, "verify", "alice@example.org", "imap", "2.3", &path)
        .stdin(b"wrong")
        .run();
    out.assert_code(1);
    let (word, fields) = read_reply(&path);
    assert_eq!(word, "PASSWORD_MISMATCH", "{out}");
    assert_eq!(fields, pairs(&[("reason", "wrong password")]));

    let out = lua(&env, "verify", "nobody@example.org", "imap", "2.3", &path)
        .stdin(b"pw")
        .run();
    out.assert_code(1);
    assert_eq!(read_reply(&path).0, "USER_UNKNOWN", "{out}");

    // no LDAP traffic for any of these
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    for (user, service, word, reason) in [
        (
            "off@example.org",
            "imap",
            "USER_DISABLED",
            "mailbox inactive",
        ),
        (
            "nopop@example.org",
            "pop3",
            "USER_DISABLED",
            "service pop3 disabled",
        ),
        (
            "room@example.org",
            "imap",
            "USER_DISABLED",
            "resource mailbox",
        ),
        ("sql@example.org", "imap", "NEXT", "not LDAP-backed"),
        (
            "alice@example.org",
            "imap",
            "PASSWORD_MISMATCH",
            "empty password",
        ),
    ] {
        let password: &[u8] = if reason == "empty password" {
            b""
        } else {
            b"pw"
        };
        let out = lua(&env, "verify", user, service, "2.3", &path)
            .stdin(password)
            .run();
        out.assert_code(1);
        let (got, fields) = read_reply(&path);
        assert_eq!(got, word, "{user}: {out}");
        assert!(
            fields.len() == 1 && fields[0].0 == "reason" && fields[0].1.contains(reason),
            "{user}: {fields:?}"
        );
        assert_no_ldap_traffic(&bh, &out);
    }
}

#[test]
fn faults_are_internal_failure_with_exit_111() {
    let mut env = alice_env();
    env.ldap_at(&["127.0.0.1"], dead_port());
    let (_dir, path) = reply_file();
    let out = lua(&env, "verify", "alice@example.org", "imap", "2.3", &path)
        .stdin(PW.as_bytes())
        .run();
    out.assert_code(111).assert_never_printed(PW);
    assert_eq!(read_reply(&path).0, "INTERNAL_FAILURE", "{out}");

    // a broken config: also a fault, never a refusal
    let out = lua(&env, "verify", "alice@example.org", "imap", "2.3", &path)
        .config_yaml("ldap: [")
        .stdin(PW.as_bytes())
        .run();
    out.assert_code(111);
    assert_eq!(read_reply(&path).0, "INTERNAL_FAILURE", "{out}");
}

#[test]
fn lookup_finds_active_and_resource_mailboxes_without_ldap() {
    let mut env = alice_env();
    env.db
        .add_mailbox(&Mailbox::new("room@example.org").kind("location"));
    env.db
        .add_mailbox(&Mailbox::new("two@example.org").active(2));
    env.db
        .add_mailbox(&Mailbox::new("off@example.org").active(0));
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    let (_dir, path) = reply_file();

    let out = lua(&env, "lookup", "alice@example.org", "lmtp", "2.4", &path).run();
    out.assert_code(0);
    let (word, mut fields) = read_reply(&path);
    fields.sort();
    assert_eq!(word, "OK");
    assert_eq!(
        fields,
        pairs(&[
            ("gid", "5000"),
            ("home", "/var/vmail/example.org/alice"),
            ("quota_storage_size", "1073741824"),
            ("uid", "5000"),
            ("user", "alice@example.org"),
        ])
    );
    for user in ["room@example.org", "two@example.org"] {
        lua(&env, "lookup", user, "lmtp", "2.3", &path)
            .run()
            .assert_code(0);
        assert_eq!(read_reply(&path).0, "OK", "{user}");
    }
    for user in ["off@example.org", "nobody@example.org", "not an address"] {
        let out = lua(&env, "lookup", user, "lmtp", "2.3", &path).run();
        out.assert_code(3);
        assert_eq!(read_reply(&path).0, "USER_UNKNOWN", "{user}: {out}");
    }
    assert_eq!(bh.connections(), 0, "lookup mode contacted LDAP");

    env.cfg["database"]["port"] = json!(dead_port());
    let out = lua(&env, "lookup", "alice@example.org", "lmtp", "2.3", &path).run();
    out.assert_code(111);
    assert_eq!(read_reply(&path).0, "INTERNAL_FAILURE", "{out}");
}

#[test]
fn without_a_reply_file_the_reply_goes_to_stdout() {
    let env = alice_env();
    let out = Run::subcommand(
        &env.cfg,
        &[
            "dovecot-lua",
            "lookup",
            "--dovecot",
            "2.3",
            "alice@example.org",
        ],
    )
    .run();
    out.assert_code(0);
    assert!(
        out.stdout.starts_with("OK\nuser=alice@example.org\n"),
        "{out}"
    );
}

#[test]
fn the_reply_file_is_never_created_nor_followed_through_a_symlink() {
    let env = alice_env();
    let (dir, _) = reply_file();
    let missing = dir.path().join("missing");
    let out = lua(&env, "lookup", "alice@example.org", "lmtp", "2.3", &missing).run();
    out.assert_code(111).assert_stderr_contains("cannot reply");
    assert!(!missing.exists(), "the program created the reply file");

    let target = dir.path().join("target");
    std::fs::write(&target, "").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = lua(&env, "lookup", "alice@example.org", "lmtp", "2.3", &link).run();
    out.assert_code(111);
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "",
        "wrote through a symlink"
    );
}

#[test]
fn a_line_break_in_a_userdb_field_is_refused_at_config_load() {
    let mut env = alice_env();
    env.cfg["dovecot"]["userdb_fields"]["home"] = json!("/var/vmail/x\nuser=mallory");
    let (_dir, path) = reply_file();
    let out = lua(&env, "verify", "alice@example.org", "imap", "2.3", &path)
        .stdin(PW.as_bytes())
        .run();
    out.assert_code(111)
        .assert_stderr_contains("dovecot.userdb_fields.home");
    assert_eq!(read_reply(&path).0, "INTERNAL_FAILURE", "{out}");
}

#[test]
fn an_overlong_password_is_misuse() {
    let env = alice_env();
    let (_dir, path) = reply_file();
    let out = lua(&env, "verify", "alice@example.org", "imap", "2.3", &path)
        .stdin(&vec![b'x'; 4097])
        .run();
    out.assert_code(2)
        .assert_stderr_contains("longer than 4096");
}

//! `authsource` command: switching mailboxes between mailcow's own passwords and LDAP, against
//! a throwaway slapd and MariaDB with the real mailcow schema.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use mysql::prelude::Queryable;
use provision_helpers::json_rows;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

const PW: &str = "Alice-Pw-1 ä*()\\";
const BOB_PW: &str = "Bob-Pw-2";
/// A mailcow password hash as the SQL column holds it (never printed, never changed).
const HASH: &str = "{SSHA256}K9eGZtAsQJ0YbWfsE2Y3vOBSWEcA2hJHqYiUs2yVt6xwUGtMbBbHAA==";
const OLD: &str = "2000-01-01 00:00:00";

type Rows = BTreeMap<String, Map<String, Value>>;

/// Domain example.org; `alice` and `bob` in LDAP; no mailboxes yet.
fn env() -> TestEnv {
    let env = TestEnv::new(&[
        LdapUser::new("alice", "alice@example.org", PW),
        LdapUser::new("bob", "bob@example.org", BOB_PW),
    ]);
    env.db.add_domain(&Domain::new("example.org"));
    env
}

/// A mailbox with this authsource and a mailcow password hash.
fn add(env: &TestEnv, mailbox: Mailbox, password: &str) {
    let username = mailbox.username.clone();
    env.db.add_mailbox(&mailbox);
    env.db
        .conn()
        .exec_drop(
            "UPDATE mailbox SET password = ? WHERE username = ?",
            (password, &username),
        )
        .unwrap();
}

/// Sets every mailbox's `modified` to [`OLD`], so that a write shows.
fn age(env: &TestEnv) {
    env.db.exec_with("UPDATE mailbox SET modified = ?", (OLD,));
}

/// Every column of every mailbox, by username.
fn mailboxes(env: &TestEnv) -> Rows {
    json_rows(&env.db, "SELECT * FROM mailbox ORDER BY username")
        .into_iter()
        .map(|row| (row["username"].as_str().unwrap().to_owned(), row))
        .collect()
}

/// `before` with these mailboxes switched to `to`: `authsource` changed, `modified` no longer
/// [`OLD`], every other column as it was.
#[track_caller]
fn assert_only_switched(env: &TestEnv, before: &Rows, switched: &[&str], to: &str) {
    let mut after = mailboxes(env);
    for user in switched {
        let row = after.get_mut(*user).unwrap();
        assert_eq!(row["authsource"], to, "{user}: {row:?}");
        assert_ne!(row["modified"], OLD, "{user}: modified did not change");
        row["authsource"] = before[*user]["authsource"].clone();
        row["modified"] = before[*user]["modified"].clone();
    }
    assert_eq!(
        &after, before,
        "columns other than authsource/modified changed"
    );
}

fn authsource(env: &TestEnv, args: &[&str]) -> Outcome {
    let mut argv = vec!["authsource"];
    argv.extend_from_slice(args);
    let out = Run::subcommand(&env.cfg, &argv).run();
    out.assert_never_printed(HASH)
        .assert_never_printed(PW)
        .assert_never_printed(SVC_PW)
        .assert_never_printed(&env.db.password);
    out
}

#[track_caller]
fn assert_stdout(out: &Outcome, lines: &[&str]) {
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(got, lines, "{out}");
}

#[test]
fn mailcow_to_ldap_keeps_the_sql_password_and_ldap_logins_work() {
    let env = env();
    add(
        &env,
        Mailbox::new("alice@example.org").authsource("mailcow"),
        HASH,
    );
    add(
        &env,
        Mailbox::new("bob@example.org").authsource("mailcow"),
        HASH,
    );
    env.db
        .exec("INSERT INTO identity_provider (`key`, `value`) VALUES ('authsource', 'ldap')");
    let idp_before = env.db.rows("SELECT * FROM identity_provider");
    // before: mailcow-backed, so the LDAP login is refused
    env.cp()
        .login("alice@example.org", PW)
        .run()
        .assert_code(1)
        .assert_stderr_contains("not LDAP-backed");
    age(&env);
    let before = mailboxes(&env);

    let out = authsource(&env, &["ldap", " Alice@Example.ORG"]);
    out.assert_code(0);
    assert_stdout(&out, &["ok alice@example.org: mailcow -> ldap"]);
    assert_only_switched(&env, &before, &["alice@example.org"], "ldap");
    assert_eq!(
        env.db
            .rows("SELECT password FROM mailbox WHERE username = 'alice@example.org'"),
        vec![vec![Some(HASH.to_owned())]],
        "the SQL password must be kept"
    );
    assert_eq!(env.db.rows("SELECT * FROM identity_provider"), idp_before);

    // now LDAP-backed: the LDAP password logs in, bob (not switched) is still refused
    let login = env.cp().login("alice@example.org", PW).run();
    login.assert_code(0);
    assert_eq!(login.env["USER"], "alice@example.org", "{login}");
    env.cp()
        .login("bob@example.org", BOB_PW)
        .run()
        .assert_code(1)
        .assert_stderr_contains("not LDAP-backed");
}

#[test]
fn null_authsource_counts_as_mailcow() {
    let env = env();
    add(&env, Mailbox::new("alice@example.org"), HASH);
    add(&env, Mailbox::new("bob@example.org"), HASH);
    env.db.exec("UPDATE mailbox SET authsource = NULL");
    age(&env);
    let before = mailboxes(&env);
    let out = authsource(&env, &["mailcow", "alice@example.org"]);
    out.assert_code(0);
    assert_stdout(&out, &["unchanged alice@example.org: already mailcow"]);
    assert_eq!(mailboxes(&env), before);
    let out = authsource(&env, &["ldap", "bob@example.org"]);
    out.assert_code(0);
    assert_stdout(&out, &["ok bob@example.org: mailcow -> ldap"]);
    assert_only_switched(&env, &before, &["bob@example.org"], "ldap");
}

#[track_caller]
fn assert_refused(env: &TestEnv, address: &str, line: &str) {
    age(env);
    let before = mailboxes(env);
    let out = authsource(env, &["ldap", address]);
    out.assert_code(1);
    assert_stdout(&out, &[line]);
    assert_eq!(mailboxes(env), before, "a refusal wrote something");
}

#[test]
fn refused_without_ldap_entry() {
    let env = env();
    add(
        &env,
        Mailbox::new("carol@example.org").authsource("mailcow"),
        HASH,
    );
    assert_refused(
        &env,
        "carol@example.org",
        "refused carol@example.org: no such LDAP entry",
    );
}

#[test]
fn refused_for_an_ambiguous_entry() {
    let env = env();
    env.ldap
        .add_user(&LdapUser::new("alice2", "alice@example.org", "other"));
    add(
        &env,
        Mailbox::new("alice@example.org").authsource("mailcow"),
        HASH,
    );
    assert_refused(
        &env,
        "alice@example.org",
        "refused alice@example.org: ambiguous LDAP entry: 2 entries match",
    );
}

#[test]
fn refused_without_mailbox_and_for_a_resource_without_ldap_contact() {
    let mut env = env();
    env.ldap
        .add_user(&LdapUser::new("room", "room@example.org", "room-pw"));
    add(
        &env,
        Mailbox::new("room@example.org")
            .kind("location")
            .authsource("mailcow"),
        HASH,
    );
    // both refusals come from the database: LDAP is never contacted
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    assert_refused(
        &env,
        "alice@example.org",
        "refused alice@example.org: no such mailbox",
    );
    assert_refused(
        &env,
        "room@example.org",
        "refused room@example.org: resource mailbox",
    );
    // switching to mailcow needs the mailbox too
    let out = authsource(&env, &["mailcow", "nobody@example.org"]);
    out.assert_code(1);
    assert_stdout(&out, &["refused nobody@example.org: no such mailbox"]);
    assert_eq!(bh.connections(), 0, "LDAP was contacted");
}

#[test]
fn ldap_to_mailcow_warns_about_an_empty_password_and_ends_ldap_logins() {
    let env = env();
    // alice was created by LDAP provisioning (empty password); bob has a mailcow password
    add(&env, Mailbox::new("alice@example.org"), "");
    add(&env, Mailbox::new("bob@example.org"), HASH);
    env.cp().login("alice@example.org", PW).run().assert_code(0);
    age(&env);
    let before = mailboxes(&env);

    let out = authsource(&env, &["mailcow", "alice@example.org", "bob@example.org"]);
    out.assert_code(0);
    assert_stdout(
        &out,
        &[
            "ok alice@example.org: ldap -> mailcow",
            "ok bob@example.org: ldap -> mailcow",
        ],
    );
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("cannot log in until a password is set"))
        .collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(warnings[0].contains("alice@example.org"), "{out}");
    assert_only_switched(
        &env,
        &before,
        &["alice@example.org", "bob@example.org"],
        "mailcow",
    );
    assert_eq!(
        env.db
            .rows("SELECT password FROM mailbox ORDER BY username"),
        vec![vec![Some(String::new())], vec![Some(HASH.to_owned())]]
    );
    env.cp()
        .login("alice@example.org", PW)
        .run()
        .assert_code(1)
        .assert_stderr_contains("not LDAP-backed");
}

#[test]
fn already_ldap_is_unchanged() {
    let env = env();
    add(&env, Mailbox::new("alice@example.org"), "");
    age(&env);
    let before = mailboxes(&env);
    let out = authsource(&env, &["ldap", "alice@example.org"]);
    out.assert_code(0);
    assert_stdout(&out, &["unchanged alice@example.org: already ldap"]);
    assert_eq!(
        mailboxes(&env),
        before,
        "modified or another column changed"
    );
}

#[test]
fn dry_run_writes_nothing() {
    let env = env();
    add(
        &env,
        Mailbox::new("alice@example.org").authsource("mailcow"),
        HASH,
    );
    add(&env, Mailbox::new("bob@example.org"), "");
    add(
        &env,
        Mailbox::new("carol@example.org").authsource("mailcow"),
        HASH,
    );
    age(&env);
    let before = mailboxes(&env);
    let out = authsource(
        &env,
        &[
            "ldap",
            "--dry-run",
            "alice@example.org",
            "bob@example.org",
            "carol@example.org",
        ],
    );
    out.assert_code(1);
    assert_stdout(
        &out,
        &[
            "would switch alice@example.org: mailcow -> ldap",
            "unchanged bob@example.org: already ldap",
            "refused carol@example.org: no such LDAP entry",
        ],
    );
    assert_eq!(mailboxes(&env), before);
    let out = authsource(&env, &["mailcow", "bob@example.org", "--dry-run"]);
    out.assert_code(0)
        .assert_stderr_contains("cannot log in until a password is set");
    assert_stdout(&out, &["would switch bob@example.org: ldap -> mailcow"]);
    assert_eq!(mailboxes(&env), before);
}

#[test]
fn one_refused_address_does_not_stop_the_others() {
    let env = env();
    for user in ["alice@example.org", "bob@example.org", "ghost@example.org"] {
        add(&env, Mailbox::new(user).authsource("mailcow"), HASH);
    }
    age(&env);
    let before = mailboxes(&env);
    let out = authsource(
        &env,
        &[
            "ldap",
            "alice@example.org",
            "ghost@example.org",
            "not-an-address",
            "BOB@example.org",
            "alice@EXAMPLE.org",
        ],
    );
    out.assert_code(1);
    assert_stdout(
        &out,
        &[
            "ok alice@example.org: mailcow -> ldap",
            "refused ghost@example.org: no such LDAP entry",
            "refused not-an-address: malformed address (no '@' in the login name)",
            "ok bob@example.org: mailcow -> ldap",
        ],
    );
    assert_only_switched(
        &env,
        &before,
        &["alice@example.org", "bob@example.org"],
        "ldap",
    );
}

#[test]
fn ldap_down_while_switching_to_ldap_writes_nothing() {
    let mut env = env();
    add(&env, Mailbox::new("alice@example.org"), "");
    add(
        &env,
        Mailbox::new("bob@example.org").authsource("mailcow"),
        HASH,
    );
    age(&env);
    let before = mailboxes(&env);
    env.ldap_at(&["127.0.0.1"], dead_port());
    let out = authsource(&env, &["ldap", "alice@example.org", "bob@example.org"]);
    out.assert_code(111).assert_stderr_contains("unreachable");
    assert!(!out.stdout.contains("ok "), "{out}");
    assert_eq!(mailboxes(&env), before);
}

#[test]
fn switching_to_mailcow_does_not_contact_ldap() {
    let mut env = env();
    add(&env, Mailbox::new("alice@example.org"), HASH);
    age(&env);
    let before = mailboxes(&env);
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    let out = authsource(&env, &["mailcow", "alice@example.org"]);
    out.assert_code(0);
    assert_stdout(&out, &["ok alice@example.org: ldap -> mailcow"]);
    assert_only_switched(&env, &before, &["alice@example.org"], "mailcow");
    assert_eq!(bh.connections(), 0, "LDAP was contacted:\n{out}");
}

#[test]
fn database_down_is_111() {
    let mut env = env();
    env.cfg["database"]["port"] = serde_json::json!(dead_port());
    authsource(&env, &["mailcow", "alice@example.org"])
        .assert_code(111)
        .assert_stderr_contains("database unreachable");
}

#[test]
fn switching_to_ldap_clears_a_pending_forced_password_update() {
    let env = env();
    let attributes = serde_json::json!({ "force_pw_update": "1", "imap_access": "1" });
    add(
        &env,
        Mailbox::new("alice@example.org")
            .authsource("mailcow")
            .attributes(attributes),
        HASH,
    );
    authsource(&env, &["ldap", "alice@example.org"]).assert_code(0);
    let rows = json_rows(
        &env.db,
        "SELECT JSON_VALUE(attributes, '$.force_pw_update') AS f, \
         JSON_VALUE(attributes, '$.imap_access') AS i FROM mailbox",
    );
    assert_eq!(rows[0]["f"], "0", "{rows:?}");
    assert_eq!(rows[0]["i"], "1", "other keys kept: {rows:?}");
}

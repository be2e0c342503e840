//! What mailcow's own login does beside the LDAP password (issue 11): app passwords, checked
//! before LDAP and without contacting it, and the `sasl_log` row of every successful login.
mod common;

use common::*;
use serde_json::json;

const PW: &str = "Alice-Pw-1";
const RIP: &str = "192.0.2.10";

/// Inserts an app password for alice as mailcow's UI does; returns its id.
fn add_app_password(env: &TestEnv, hash: &str, imap_access: i32, active: i32) -> String {
    env.db.exec_with(
        "INSERT INTO app_passwd (name, mailbox, domain, password, imap_access, active) \
         VALUES ('phone', 'alice@example.org', 'example.org', ?, ?, ?)",
        (hash, imap_access, active),
    );
    env.db.rows("SELECT MAX(id) FROM app_passwd")[0][0]
        .clone()
        .expect("id")
}

fn sasl_log(env: &TestEnv) -> Vec<Vec<Option<String>>> {
    env.db.rows(
        "SELECT username, real_rip, service, app_password FROM sasl_log \
         ORDER BY service, username",
    )
}

fn row(service: &str, app_password: &str) -> Vec<Option<String>> {
    ["alice@example.org", RIP, service, app_password]
        .map(|s| Some(s.to_owned()))
        .to_vec()
}

#[test]
fn app_password_logs_in_without_contacting_ldap() {
    let mut env = alice_env(PW);
    let (hash, password) = app_password_vector("php password_hash(PASSWORD_BCRYPT)");
    let id = add_app_password(&env, &hash, 1, 1);
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());

    let out = env.cp().login("alice@example.org", &password).run();
    out.assert_code(0)
        .assert_stderr_contains(&format!("app password {id}"))
        .assert_never_printed(&password);
    assert_eq!(out.env["USER"], "alice@example.org");
    assert_eq!(bh.connections(), 0, "no LDAP connection:\n{out}");
    assert_eq!(sasl_log(&env), vec![row("imap", &id)]);
}

#[test]
fn app_passwords_of_every_scheme_mailcow_writes_log_in() {
    let mut env = alice_env(PW);
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    for made_with in [
        "doveadm pw -s BLF-CRYPT",
        "doveadm pw -s SSHA256",
        "doveadm pw -s ARGON2ID",
        "doveadm pw -s SHA512-CRYPT",
        "doveadm pw -s MD5-CRYPT",
        "php hash(sha256)",
    ] {
        let (hash, password) = app_password_vector(made_with);
        env.db.exec("DELETE FROM app_passwd");
        add_app_password(&env, &hash, 1, 1);
        env.cp()
            .login("Alice@Example.org", &password)
            .run()
            .assert_code(0);
    }
    assert_eq!(bh.connections(), 0);
}

#[test]
fn an_app_password_that_does_not_apply_goes_to_ldap() {
    let env = alice_env(PW);
    let (hash, password) = app_password_vector("doveadm pw -s SSHA512");
    add_app_password(&env, &hash, 0, 1); // imap_access 0
    add_app_password(&env, &hash, 1, 0); // inactive
    // Neither may log in over IMAP: LDAP decides, and the app password is not alice's password.
    env.cp()
        .login("alice@example.org", &password)
        .run()
        .assert_code(1)
        .assert_stderr_contains("wrong password");
    // pop3_access of both rows is 1, but only the active one counts.
    env.cp()
        .service("pop3")
        .login("alice@example.org", &password)
        .run()
        .assert_code(0);
    // A service without a column (lmtp) never takes an app password.
    env.cp()
        .service("lmtp")
        .login("alice@example.org", &password)
        .run()
        .assert_code(1);
    // The LDAP password still works, recorded with app_password 0.
    env.cp().login("alice@example.org", PW).run().assert_code(0);
    let first_id = env.db.rows("SELECT MIN(id) FROM app_passwd")[0][0]
        .clone()
        .unwrap();
    assert_eq!(
        sasl_log(&env),
        vec![row("imap", "0"), row("pop3", &first_id)]
    );
}

#[test]
fn app_passwords_obey_the_mailbox_and_domain() {
    let env = alice_env(PW);
    let (hash, password) = app_password_vector("doveadm pw -s BLF-CRYPT");
    add_app_password(&env, &hash, 1, 1);
    env.db
        .exec("UPDATE mailbox SET active = 0 WHERE username = 'alice@example.org'");
    env.cp()
        .login("alice@example.org", &password)
        .run()
        .assert_code(1)
        .assert_stderr_contains("mailbox inactive");
    env.db
        .exec("UPDATE mailbox SET active = 1 WHERE username = 'alice@example.org'");
    env.db
        .exec("UPDATE domain SET active = 0 WHERE domain = 'example.org'");
    env.cp()
        .login("alice@example.org", &password)
        .run()
        .assert_code(1)
        .assert_stderr_contains("domain inactive");
    env.db
        .exec("UPDATE domain SET active = 1 WHERE domain = 'example.org'");
    // The mailbox's own protocol switch is checked before any password.
    env.db.exec(
        "UPDATE mailbox SET attributes = JSON_SET(attributes, '$.imap_access', '0') \
         WHERE username = 'alice@example.org'",
    );
    env.cp()
        .login("alice@example.org", &password)
        .run()
        .assert_code(1)
        .assert_stderr_contains("service imap disabled");
    assert!(sasl_log(&env).is_empty());
}

#[test]
fn a_broken_app_password_hash_is_no_match_and_no_fault() {
    let env = alice_env(PW);
    for broken in [
        "{BLF-CRYPT}$2y$05$short",
        "{ARGON2ID}$argon2id$x",
        "no scheme",
        "{SSHA}!!",
    ] {
        add_app_password(&env, broken, 1, 1);
    }
    env.cp()
        .login("alice@example.org", "no scheme")
        .run()
        .assert_code(1)
        .assert_stderr_contains("wrong password");
    env.cp().login("alice@example.org", PW).run().assert_code(0);
}

#[test]
fn lua_front_end_writes_sasl_log_with_its_remote_ip() {
    let env = alice_env(PW);
    let (hash, password) = app_password_vector("doveadm pw -s ARGON2I");
    let id = add_app_password(&env, &hash, 1, 1);
    for (service, pw) in [("imap", PW), ("smtp", password.as_str())] {
        Run::subcommand(
            &env.cfg,
            &[
                "dovecot-lua",
                "verify",
                "--service",
                service,
                "--remote-ip",
                RIP,
                "--dovecot",
                "2.3",
                "--",
                "alice@example.org",
            ],
        )
        .stdin(pw.as_bytes())
        .run()
        .assert_code(0);
    }
    assert_eq!(sasl_log(&env), vec![row("imap", "0"), row("smtp", &id)]);
}

#[test]
fn sasl_log_can_be_turned_off_and_needs_a_client_ip() {
    let mut env = alice_env(PW);
    env.cp()
        .env_remove("TCPREMOTEIP")
        .login("alice@example.org", PW)
        .run()
        .assert_code(0);
    Run::subcommand(&env.cfg, &["login", "alice@example.org"])
        .stdin(format!("{PW}\n").as_bytes())
        .run()
        .assert_code(0);
    env.cfg["log"]["sasl_log"] = json!(false);
    env.cp().login("alice@example.org", PW).run().assert_code(0);
    assert!(sasl_log(&env).is_empty());
}

#[test]
fn a_sasl_log_that_cannot_be_written_does_not_fail_the_login() {
    let env = alice_env(PW);
    env.db.exec("DROP TABLE sasl_log");
    env.cp()
        .login("alice@example.org", PW)
        .run()
        .assert_code(0)
        .assert_stderr_contains("sasl_log not written");
}

#[test]
fn a_repeated_login_replaces_its_sasl_log_row() {
    let env = alice_env(PW);
    env.cp().login("alice@example.org", PW).run().assert_code(0);
    env.db
        .exec("UPDATE sasl_log SET datetime = '2020-01-01 00:00:00'");
    env.cp().login("alice@example.org", PW).run().assert_code(0);
    let rows = env
        .db
        .rows("SELECT COUNT(*), MIN(datetime) > '2020-01-01 00:00:00' FROM sasl_log");
    assert_eq!(rows, vec![vec![Some("1".into()), Some("1".into())]]);
}

//! mailcow-dockerized's own passdb chain on a real Dovecot 2.3 (issue 11): the three passdb
//! blocks of mailcow's dovecot.conf, verbatim (tests/fixtures/mailcow/dovecot-passdb.conf),
//! running contrib/mailcow/passwd-verify.lua in place of mailcow's script, which asks a real
//! `serve` (slapd + MariaDB, settings from mailcow's `identity_provider` table) first and a
//! stand-in for mailcow's PHP endpoint for what serve hands on. One Dovecot and one serve for
//! this binary; the steps run in order in one test because the last one stops serve.

mod common;
mod e2e;

/// The Dovecot of this test binary runs mailcow's passdb chain.
const E2E_AUTH: e2e::dovecot::Auth = e2e::dovecot::Auth::Mailcow;

#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::serve::Serve;
use common::*;
use e2e::clients::imap_login;
use e2e::dovecot::{MAILCOW_URL, URL_TRANSPORT, dovecot, share_token_with_dovecot};
use e2e::mailcow_php::MailcowPhp;
use provision_helpers::{golden, insert_template};
use serde_json::json;

const DOMAIN: &str = "mc.example.org";

#[test]
fn mailcows_passdb_chain_asks_serve_first_and_mailcow_for_the_rest() {
    let anna = format!("anna@{DOMAIN}");
    let bert = format!("bert@{DOMAIN}");
    let fred = format!("fred@{DOMAIN}");
    let mut env = TestEnv::new(&[
        LdapUser::new("anna", &anna, "anna-pw").employee_type("staff"),
        LdapUser::new("bert", &bert, "bert-pw").employee_type("staff"),
    ]);
    env.db.add_domain(&Domain::new(DOMAIN));
    env.db
        .add_mailbox(&Mailbox::new(&fred).authsource("mailcow"));
    insert_template(
        &env.db,
        "Staff",
        golden()["template"]["attributes_text"].as_str().unwrap(),
    );
    config_from_mailcow(&mut env.cfg);
    env.cfg["log"] = json!({"syslog": false, "stderr": "all"});
    // The mapping as mailcow's UI saves it: JSON arrays.
    save_as_mailcow_ui(&env, r#"["staff"]"#, r#"["Staff"]"#, &[]);
    let mut serve = Serve::start(&env.cfg);
    let token = share_token_with_dovecot(&serve);
    let php = MailcowPhp::start(&[(fred.as_str(), "fred-sql-pw")]);
    URL_TRANSPORT
        .set((format!("http://{}/", serve.addr), token))
        .unwrap();
    MAILCOW_URL.set(php.url.clone()).unwrap();
    let d = dovecot();
    let logs = |serve: &Serve| format!("serve:\n{}\ndovecot:\n{}", serve.log(), d.log());
    let tags = |user: &str| {
        env.db.rows_with(
            "SELECT tag_name FROM tags_mailbox WHERE username = ?",
            (user,),
        )
    };
    let staff = vec![vec![Some("staff".to_owned())]];

    // An LDAP user: serve answers (and provisions from the mapped template); mailcow's
    // endpoint is never asked.
    imap_login(d.imap_port, &anna, "anna-pw").assert_selected(&logs(&serve));
    assert!(
        serve.log().contains("mailbox created from template Staff"),
        "{}",
        logs(&serve)
    );
    assert_eq!(tags(&anna), staff);
    let r = imap_login(d.imap_port, &anna, "wrong");
    assert!(r.login.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:#?}");
    assert_eq!(php.requests(), Vec::<serde_json::Value>::new());

    // A mailbox of mailcow's own (authsource mailcow): serve says NEXT, mailcow's endpoint
    // decides, asked with mailcow's request.
    let r = imap_login(d.imap_port, &fred, "fred-sql-pw");
    assert!(r.ok(), "{r:#?}\n{}", logs(&serve));
    let r = imap_login(d.imap_port, &fred, "wrong");
    assert!(r.login.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:#?}");
    let asked = php.requests();
    assert!(!asked.is_empty());
    for request in &asked {
        assert_eq!(request["username"], json!(fred));
        assert_eq!(request["service"], json!("imap"));
        assert_eq!(request["real_rip"], json!("127.0.0.1"));
    }
    assert_eq!(asked[0]["password"], json!("fred-sql-pw"));
    let php_calls = asked.len();

    // The index-keyed mapping (what PHP keeps of ["", "staff"]): bert follows it.
    save_as_mailcow_ui(&env, r#"{"1":"staff"}"#, r#"{"1":"Staff"}"#, &[]);
    imap_login(d.imap_port, &bert, "bert-pw").assert_selected(&logs(&serve));
    assert_eq!(tags(&bert), staff);

    // An app password of an LDAP mailbox: OK without any LDAP connection (the UI's LDAP
    // server is a black hole meanwhile), sasl_log names it.
    let (hash, app_pw) = app_password_vector("php password_hash(PASSWORD_BCRYPT)");
    let app_password = |imap_access: i32| {
        env.db.exec_with(
            "INSERT INTO app_passwd (name, mailbox, domain, password, imap_access, active) \
             VALUES ('phone', ?, ?, ?, ?, 1)",
            (&anna, DOMAIN, &hash, imap_access),
        );
        env.db.rows("SELECT MAX(id) FROM app_passwd")[0][0]
            .clone()
            .unwrap()
    };
    let id = app_password(1);
    let bh = BlackHole::new();
    let bh_port = bh.port().to_string();
    save_as_mailcow_ui(&env, r#"["staff"]"#, r#"["Staff"]"#, &[("port", &bh_port)]);
    imap_login(d.imap_port, &anna, &app_pw).assert_selected(&logs(&serve));
    assert_eq!(bh.connections(), 0, "{}", logs(&serve));
    assert_eq!(
        env.db.rows_with(
            "SELECT app_password FROM sasl_log WHERE username = ? AND service = 'imap'",
            (&anna,),
        ),
        vec![vec![Some(id)]]
    );

    // An app password without IMAP access is no app password here: LDAP refuses it.
    save_as_mailcow_ui(&env, r#"["staff"]"#, r#"["Staff"]"#, &[]);
    env.db.exec("DELETE FROM app_passwd");
    app_password(0);
    let r = imap_login(d.imap_port, &anna, &app_pw);
    assert!(r.login.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:#?}");
    assert_eq!(
        php.requests().len(),
        php_calls,
        "mailcow's endpoint asked for an LDAP mailbox"
    );

    // serve down: a temporary failure, not "wrong password" as mailcow's own script answers.
    serve.kill();
    let r = imap_login(d.imap_port, &anna, "anna-pw");
    assert!(
        r.login.starts_with("NO [UNAVAILABLE]"),
        "{r:#?}\n{}",
        d.log()
    );
    assert!(!serve.log().contains("anna-pw") && !d.log().contains("anna-pw"));
}

//! mailcow-dockerized's Dovecot 2.4 passdb chain (branch `feat/dovecot-2.4`:
//! tests/fixtures/mailcow/20-auth-2.4.conf, verbatim but for the paths) on a real Dovecot 2.4.1
//! with the Lua modules mailcow's image has (lua-socket, lua-sec, lua-cjson, in the trixie root
//! of scripts/dovecot24-root.sh). It runs contrib/mailcow/passwd-verify.lua switched to 2.4 as
//! its comments say, which asks a real `serve` (slapd + MariaDB, settings from mailcow's
//! `identity_provider` table) first and the stand-in for mailcow's PHP endpoint (HTTPS, through
//! lua-sec) for what serve hands on. A static userdb stands in for mailcow's SQL one.

mod common;
mod e2e;

/// Required by tests/e2e/dovecot.rs; its shared Dovecot 2.3 is never started here.
const E2E_AUTH: e2e::dovecot::Auth = e2e::dovecot::Auth::Lua;

#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::serve::Serve;
use e2e::clients::imap_login;
use e2e::dovecot::{MAILCOW_MASTER_PASSWD, MAILCOW_SCRIPT, mailcow_wrapper_with};
use e2e::dovecot24::Dovecot24;
use e2e::mailcow_php::MailcowPhp;
use provision_helpers::mailcow_site;
use serde_json::json;

const MAILCOW_AUTH: &str = include_str!("fixtures/mailcow/20-auth-2.4.conf");
const DOMAIN: &str = "mc24.example.org";
const FAILED: &str = "NO [AUTHENTICATIONFAILED] Authentication failed.";
const TEMPFAIL: &str = "NO [UNAVAILABLE] Temporary authentication failure.";

/// mailcow's chain with its paths in the instance directory, and a static userdb.
fn mailcow_chain() -> String {
    assert_eq!(MAILCOW_AUTH.matches(MAILCOW_SCRIPT).count(), 2);
    assert_eq!(MAILCOW_AUTH.matches(MAILCOW_MASTER_PASSWD).count(), 1);
    MAILCOW_AUTH
        .replace(MAILCOW_SCRIPT, "{dir}/passwd-verify.lua")
        .replace(MAILCOW_MASTER_PASSWD, "{dir}/master.passwd")
        + "
userdb static {
  fields {
    uid = mail
    gid = mail
    home = {dir}/mail/%{user | domain}/%{user | username}
  }
}
"
}

#[test]
fn mailcows_2_4_passdb_chain_asks_serve_first_and_mailcow_for_the_rest() {
    let (env, [anna, bert, cleo, fred]) = mailcow_site(DOMAIN);
    let mut serve = Serve::start(&env.cfg);
    let php = MailcowPhp::start(&[(fred.as_str(), "fred-sql-pw")]);
    let wrapper = mailcow_wrapper_with(
        &format!("http://{}/", serve.addr),
        "{token}",
        &php.url,
        "{script}",
        true,
    );
    let d = Dovecot24::start_auth(
        "mailcow24",
        &mailcow_chain(),
        &[("passwd-verify.lua", &wrapper), ("master.passwd", "")],
        &serve.token,
    );
    let logs = |serve: &Serve| format!("serve:\n{}\ndovecot:\n{}", serve.log(), d.log());

    // An LDAP user: serve answers and provisions from the mapped template; mailcow's endpoint
    // is never asked.
    imap_login(d.imap_port, &anna, "anna-pw").assert_selected(&logs(&serve));
    assert!(
        serve.log().contains("mailbox created from template Staff"),
        "{}",
        logs(&serve)
    );
    // serve's refusal is final: mailcow is not asked either.
    assert_eq!(imap_login(d.imap_port, &bert, "wrong").login, FAILED);
    assert!(php.requests().is_empty(), "{:?}", php.requests());

    // A mailbox of mailcow's own: serve says NEXT, mailcow's 2.4 request (lua-sec, cjson)
    // decides.
    imap_login(d.imap_port, &fred, "fred-sql-pw").assert_selected(&logs(&serve));
    assert_eq!(
        php.requests(),
        [
            json!({"username": fred, "password": "fred-sql-pw", "real_rip": "127.0.0.1",
                "service": "imap"})
        ]
    );
    assert_eq!(imap_login(d.imap_port, &fred, "wrong").login, FAILED);

    // serve down: a temporary failure, never "wrong password".
    serve.kill();
    let r = imap_login(d.imap_port, &cleo, "cleo-pw");
    assert!(r.login.starts_with(TEMPFAIL), "{r:#?}\n{}", logs(&serve));
    for pw in ["anna-pw", "fred-sql-pw", "cleo-pw"] {
        assert!(!serve.log().contains(pw), "{pw} in serve's log");
    }
}

//! End to end through Dovecot 2.3's Lua passdb/userdb in url mode: the shipped 2.3 Lua snippet
//! with its `MAILCOW_LDAP_AUTH_URL` line switched on, the shipped script, Dovecot's own HTTP
//! client → a real `serve` → slapd + MariaDB. One Dovecot and one `serve` for this binary;
//! the steps run in order in one test because some of them stop `serve`.

mod common;
mod e2e;

/// The Dovecot of this test binary authenticates through the Lua snippet in url mode.
const E2E_AUTH: e2e::dovecot::Auth = e2e::dovecot::Auth::LuaUrl;

use common::serve::Serve;
use common::{Domain, LdapUser, Mailbox, TestEnv, dead_port, process};
use e2e::clients::imap_login;
use e2e::doveadm_user;
use e2e::dovecot::{
    URL_TRANSPORT, dovecot, gid_of, serve_config_for_dovecot, share_token_with_dovecot, uid_of,
};
use serde_json::json;

const DOMAIN: &str = "url.example.org";

#[test]
fn imap_logins_through_serve_every_result_and_serve_restarts() {
    let env = TestEnv::new(&[
        LdapUser::new("anna", &format!("anna@{DOMAIN}"), "anna-pw"),
        LdapUser::new("cleo", &format!("cleo@{DOMAIN}"), "cleo-pw"),
    ]);
    env.db.add_domain(&Domain::new(DOMAIN));
    env.db
        .add_mailbox(&Mailbox::new(&format!("cleo@{DOMAIN}")).attr("imap_access", "0"));
    env.db
        .add_mailbox(&Mailbox::new(&format!("fred@{DOMAIN}")).authsource("mailcow"));
    let cfg = serve_config_for_dovecot(&env, "url-mail");
    let mail = process::scratch_subdir("url-mail");
    let mut serve = Serve::start(&cfg);
    let token = share_token_with_dovecot(&serve);
    URL_TRANSPORT
        .set((format!("http://{}/", serve.addr), token))
        .unwrap();
    let d = dovecot();
    let imap = |user: &str, pw: &str| imap_login(d.imap_port, &format!("{user}@{DOMAIN}"), pw);

    // ok: first login creates the mailbox
    let r = imap("anna", "anna-pw");
    r.assert_selected(&format!(
        "serve:
{}
dovecot:
{}",
        serve.log(),
        d.log()
    ));
    assert!(
        serve
            .log()
            .contains("mailbox created from template Default"),
        "{}",
        serve.log()
    );
    // the service and the client's address, as the script read them from Dovecot 2.3's request
    assert!(
        serve.log().contains(" service=imap rip=127.0.0.1 "),
        "{}",
        serve.log()
    );
    // mismatch, unknown, disabled
    for (user, pw) in [("anna", "wrong"), ("nobody", "pw"), ("cleo", "cleo-pw")] {
        let r = imap(user, pw);
        assert!(
            r.login.starts_with("NO [AUTHENTICATIONFAILED]"),
            "{user}: {r:#?}"
        );
    }
    assert!(
        serve
            .log()
            .contains("result=rejected reason=\"service imap disabled")
    );
    // next: the passwd-file passdb after the snippet's decides
    d.add_passwd(
        &format!("fred@{DOMAIN}"),
        "fred-pw",
        &[
            ("uid", uid_of("mail").to_string()),
            ("gid", gid_of("mail").to_string()),
            ("home", format!("{}/{DOMAIN}/fred", mail.display())),
        ],
    );
    assert!(imap("fred", "fred-pw").ok());
    // userdb lookup over GET /lookup
    let (code, fields, out) = doveadm_user(&format!("anna@{DOMAIN}"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        fields
            .iter()
            .any(|(k, v)| k == "home" && v.ends_with("/anna")),
        "{out}"
    );

    // tempfail: serve's LDAP unreachable (a reload), then back
    let mut broken = cfg.clone();
    broken["ldap"]["port"] = json!(dead_port());
    broken["serve"] = json!({"listen": serve.addr, "token_file": serve.dir.join("token")});
    common::serve::private_file(
        &serve.config_path,
        &serde_norway::to_string(&broken).unwrap(),
    );
    serve.signal(libc::SIGHUP);
    serve.wait_for_log("configuration reloaded");
    let r = imap("anna", "anna-pw");
    assert!(r.login.starts_with("NO [UNAVAILABLE]"), "{r:#?}");

    // serve killed: UNAVAILABLE; started again: logins work, Dovecot untouched
    serve.kill();
    let r = imap("anna", "anna-pw");
    assert!(r.login.starts_with("NO [UNAVAILABLE]"), "{r:#?}");
    let mut fixed = cfg.clone();
    fixed["serve"] = broken["serve"].clone();
    common::serve::private_file(
        &serve.config_path,
        &serde_norway::to_string(&fixed).unwrap(),
    );
    serve.restart();
    let r = imap("anna", "anna-pw");
    assert!(r.ok(), "{r:#?}\nserve:\n{}", serve.log());
    assert!(!serve.log().contains("anna-pw"));
}

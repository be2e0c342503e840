//! End to end through Dovecot 2.3's Lua passdb/userdb in url mode over serve's Unix socket
//! (`url = unix:PATH`): the shipped snippet and script, lua-socket → a real `serve` → slapd +
//! MariaDB. Also the kept-alive connection: one serve closed while idle is not used again.

mod common;
mod e2e;

/// The Dovecot of this test binary authenticates through the Lua snippet in url mode.
const E2E_AUTH: e2e::dovecot::Auth = e2e::dovecot::Auth::LuaUrl;

use std::os::unix::fs::PermissionsExt;

use common::serve::Serve;
use common::{Domain, LdapUser, TestEnv, process};
use e2e::clients::{Session, base64, imap_login};
use e2e::dovecot::{URL_TRANSPORT, dovecot, serve_config_for_dovecot, share_token_with_dovecot};
use serde_json::json;

const DOMAIN: &str = "unix.example.org";

#[test]
fn imap_logins_through_serves_unix_socket() {
    let env = TestEnv::new(&[LdapUser::new("ines", &format!("ines@{DOMAIN}"), "ines-pw")]);
    env.db.add_domain(&Domain::new(DOMAIN));
    let sockets = process::scratch_subdir("unix-socket");
    std::fs::set_permissions(&sockets, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = sockets.join("serve.sock");
    let mut cfg = serve_config_for_dovecot(&env, "unix-mail");
    // Idle connections are closed quickly, so the script meets one serve closed.
    cfg["serve"] = json!({"listen": socket, "client_timeout_ms": 200});
    let mut serve = Serve::start(&cfg);
    let token = share_token_with_dovecot(&serve);
    URL_TRANSPORT
        .set((format!("unix:{}", socket.display()), token))
        .unwrap();
    let d = dovecot();
    let imap = |pw: &str| imap_login(d.imap_port, &format!("ines@{DOMAIN}"), pw);
    let logs = |serve: &Serve| format!("serve:\n{}\ndovecot:\n{}", serve.log(), d.log());

    // ok: the first login creates the mailbox
    imap("ines-pw").assert_selected(&logs(&serve));
    assert!(
        serve
            .log()
            .contains("mailbox created from template Default")
    );
    // the auth-worker's connection is idle past serve's client timeout: serve closed it, the
    // script opens a new one instead of losing the login
    std::thread::sleep(std::time::Duration::from_millis(600));
    let r = imap("ines-pw");
    assert!(r.ok(), "{r:#?}\n{}", logs(&serve));
    let r = imap("wrong");
    assert!(r.login.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:#?}");
    // a password that is not UTF-8 (JSON cannot carry it) is refused, not a fault
    let mut session = Session::connect(d.imap_port);
    session.line();
    let plain = base64(&[b"\0ines@unix.example.org\0pw-\xff".as_slice()].concat());
    session.send(
        &format!("a1 AUTHENTICATE PLAIN {plain}"),
        Some("a1 AUTHENTICATE PLAIN …"),
    );
    let answer = session.until(|l| l.starts_with("a1 "));
    assert!(
        answer.starts_with("a1 NO [AUTHENTICATIONFAILED]"),
        "{answer}\n{}",
        d.log()
    );

    // serve killed: UNAVAILABLE; started again: logins work, Dovecot untouched
    serve.kill();
    let r = imap("ines-pw");
    assert!(r.login.starts_with("NO [UNAVAILABLE]"), "{r:#?}");
    assert!(d.log().contains("cannot connect to unix:"), "{}", d.log());
    serve.restart();
    let r = imap("ines-pw");
    assert!(r.ok(), "{r:#?}\n{}", logs(&serve));
    assert!(!serve.log().contains("ines-pw"));
    assert!(!d.log().contains("ines-pw"));
}

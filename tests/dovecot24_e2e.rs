//! End to end on Dovecot 2.4.1 (Debian 13's; checkpassword is gone there): the passdb and
//! userdb are the shipped `contrib/dovecot/2.4/10-auth-mailcow-ldap.conf` running the shipped
//! Lua script, which runs the binary under test. Dovecot runs inside the cached trixie root of
//! `scripts/dovecot24-root.sh` (see tests/e2e/dovecot24.rs); slapd and MariaDB are the shared
//! throwaway servers. Clients speak IMAP and POP3 over TCP; `doveadm user` runs the userdb.
//!
//! Every test starts its own Dovecot (one config file per instance) and has its own domain,
//! LDAP subtree and database.

mod common;
mod e2e;

/// Required by tests/e2e/dovecot.rs; its shared Dovecot 2.3 is never started here.
const E2E_AUTH: e2e::dovecot::Auth = e2e::dovecot::Auth::Lua;

use common::{BlackHole, Mailbox, dead_port};
use e2e::clients::{imap_command, imap_login, pop3_login};
use e2e::dovecot24::Dovecot24;
use e2e::{STAFF_QUOTA, Site, field};
use std::path::Path;
use std::time::Duration;

const FAILED: &str = "NO [AUTHENTICATIONFAILED] Authentication failed.";
const TEMPFAIL: &str = "NO [UNAVAILABLE] Temporary authentication failure.";
const POP3_FAILED: &str = "-ERR [AUTH] Authentication failed.";

/// A Dovecot 2.4 named `tag` (passdb chain: the snippet, then `extra`, which may read `files`)
/// and the site (domain `<tag>.example.org`) whose config it reads.
fn setup_with(tag: &str, extra: &str, files: &[(&str, &str)]) -> (Dovecot24, Site) {
    let d = Dovecot24::start(tag, extra, files);
    let site = Site::for_mail(tag, d.mail_uid, d.mail_gid, Path::new(&d.mail));
    d.write_config(&site.env.cfg);
    (d, site)
}

fn setup(tag: &str) -> (Dovecot24, Site) {
    setup_with(tag, "", &[])
}

#[test]
fn imap_first_login_provisions_and_the_second_writes_nothing() {
    let (d, site) = setup("first");
    assert!(
        d.version().starts_with("2.4.1"),
        "Dovecot in the root: {}",
        d.version()
    );
    let addr = site.user("alice", "alice-pw", Some("staff"));
    assert_eq!(site.count("mailbox", &addr), 0);

    let r = imap_login(d.imap_port, &addr, "alice-pw");
    assert!(r.ok(), "first IMAP login: {r:#?}\nlog:\n{}", d.log());
    assert!(
        r.select.as_deref().is_some_and(|s| s.starts_with("OK")),
        "SELECT INBOX (the mail process runs with the userdb's uid/gid/home): {r:#?}\nlog:\n{}",
        d.log()
    );
    assert_eq!(
        site.rows_with(
            "SELECT authsource, quota, active FROM mailbox WHERE username = ?",
            (&addr,)
        ),
        vec![vec![
            Some("ldap".into()),
            Some(STAFF_QUOTA.into()),
            Some("1".into())
        ]],
        "the first login created the mailbox from the Staff template"
    );
    assert_eq!(site.count("quota2", &addr), 1);
    // the program's own log line reached Dovecot's log (its stderr, through the auth-worker)
    d.log_line(&[
        &format!("mailcow-ldap-auth: login user={addr} service=imap"),
        "result=ok",
        "template Staff",
    ]);

    // Later logins write nothing: every row stays as it was, `modified` included.
    let before = site.pin_modified(&addr);
    let r = imap_login(d.imap_port, &addr, "alice-pw");
    assert!(r.ok(), "second IMAP login: {r:#?}\nlog:\n{}", d.log());
    assert_eq!(
        site.snapshot(&addr),
        before,
        "the second login rewrote rows"
    );
    d.log_line(&[&format!("login user={addr}"), "result=ok", "reason=\"ok\""]);
    d.log_line(&["imap-login: Info: Logged in:", &format!("user=<{addr}>")]);
}

#[test]
fn pop3_first_login_provisions() {
    let (d, site) = setup("pop3");
    // employeeType maps to nothing: the default template (Default, POP3 allowed)
    let addr = site.user("bob", "bob-pw", Some("employee"));
    assert_eq!(
        pop3_login(d.pop3_port, &addr, "bob-pw"),
        "+OK Logged in.",
        "log:\n{}",
        d.log()
    );
    assert_eq!(site.count("mailbox", &addr), 1);
    assert_eq!(pop3_login(d.pop3_port, &addr, "bob-pw"), "+OK Logged in.");
}

#[test]
fn wrong_password_and_unknown_user_are_authentication_failures() {
    let (d, site) = setup("wrongpw");
    let addr = site.user("carol", "carol-pw", None);
    let r = imap_login(d.imap_port, &addr, "not-her-password");
    assert_eq!(r.login, FAILED, "{r:#?}\nlog:\n{}", d.log());
    assert_eq!(site.count("mailbox", &addr), 0);
    assert_eq!(pop3_login(d.pop3_port, &addr, "wrong"), POP3_FAILED);
    let r = imap_login(d.imap_port, &site.addr("nobody"), "whatever");
    assert_eq!(r.login, FAILED, "{r:#?}\nlog:\n{}", d.log());
    // Dovecot learnt why: PASSWORD_MISMATCH and USER_UNKNOWN are both "auth failed"
    d.log_line(&["result=rejected", "wrong password"]);
    d.log_line(&["result=rejected", "no such LDAP entry"]);
    d.log_line(&[&format!("user=<{addr}>"), "(auth_failed)"]);
    // and the right password still works (nothing was locked or cached)
    assert!(imap_login(d.imap_port, &addr, "carol-pw").ok());
}

#[test]
fn ldap_down_is_a_temporary_failure() {
    let (d, mut site) = setup("ldapdown");
    let addr = site.user("dave", "dave-pw", None);
    site.env.ldap_at(&["127.0.0.1"], dead_port());
    d.write_config(&site.env.cfg);
    let r = imap_login(d.imap_port, &addr, "dave-pw");
    assert!(
        r.login.starts_with(TEMPFAIL),
        "IMAP with LDAP down: {r:#?}\nlog:\n{}",
        d.log()
    );
    let r = pop3_login(d.pop3_port, &addr, "dave-pw");
    assert!(
        r.starts_with("-ERR [SYS/TEMP] Temporary authentication failure."),
        "POP3 with LDAP down: {r}\nlog:\n{}",
        d.log()
    );
    assert_eq!(site.count("mailbox", &addr), 0);
    d.log_line(&["result=tempfail", "all LDAP hosts unreachable"]);
    d.log_line(&["pop3-login", &format!("user=<{addr}>"), "(temp_fail)"]);
}

#[test]
fn disabled_protocol_is_refused_without_ldap_traffic() {
    let (d, mut site) = setup("nopop");
    let addr = site.addr("frank");
    site.env
        .db
        .add_mailbox(&Mailbox::new(&addr).attr("pop3_access", "0"));
    let ldap = BlackHole::new();
    site.env.ldap_at(&["127.0.0.1"], ldap.port());
    d.write_config(&site.env.cfg);
    assert_eq!(
        pop3_login(d.pop3_port, &addr, "frank-pw"),
        POP3_FAILED,
        "log:\n{}",
        d.log()
    );
    assert_eq!(ldap.connections(), 0, "refused before any LDAP traffic");
    // USER_DISABLED reached Dovecot
    d.log_line(&["pop3-login", &format!("user=<{addr}>"), "(user_disabled)"]);
}

#[test]
fn mailcow_mailbox_logs_in_through_the_next_passdb_without_ldap() {
    // mailcow's own passwords: a passwd-file stands in for Dovecot's SQL passdb after ours
    let next = "passdb passwd-file {\n  passwd_file_path = {dir}/passwd\n}\n";
    let addr = "gina@mcsource.example.org";
    let passwd = format!("{addr}:{{PLAIN}}gina-pw\n");
    let (d, mut site) = setup_with("mcsource", next, &[("passwd", &passwd)]);
    assert_eq!(site.addr("gina"), addr);
    site.env
        .db
        .add_mailbox(&Mailbox::new(addr).authsource("mailcow").quota(5 << 20));
    let ldap = BlackHole::new();
    site.env.ldap_at(&["127.0.0.1"], ldap.port());
    d.write_config(&site.env.cfg);

    let r = imap_login(d.imap_port, addr, "gina-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", d.log());
    assert!(
        r.select.as_deref().is_some_and(|s| s.starts_with("OK")),
        "{r:#?}\nlog:\n{}",
        d.log()
    );
    let r = imap_login(d.imap_port, addr, "wrong");
    assert_eq!(r.login, FAILED, "{r:#?}\nlog:\n{}", d.log());
    assert_eq!(
        ldap.connections(),
        0,
        "a mailcow mailbox never reaches LDAP"
    );
    d.log_line(&[&format!("login user={addr}"), "not LDAP-backed"]);
}

#[test]
fn getquotaroot_shows_the_template_quota() {
    let (d, site) = setup("quota");
    let addr = site.user("heidi", "heidi-pw", Some("staff"));
    let lines = imap_command(d.imap_port, &addr, "heidi-pw", "GETQUOTAROOT INBOX");
    let kib = STAFF_QUOTA.parse::<u64>().unwrap() / 1024;
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("S: * QUOTA ") && l.ends_with(&format!("(STORAGE 0 {kib})"))),
        "GETQUOTAROOT: {lines:#?}\nlog:\n{}",
        d.log()
    );
}

#[test]
fn doveadm_user_found_unknown_and_tempfail() {
    let (d, mut site) = setup("userdb");
    let addr = site.user("ivan", "ivan-pw", Some("staff"));
    // in LDAP only, never logged in: the lookup never asks LDAP → unknown
    let (code, _, out) = d.user(&addr);
    assert_eq!(
        code,
        Some(67),
        "before provisioning:\n{out}\nlog:\n{}",
        d.log()
    );

    assert!(imap_login(d.imap_port, &addr, "ivan-pw").ok());
    let (code, fields, out) = d.user(&addr);
    assert_eq!(code, Some(0), "{out}\nlog:\n{}", d.log());
    assert_eq!(field(&fields, "uid", &out), d.mail_uid.to_string());
    assert_eq!(field(&fields, "gid", &out), d.mail_gid.to_string());
    assert_eq!(
        field(&fields, "home", &out),
        format!("{}/{}/ivan", d.mail, site.domain)
    );
    assert_eq!(field(&fields, "quota_storage_size", &out), STAFF_QUOTA);

    let (code, _, out) = d.user(&site.addr("nobody"));
    assert_eq!(code, Some(67), "{out}");

    site.env.cfg["database"]["port"] = dead_port().into();
    d.write_config(&site.env.cfg);
    let (code, _, out) = d.user(&addr);
    assert_eq!(code, Some(75), "database down:\n{out}\nlog:\n{}", d.log());
}

#[test]
fn resource_mailbox_is_found_by_doveadm_user_and_cannot_log_in() {
    let (d, site) = setup("resource");
    let room = site.addr("room-1");
    site.env
        .db
        .add_mailbox(&Mailbox::new(&room).kind("location"));
    let (code, fields, out) = d.user(&room);
    assert_eq!(code, Some(0), "{out}\nlog:\n{}", d.log());
    assert_eq!(
        field(&fields, "home", &out),
        format!("{}/{}/room-1", d.mail, site.domain)
    );
    let r = imap_login(d.imap_port, &room, "any");
    assert_eq!(r.login, FAILED, "{r:#?}\nlog:\n{}", d.log());
    d.log_line(&[
        &format!("login user={room}"),
        "result=rejected",
        "resource mailbox",
    ]);
}

#[test]
fn password_with_shell_and_quote_characters_logs_in() {
    let (d, site) = setup("quoting");
    let pw = "a'b\"c $(touch /tmp/pwned) `id` 100% ünï";
    let addr = site.user("judy", pw, None);
    let r = imap_login(d.imap_port, &addr, pw);
    assert!(r.ok(), "{r:#?}\nlog:\n{}", d.log());
    assert!(!Path::new("/tmp/pwned").exists());
    assert!(!d.root_path("tmp/pwned").exists());
}

/// Every `/proc/<pid>/{cmdline,environ}` that contains `needle`.
fn procs_showing(needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        for file in ["cmdline", "environ"] {
            let p = e.path().join(file);
            if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn the_password_is_in_no_process_arguments_or_environment_during_a_login() {
    let (d, mut site) = setup("procfs");
    let pw = "S3cret-in-flight-\u{e9}-7f2c";
    let addr = site.user("kim", pw, None);
    // LDAP that accepts the service bind and never answers the search: the login hangs until
    // the program's LDAP timeout (1 s here) while the program runs
    let slow = common::FirstRequestProxy::start(
        "127.0.0.1:0",
        ([127, 0, 0, 1], common::slapd().port).into(),
    )
    .expect("proxy");
    site.env.ldap_at(&["127.0.0.1"], slow.addr.port());
    site.env.cfg["ldap"]["timeout_ms"] = 1000.into();
    d.write_config(&site.env.cfg);
    let port = d.imap_port;
    let login = std::thread::spawn(move || imap_login(port, &addr, pw));
    let mut seen_running = false;
    while !login.is_finished() {
        let hits = procs_showing(pw.as_bytes());
        assert!(hits.is_empty(), "the password shows in {hits:?}");
        seen_running |= !procs_showing(b"dovecot-lua").is_empty();
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = login.join().expect("login thread");
    assert!(r.login.starts_with(TEMPFAIL), "{r:#?}\nlog:\n{}", d.log());
    assert!(
        seen_running,
        "never saw the program run (the check above proved nothing)"
    );
}

/// The snippet's url-mode `lua_settings` (lua-socket in the trixie root) → a real `serve`.
#[test]
fn url_mode_through_serve_every_result_and_serve_restarts() {
    use common::serve::{Serve, private_file};
    use e2e::dovecot24::Transport;
    use serde_json::json;
    // The site first (for the config serve reads), its Dovecot named after serve's address.
    let mut site = Site::for_mail("url24", 8, 8, Path::new("/nowhere"));
    let mut serve = Serve::start(&site.env.cfg);
    let url = format!("http://{}/", serve.addr);
    let d = Dovecot24::start_with(
        "url24",
        "",
        &[],
        Transport::Url {
            url: &url,
            token: &serve.token,
        },
    );
    site.env.cfg["dovecot"]["userdb_fields"] = json!({
        "uid": d.mail_uid.to_string(),
        "gid": d.mail_gid.to_string(),
        "home": format!("{}/{{domain}}/{{local_part}}", d.mail),
    });
    site.env.cfg["serve"] = json!({"listen": serve.addr, "token_file": serve.dir.join("token")});
    let rewrite = |serve: &Serve, cfg: &serde_json::Value| {
        private_file(&serve.config_path, &serde_norway::to_string(cfg).unwrap());
    };
    rewrite(&serve, &site.env.cfg);
    serve.signal(libc::SIGHUP);
    serve.wait_for_log("configuration reloaded");

    let addr = site.user("ulla", "ulla-pw", Some("staff"));
    let r = imap_login(d.imap_port, &addr, "ulla-pw");
    r.assert_selected(&format!(
        "serve:
{}
dovecot:
{}",
        serve.log(),
        d.log()
    ));
    assert!(serve.log().contains("mailbox created from template Staff"));
    assert_eq!(imap_login(d.imap_port, &addr, "wrong").login, FAILED);
    assert_eq!(
        imap_login(d.imap_port, &site.addr("nobody"), "pw").login,
        FAILED
    );
    // Staff: POP3 disabled
    assert_eq!(pop3_login(d.pop3_port, &addr, "ulla-pw"), POP3_FAILED);
    assert!(serve.log().contains("service pop3 disabled"));
    let (code, fields, out) = d.user(&addr);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(field(&fields, "quota_storage_size", &out), STAFF_QUOTA);

    serve.kill();
    let r = imap_login(d.imap_port, &addr, "ulla-pw");
    assert!(r.login.starts_with(TEMPFAIL), "{r:#?}\nlog:\n{}", d.log());
    serve.restart();
    let r = imap_login(d.imap_port, &addr, "ulla-pw");
    assert!(r.ok(), "{r:#?}\nserve:\n{}", serve.log());
    assert!(!serve.log().contains("ulla-pw"));
}

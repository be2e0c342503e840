//! End to end through Dovecot 2.3's Lua passdb/userdb (package dovecot-auth-lua): a real
//! Dovecot whose passdb/userdb are the blocks of contrib/dovecot/2.3/10-auth-mailcow-ldap-lua.conf
//! running contrib/dovecot/lua/mailcow-ldap-auth.lua (only paths replaced), with a
//! passwd-file passdb after it for mailboxes whose authsource is `mailcow`. Clients speak IMAP
//! and POP3 over TCP; `doveadm user` runs the userdb.
//!
//! One Dovecot per test binary; every test has its own mail domain, which selects its own
//! config file (`%Ld.yml`, expanded by the script), LDAP subtree and database.

mod common;
mod e2e;

/// The Dovecot of this test binary authenticates through the Lua snippet.
const E2E_AUTH: e2e::dovecot::Auth = e2e::dovecot::Auth::Lua;

use common::{BlackHole, FirstRequestProxy, Mailbox, dead_port, slapd};
use e2e::clients::{imap_command, imap_login, pop3_login};
use e2e::dovecot::dovecot;
use e2e::{STAFF_QUOTA, Site, doveadm_user, log_line};
use std::time::Duration;

fn field<'a>(fields: &'a [(String, String)], key: &str, out: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key}:\n{out}"))
}

/// How many `mailbox` rows `addr` has (0 or 1).
fn mailbox_rows(site: &Site, addr: &str) -> usize {
    let snapshot = site.snapshot(addr);
    let (_, rows) = snapshot
        .iter()
        .find(|(table, _)| table == "mailbox")
        .expect("snapshot has the mailbox table");
    rows.len()
}

/// Points the site's LDAP at a black hole (counting connections) and returns it.
fn ldap_black_hole(site: &mut Site) -> BlackHole {
    let bh = BlackHole::new();
    site.env.ldap_at(&["127.0.0.1"], bh.port());
    site.write_config();
    bh
}

#[test]
fn imap_first_login_provisions_then_nothing_is_rewritten_and_quota_shows() {
    let site = Site::new("lua-imap");
    let d = dovecot();
    let addr = site.user("anna", "anna-pw", Some("staff"));
    assert_eq!(mailbox_rows(&site, &addr), 0);

    let r = imap_login(d.imap_port, &addr, "anna-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&addr));
    assert!(
        r.select.as_deref().is_some_and(|s| s.starts_with("OK")),
        "{r:#?}"
    );
    assert_eq!(mailbox_rows(&site, &addr), 1);
    log_line(&[&format!("login user={addr}"), "result=ok", "created"]);

    let before = site.snapshot(&addr);
    let r = imap_login(d.imap_port, &addr, "anna-pw");
    assert!(r.ok(), "{r:#?}");
    assert_eq!(site.snapshot(&addr), before, "second login rewrote rows");

    // Staff: 1 GiB, in IMAP's KiB
    let lines = imap_command(d.imap_port, &addr, "anna-pw", "GETQUOTAROOT INBOX");
    let kib = STAFF_QUOTA.parse::<u64>().unwrap() / 1024;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("* QUOTA ") && l.contains(&format!("STORAGE 0 {kib})"))),
        "{lines:#?}"
    );
}

#[test]
fn pop3_login_and_a_disabled_protocol_is_refused_without_ldap() {
    let mut site = Site::new("lua-pop3");
    let d = dovecot();
    // no employeeType: the Default template, POP3 allowed
    let bert = site.user("bert", "bert-pw", None);
    assert_eq!(pop3_login(d.pop3_port, &bert, "bert-pw"), "+OK Logged in.");
    // Staff: POP3 disabled
    let cleo = site.user("cleo", "cleo-pw", Some("staff"));
    assert!(imap_login(d.imap_port, &cleo, "cleo-pw").ok());

    let bh = ldap_black_hole(&mut site);
    let r = pop3_login(d.pop3_port, &cleo, "cleo-pw");
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    assert_eq!(
        bh.connections(),
        0,
        "LDAP contacted for a disabled protocol"
    );
    log_line(&[&format!("user={cleo}"), "service=pop3", "disabled"]);
}

#[test]
fn wrong_password_and_unknown_user_are_authentication_failures() {
    let site = Site::new("lua-wrong");
    let d = dovecot();
    let addr = site.user("dora", "dora-pw", Some("staff"));
    let r = imap_login(d.imap_port, &addr, "not-her-password");
    assert!(r.login.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:#?}");
    assert_eq!(mailbox_rows(&site, &addr), 0);
    let r = imap_login(d.imap_port, &site.addr("nobody"), "pw");
    assert!(r.login.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:#?}");
    let r = pop3_login(d.pop3_port, &addr, "not-her-password");
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
}

#[test]
fn ldap_down_is_a_temporary_failure() {
    let mut site = Site::new("lua-down");
    let d = dovecot();
    let addr = site.user("emil", "emil-pw", Some("staff"));
    site.env.ldap_at(&["127.0.0.1"], dead_port());
    site.write_config();
    let r = imap_login(d.imap_port, &addr, "emil-pw");
    assert!(r.login.starts_with("NO [UNAVAILABLE]"), "{r:#?}");
    let r = pop3_login(d.pop3_port, &addr, "emil-pw");
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
}

#[test]
fn mailcow_authsource_logs_in_through_the_next_passdb_without_ldap() {
    let mut site = Site::new("lua-next");
    let d = dovecot();
    let addr = site.addr("fred");
    site.env
        .db
        .add_mailbox(&Mailbox::new(&addr).authsource("mailcow"));
    d.add_passwd(
        &addr,
        "fred-sql-pw",
        &[
            ("uid", d.mail_uid.to_string()),
            ("gid", d.mail_gid.to_string()),
            ("home", format!("{}/{}/fred", d.mail.display(), site.domain)),
        ],
    );
    let bh = ldap_black_hole(&mut site);
    let r = imap_login(d.imap_port, &addr, "fred-sql-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&addr));
    let r = imap_login(d.imap_port, &addr, "wrong");
    assert!(r.login.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:#?}");
    assert_eq!(bh.connections(), 0, "LDAP contacted for a mailcow mailbox");
    log_line(&[&format!("user={addr}"), "not LDAP-backed"]);
}

#[test]
fn doveadm_user_found_unknown_tempfail_and_resource_mailboxes() {
    let mut site = Site::new("lua-userdb");
    let d = dovecot();
    let addr = site.user("gina", "gina-pw", Some("staff"));
    assert!(imap_login(d.imap_port, &addr, "gina-pw").ok());
    let room = site.addr("room");
    site.env
        .db
        .add_mailbox(&Mailbox::new(&room).kind("location"));

    let (code, fields, out) = doveadm_user(&addr);
    assert_eq!(code, Some(0), "{out}\nlog:\n{}", site.log(&addr));
    assert_eq!(field(&fields, "uid", &out), d.mail_uid.to_string());
    assert_eq!(
        field(&fields, "home", &out),
        format!("{}/{}/gina", d.mail.display(), site.domain)
    );
    assert_eq!(
        field(&fields, "quota_rule", &out),
        format!("*:bytes={STAFF_QUOTA}")
    );

    let (code, fields, out) = doveadm_user(&room);
    assert_eq!(code, Some(0), "resource mailbox: {out}");
    assert_eq!(
        field(&fields, "home", &out),
        format!("{}/{}/room", d.mail.display(), site.domain)
    );
    // ... but it cannot log in
    let r = imap_login(d.imap_port, &room, "any");
    assert!(r.login.starts_with("NO [AUTHENTICATIONFAILED]"), "{r:#?}");

    let (code, _, out) = doveadm_user(&site.addr("nobody"));
    assert_eq!(code, Some(67), "{out}");

    site.env.cfg["database"]["port"] = serde_json::json!(dead_port());
    site.write_config();
    let (code, _, out) = doveadm_user(&addr);
    assert_eq!(code, Some(75), "{out}");
}

#[test]
fn a_password_full_of_shell_and_format_characters_logs_in() {
    let site = Site::new("lua-chars");
    let d = dovecot();
    let marker = common::process::scratch().join("lua-chars-ran");
    let password = format!(
        "a'b\"c $(touch {m}) `touch {m}` %u %{{user}} ü€ \\ end",
        m = marker.display()
    );
    let addr = site.user("hugo", &password, None);
    let r = pop3_login(d.pop3_port, &addr, &password);
    assert_eq!(r, "+OK Logged in.", "log:\n{}", site.log(&addr));
    let r = imap_login(d.imap_port, &addr, &password);
    assert!(r.ok(), "{r:#?}");
    assert!(!marker.exists(), "a command in the password ran");
}

/// What a look at every process found.
#[derive(Default)]
struct ProcScan {
    /// /proc/<pid>/cmdline and environ files that hold the needle.
    hits: Vec<String>,
    /// (/proc/<pid>, argv[0]) of every process whose command line names `dovecot-lua`.
    logins: Vec<(std::path::PathBuf, String)>,
}

fn argv0(cmdline: &[u8]) -> String {
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(first).into_owned()
}

fn scan_proc(needle: &[u8]) -> ProcScan {
    let mut scan = ProcScan::default();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let path = entry.path();
        if !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        for file in ["cmdline", "environ"] {
            let Ok(bytes) = std::fs::read(path.join(file)) else {
                continue;
            };
            if file == "cmdline" && bytes.windows(11).any(|w| w == b"dovecot-lua") {
                scan.logins.push((path.clone(), argv0(&bytes)));
            }
            if bytes.windows(needle.len()).any(|w| w == needle) {
                scan.hits.push(format!("{}/{file}", path.display()));
            }
        }
    }
    scan
}

#[test]
fn the_password_is_in_no_command_line_or_environment_while_a_login_runs() {
    let mut site = Site::new("lua-proc");
    let d = dovecot();
    let password = "Proc-Secret-7f3a9c";
    let addr = site.user("ines", password, Some("staff"));
    // LDAP that takes the service bind and never answers the search: the login hangs until
    // ldap.timeout_ms while this test looks at every process.
    let slapd_addr = format!("127.0.0.1:{}", slapd().port).parse().unwrap();
    let proxy = FirstRequestProxy::start("127.0.0.1:0", slapd_addr).expect("proxy");
    site.env.ldap_at(&["127.0.0.1"], proxy.addr.port());
    site.write_config();

    let port = d.imap_port;
    let login = {
        let addr = addr.clone();
        std::thread::spawn(move || imap_login(port, &addr, password))
    };
    let mut saw_login = false;
    while !login.is_finished() {
        let scan = scan_proc(password.as_bytes());
        assert!(scan.hits.is_empty(), "password visible in {:?}", scan.hits);
        // one process per login: the shell replaces itself with the program (caught between
        // fork and exec, it must be the program a moment later)
        let program = d.bin.to_str().unwrap();
        for (pid, first) in &scan.logins {
            if first != program {
                std::thread::sleep(Duration::from_millis(200));
                if let Ok(cmdline) = std::fs::read(pid.join("cmdline")) {
                    let now = argv0(&cmdline);
                    assert!(
                        cmdline.is_empty() || now == program,
                        "{} stays {now:?} next to the program",
                        pid.display()
                    );
                }
            }
        }
        saw_login |= !scan.logins.is_empty();
    }
    let r = login.join().expect("login thread");
    assert!(r.login.starts_with("NO [UNAVAILABLE]"), "{r:#?}");
    assert!(saw_login, "never saw the dovecot-lua process to check");
}

#[test]
fn dovecot_runs_the_shipped_lua_snippet_and_script() {
    let d = dovecot();
    let conf = d.doveconf();
    let script = format!(
        "args = file={} blocking=yes",
        d.dir.join("share/mailcow-ldap-auth.lua").display()
    );
    for setting in [
        "import_environment = ",
        "MAILCOW_LDAP_AUTH_DOVECOT=2.3",
        "service auth-worker {\n  user = $default_internal_user\n}",
    ] {
        assert!(
            conf.contains(setting),
            "doveconf -n lacks {setting:?}:\n{conf}"
        );
    }
    // passdbs and userdbs in this order
    d.assert_doveconf_in_order(&[
        "passdb {",
        &script,
        "driver = lua",
        "passdb {",
        "driver = passwd-file",
        "userdb {",
        "driver = prefetch",
        "userdb {",
        &script,
        "driver = lua",
    ]);
    d.assert_snippet_is_shipped();
}

#[test]
fn app_password_logs_in_without_ldap_and_sasl_log_has_the_client_ip() {
    let mut site = Site::new("lua-apppw");
    let d = dovecot();
    let addr = site.user("abe", "abe-pw", Some("staff"));
    let r = imap_login(d.imap_port, &addr, "abe-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&addr));
    let (id, app_password) = site.add_app_password(&addr);
    let bh = ldap_black_hole(&mut site);
    let r = imap_login(d.imap_port, &addr, &app_password);
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&addr));
    assert_eq!(bh.connections(), 0, "an app password login contacted LDAP");
    assert_eq!(
        site.sasl_log(&addr),
        vec![vec![
            Some("imap".to_owned()),
            Some("127.0.0.1".to_owned()),
            Some(id)
        ]]
    );
}

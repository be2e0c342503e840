//! End to end (issue 4): a real Dovecot 2.3 whose passdb is `mailcow-ldap-auth checkpassword`
//! and whose userdb is prefetch + the binary in lookup mode (the blocks of
//! contrib/dovecot/2.3/10-auth-mailcow-ldap.conf), a real Postfix using Dovecot SASL (the lines of
//! contrib/postfix/main.cf.snippet), a throwaway slapd and MariaDB with the real mailcow
//! schema. Clients speak IMAP, POP3, ManageSieve and SMTP over TCP; local delivery runs
//! dovecot-lda (a userdb lookup through the binary in lookup mode).
//!
//! One Dovecot (and one Postfix) per test binary; every test has its own mail domain, which
//! selects its own config file, LDAP subtree and database.

mod common;
mod e2e;

/// The Dovecot of this test binary authenticates through the checkpassword snippet.
const E2E_AUTH: e2e::dovecot::Auth = e2e::dovecot::Auth::Checkpassword;

use e2e::clients::{imap_login, pop3_login, sieve_login, smtp_auth};
use e2e::dovecot::dovecot;
use e2e::postfix::postfix;
use e2e::{STAFF_QUOTA, Site, add_template, doveadm_user, log_line};

const STAFF_HASH: &str = "9e4b2b72296314dd5e5dd16968a9dfac119e2246";

fn one(rows: Vec<Vec<Option<String>>>) -> Vec<Option<String>> {
    assert_eq!(rows.len(), 1, "expected exactly one row, got {rows:?}");
    rows.into_iter().next().unwrap()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

#[test]
fn imap_first_login_provisions_and_later_logins_rewrite_nothing() {
    let site = Site::new("first");
    let d = dovecot();
    let addr = site.user("alice", "alice-pw", Some("staff"));
    assert_eq!(site.count("mailbox", &addr), 0);

    let r = imap_login(d.imap_port, &addr, "alice-pw");
    assert!(
        r.ok(),
        "first IMAP login: {r:#?}\nlog:\n{}",
        site.log(&addr)
    );
    assert!(
        r.select.as_deref().is_some_and(|s| s.starts_with("OK")),
        "SELECT INBOX after login (mail process uid/gid/home): {r:#?}\nlog:\n{}",
        site.log(&addr)
    );

    // The mailbox and its side rows now exist, from the mapped template (Staff).
    let row = one(site.rows_with(
        "SELECT authsource, quota, active, name, local_part, domain, password, \
         JSON_VALUE(attributes, '$.pop3_access'), JSON_VALUE(attributes, '$.attribute_hash') \
         FROM mailbox WHERE username = ?",
        (&addr,),
    ));
    assert_eq!(
        row,
        vec![
            s("ldap"),
            s(STAFF_QUOTA),
            s("1"),
            s("Alice Example"),
            s("alice"),
            Some(site.domain.clone()),
            s(""),
            s("0"),
            s(STAFF_HASH)
        ]
    );
    assert_eq!(
        one(site.rows_with("SELECT goto, active FROM alias WHERE address = ?", (&addr,))),
        vec![Some(addr.clone()), s("1")]
    );
    for table in ["quota2", "quota2replica", "user_acl", "_sogo_static_view"] {
        assert_eq!(site.count(table, &addr), 1, "{table} row for {addr}");
    }
    assert_eq!(
        site.rows_with(
            "SELECT tag_name FROM tags_mailbox WHERE username = ?",
            (&addr,)
        ),
        vec![vec![s("staff")]]
    );
    // The helper's own log line reached Dovecot's log (stderr → "auth: Error: ...").
    log_line(&[
        &format!("mailcow-ldap-auth: login user={addr}"),
        "result=ok",
        "template Staff",
    ]);

    // Later logins write nothing: every row stays as it was, `modified` included.
    let before = site.pin_modified(&addr);
    let r = imap_login(d.imap_port, &addr, "alice-pw");
    assert!(
        r.ok(),
        "second IMAP login: {r:#?}\nlog:\n{}",
        site.log(&addr)
    );
    // the login name as typed in another case: same mailbox, Dovecot renamed to the canonical one
    let upper = addr.to_uppercase();
    let r = imap_login(d.imap_port, &upper, "alice-pw");
    assert!(
        r.ok(),
        "upper-case IMAP login: {r:#?}\nlog:\n{}",
        site.log(&addr)
    );
    assert_eq!(site.snapshot(&addr), before, "a later login rewrote rows");
    assert_eq!(
        one(site.rows_with("SELECT modified FROM mailbox WHERE username = ?", (&addr,))),
        vec![s(e2e::PINNED)]
    );
    log_line(&[&format!("Login: user=<{addr}>"), "imap-login"]);
}

#[test]
fn pop3_and_managesieve_logins() {
    let site = Site::new("protos");
    let d = dovecot();
    // employeeType "employee" maps to nothing: the default template (Default) creates it
    let addr = site.user("bob", "bob-pw", Some("employee"));

    let r = pop3_login(d.pop3_port, &addr, "bob-pw");
    assert_eq!(
        r,
        "+OK Logged in.",
        "POP3 first login\nlog:\n{}",
        site.log(&addr)
    );
    assert_eq!(
        one(site.rows_with(
            "SELECT quota, JSON_VALUE(attributes, '$.pop3_access') FROM mailbox WHERE username = ?",
            (&addr,)
        )),
        vec![s("0"), s("1")],
        "created from Default (quota 0, POP3 allowed)"
    );
    let r = sieve_login(d.sieve_port, &addr, "bob-pw");
    assert_eq!(
        r,
        "OK \"Logged in.\"",
        "ManageSieve\nlog:\n{}",
        site.log(&addr)
    );
    let r = pop3_login(d.pop3_port, &addr, "bob-pw");
    assert_eq!(
        r,
        "+OK Logged in.",
        "POP3 second login\nlog:\n{}",
        site.log(&addr)
    );
    assert_eq!(site.count("mailbox", &addr), 1);
    log_line(&[&format!("login user={addr}"), "service=sieve", "result=ok"]);
    log_line(&[&format!("login user={addr}"), "service=pop3", "result=ok"]);
}

#[test]
fn wrong_password_and_unknown_user_are_authentication_failures() {
    let site = Site::new("wrongpw");
    let d = dovecot();
    let addr = site.user("carol", "carol-pw", Some("staff"));

    // before provisioning: refused and nothing created
    let r = imap_login(d.imap_port, &addr, "not-her-password");
    assert_eq!(
        r.login,
        "NO [AUTHENTICATIONFAILED] Authentication failed.",
        "{r:#?}\nlog:\n{}",
        site.log(&addr)
    );
    assert_eq!(
        site.count("mailbox", &addr),
        0,
        "wrong password created a mailbox"
    );
    log_line(&[
        &format!("login user={addr}"),
        "result=rejected",
        "wrong password",
    ]);

    let r = imap_login(d.imap_port, &addr, "carol-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&addr));

    // existing mailbox in every protocol, and an unknown user (no LDAP entry, no mailbox);
    // in parallel: each failure is answered after Dovecot's 0.5 s flush timer
    let nobody = site.addr("nobody");
    let (imap, pop3, sieve, imap_nobody, pop3_nobody) = std::thread::scope(|sc| {
        let imap = sc.spawn(|| imap_login(d.imap_port, &addr, "wrong"));
        let pop3 = sc.spawn(|| pop3_login(d.pop3_port, &addr, "wrong"));
        let sieve = sc.spawn(|| sieve_login(d.sieve_port, &addr, "wrong"));
        let imap_nobody = sc.spawn(|| imap_login(d.imap_port, &nobody, "whatever"));
        let pop3_nobody = sc.spawn(|| pop3_login(d.pop3_port, &nobody, "whatever"));
        (
            imap.join().unwrap(),
            pop3.join().unwrap(),
            sieve.join().unwrap(),
            imap_nobody.join().unwrap(),
            pop3_nobody.join().unwrap(),
        )
    });
    let failed = "NO [AUTHENTICATIONFAILED] Authentication failed.";
    assert_eq!(imap.login, failed, "{imap:#?}");
    assert_eq!(pop3, "-ERR [AUTH] Authentication failed.");
    assert_eq!(sieve, "NO \"Authentication failed.\"");
    assert_eq!(imap_nobody.login, failed, "{imap_nobody:#?}");
    assert_eq!(pop3_nobody, "-ERR [AUTH] Authentication failed.");
    log_line(&[
        &format!("login user={nobody}"),
        "result=rejected",
        "no such LDAP entry",
    ]);
    assert_eq!(site.count("mailbox", &nobody), 0);
}

#[test]
fn ldap_outage_is_a_temporary_failure_never_a_wrong_password() {
    let mut site = Site::new("outage");
    let d = dovecot();
    // Default template (all protocols allowed): every refusal below must come from the outage
    let addr = site.user("dave", "dave-pw", None);
    let newcomer = site.user("erin", "erin-pw", None);
    let r = imap_login(d.imap_port, &addr, "dave-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&addr));

    // LDAP goes away: this domain's config now points at a port where nothing listens.
    let live_port = site.env.cfg["ldap"]["port"].clone();
    site.env.ldap_at(&["127.0.0.1"], crate::common::dead_port());
    site.write_config();

    // both users, all three protocols, in parallel (each failure waits 0.5 s in Dovecot)
    std::thread::scope(|sc| {
        for (who, pw) in [(&addr, "dave-pw"), (&newcomer, "erin-pw")] {
            let site = &site;
            sc.spawn(move || {
                let r = imap_login(d.imap_port, who, pw);
                assert!(
                    r.login
                        .starts_with("NO [UNAVAILABLE] Temporary authentication failure."),
                    "IMAP during LDAP outage ({who}): {r:#?}\nlog:\n{}",
                    site.log(who)
                );
            });
            sc.spawn(move || {
                let r = pop3_login(d.pop3_port, who, pw);
                assert!(
                    r.starts_with("-ERR [SYS/TEMP] Temporary authentication failure."),
                    "POP3 during LDAP outage ({who}): {r}\nlog:\n{}",
                    site.log(who)
                );
            });
            sc.spawn(move || {
                let r = sieve_login(d.sieve_port, who, pw);
                assert!(
                    r.starts_with("NO (TRYLATER) \"Temporary authentication failure."),
                    "ManageSieve during LDAP outage ({who}): {r}\nlog:\n{}",
                    site.log(who)
                );
            });
        }
    });
    let l = log_line(&[&format!("login user={addr}"), "result=tempfail"]);
    assert!(
        l.contains("unreachable"),
        "reason should name the unreachable host: {l}"
    );
    assert_eq!(site.count("mailbox", &newcomer), 0);

    // LDAP is back: logins work again, the newcomer is provisioned now.
    site.env.cfg["ldap"]["port"] = live_port;
    site.write_config();
    let r = imap_login(d.imap_port, &addr, "dave-pw");
    assert!(
        r.ok(),
        "after the outage: {r:#?}\nlog:\n{}",
        site.log(&addr)
    );
    let r = imap_login(d.imap_port, &newcomer, "erin-pw");
    assert!(
        r.ok(),
        "after the outage: {r:#?}\nlog:\n{}",
        site.log(&newcomer)
    );
    assert_eq!(site.count("mailbox", &newcomer), 1);
}

#[test]
fn template_without_pop3_allows_imap_and_refuses_pop3() {
    let site = Site::new("nopop");
    let d = dovecot();
    // Staff: pop3_access 0
    let first_via_pop3 = site.user("frank", "frank-pw", Some("staff"));
    let via_imap = site.user("grace", "grace-pw", Some("staff"));

    // first login over POP3: the mailbox is created from the template, the POP3 login refused
    let r = pop3_login(d.pop3_port, &first_via_pop3, "frank-pw");
    assert_eq!(
        r,
        "-ERR [AUTH] Authentication failed.",
        "log:\n{}",
        site.log(&first_via_pop3)
    );
    assert_eq!(site.count("mailbox", &first_via_pop3), 1);
    let r = imap_login(d.imap_port, &first_via_pop3, "frank-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&first_via_pop3));

    let r = imap_login(d.imap_port, &via_imap, "grace-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&via_imap));
    let r = pop3_login(d.pop3_port, &via_imap, "grace-pw");
    assert_eq!(
        r,
        "-ERR [AUTH] Authentication failed.",
        "log:\n{}",
        site.log(&via_imap)
    );
    log_line(&[
        &format!("login user={via_imap}"),
        "service=pop3",
        "result=rejected",
        "service pop3 disabled",
    ]);
    let r = sieve_login(d.sieve_port, &via_imap, "grace-pw");
    assert_eq!(r, "OK \"Logged in.\"", "sieve_access 1 in Staff");
}

#[test]
fn doveadm_user_resolves_through_the_lookup_mode() {
    let site = Site::new("userdb");
    let d = dovecot();
    let addr = site.user("heidi", "heidi-pw", Some("staff"));
    let pending = site.user("ivan", "ivan-pw", Some("staff"));

    // in LDAP only, never logged in: lookup mode never contacts LDAP → unknown
    let (code, _, out) = doveadm_user(&addr);
    assert_eq!(code, Some(67), "doveadm user before provisioning:\n{out}");

    let r = imap_login(d.imap_port, &addr, "heidi-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&addr));

    let (code, fields, out) = doveadm_user(&addr);
    assert_eq!(
        code,
        Some(0),
        "doveadm user:\n{out}\nlog:\n{}",
        site.log(&addr)
    );
    let get = |k: &str| {
        fields
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("doveadm user prints no {k}:\n{out}"))
    };
    assert_eq!(get("uid"), d.mail_uid.to_string());
    assert_eq!(get("gid"), d.mail_gid.to_string());
    assert_eq!(
        get("home"),
        format!("{}/{}/heidi", d.mail.display(), site.domain)
    );
    assert_eq!(get("quota_rule"), format!("*:bytes={STAFF_QUOTA}"));
    log_line(&[&format!("lookup user={addr}"), "result=found"]);

    for unknown in [site.addr("nobody"), pending] {
        let (code, _, out) = doveadm_user(&unknown);
        assert_eq!(code, Some(67), "doveadm user {unknown}:\n{out}");
    }
}

#[test]
fn local_delivery_resolves_a_provisioned_mailbox() {
    let site = Site::new("lda");
    let d = dovecot();
    let addr = site.user("judy", "judy-pw", None);
    let stranger = site.user("mallory", "mallory-pw", None);

    // LDAP-only user without a mailbox: the userdb lookup does not know it (EX_NOUSER)
    let out = d.lda(&stranger, "nope");
    assert_eq!(
        out.status.code(),
        Some(67),
        "dovecot-lda for a user without mailbox: {out:?}"
    );

    let login = imap_login(d.imap_port, &addr, "judy-pw");
    assert!(login.ok(), "{login:#?}\nlog:\n{}", site.log(&addr));
    let out = d.lda(&addr, "e2e delivery");
    assert!(
        out.status.success(),
        "dovecot-lda: {out:?}\nlog:\n{}",
        site.log(&addr)
    );
    let new = d.mail.join(&site.domain).join("judy/Maildir/new");
    let files: Vec<_> = std::fs::read_dir(&new)
        .unwrap_or_else(|e| panic!("{}: {e}", new.display()))
        .flatten()
        .collect();
    assert_eq!(files.len(), 1, "one message in {}", new.display());
    let text = std::fs::read_to_string(files[0].path()).expect("read message");
    assert!(text.contains("Subject: e2e delivery"), "{text}");
    let meta = std::fs::metadata(files[0].path()).expect("stat message");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (d.mail_uid, d.mail_gid),
        "owned by the userdb uid/gid"
    );

    // and the user sees it over IMAP
    let login = imap_login(d.imap_port, &addr, "judy-pw");
    assert!(
        login.transcript.iter().any(|l| l == "S: * 1 EXISTS"),
        "INBOX should hold the delivered message: {login:#?}"
    );
}

#[test]
fn postfix_smtp_auth_through_dovecot_sasl() {
    let site = Site::new("smtp");
    let p = postfix();
    let addr = site.user("kim", "kim-pw", Some("staff"));

    // first login over SMTP AUTH provisions (service smtp)
    let r = smtp_auth(p.port, &addr, "kim-pw");
    assert!(
        r.starts_with("235"),
        "AUTH PLAIN: {r}\ndovecot log:\n{}\npostfix log:\n{}",
        site.log(&addr),
        p.log()
    );
    assert_eq!(site.count("mailbox", &addr), 1);
    log_line(&[&format!("login user={addr}"), "service=smtp", "result=ok"]);

    let r = smtp_auth(p.port, &addr, "wrong");
    assert!(r.starts_with("535"), "AUTH PLAIN wrong password: {r}");
    let r = smtp_auth(p.port, &site.addr("nobody"), "whatever");
    assert!(r.starts_with("535"), "AUTH PLAIN unknown user: {r}");
    let r = smtp_auth(p.port, &addr, "kim-pw");
    assert!(r.starts_with("235"), "AUTH PLAIN again: {r}");
}

#[test]
fn dovecot_runs_the_shipped_snippet() {
    let d = dovecot();
    let args = format!(
        "args = {} checkpassword --config {}/%Ld.yml",
        d.bin.display(),
        d.etc.display()
    );
    let conf = d.assert_doveconf_in_order(&[
        "passdb {",
        &args,
        "driver = checkpassword",
        "userdb {",
        "driver = prefetch",
        "userdb {",
        &args,
        "driver = checkpassword",
    ]);
    // and no other passdb/userdb
    assert_eq!(conf.matches("passdb {").count(), 1, "{conf}");
    assert_eq!(conf.matches("userdb {").count(), 2, "{conf}");
    d.assert_snippet_is_shipped();
}

#[test]
fn contrib_sync_units_run_the_same_command() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| {
        std::fs::read_to_string(format!("{root}/{p}")).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let want = "/usr/local/bin/mailcow-ldap-auth --config /etc/mailcow-ldap-auth/config.yml sync";
    let service = read("contrib/systemd/mailcow-ldap-auth-sync.service");
    let exec: Vec<&str> = service
        .lines()
        .filter_map(|l| l.strip_prefix("ExecStart="))
        .collect();
    assert_eq!(exec, vec![want], "systemd ExecStart");
    let timer = read("contrib/systemd/mailcow-ldap-auth-sync.timer");
    assert!(
        timer.contains("OnUnitActiveSec=15min"),
        "timer interval = sync.interval_minutes default"
    );
    assert!(timer.contains("WantedBy=timers.target"));
    let cron = read("contrib/cron/mailcow-ldap-auth-sync");
    let jobs: Vec<&str> = cron
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#') && !l.contains('='))
        .collect();
    assert_eq!(jobs.len(), 1, "one cron job: {jobs:?}");
    assert!(jobs[0].starts_with("*/15 * * * * root "), "{}", jobs[0]);
    assert!(
        jobs[0].contains(&format!(" {want} ")) || jobs[0].ends_with(want),
        "{}",
        jobs[0]
    );
    // same binary and config paths as the Dovecot snippet
    assert!(e2e::dovecot::SNIPPET.contains(e2e::dovecot::INSTALLED_BIN));
    assert!(e2e::dovecot::SNIPPET.contains(e2e::dovecot::INSTALLED_CONFIG));
}

#[test]
fn template_quota_reaches_dovecot_and_a_new_template_is_used() {
    // a custom template created after the site: mapped via employeeType, used at first login
    let mut site = Site::new("custom");
    let d = dovecot();
    add_template(
        &site.env,
        "Small",
        r#"{"tags":["small","e2e"],"quota":52428800,"quarantine_notification":"hourly","quarantine_category":"reject","rl_frame":"s","rl_value":"","force_pw_update":0,"force_tfa":0,"sogo_access":1,"active":1,"tls_enforce_in":0,"tls_enforce_out":0,"imap_access":1,"pop3_access":1,"smtp_access":1,"sieve_access":0,"eas_access":1,"dav_access":1,"acl_spam_alias":1,"acl_tls_policy":1,"acl_spam_score":1,"acl_spam_policy":1,"acl_delimiter_action":1,"acl_syncjobs":0,"acl_eas_reset":1,"acl_sogo_profile_reset":0,"acl_pushover":1,"acl_quarantine":1,"acl_quarantine_attachments":1,"acl_quarantine_notification":1,"acl_quarantine_category":1,"acl_app_passwds":1}"#,
    );
    site.env.cfg["attribute_mapping"] = serde_json::json!([
        { "attribute": "staff", "template": "Staff" },
        { "attribute": "intern", "template": "Small" }
    ]);
    site.write_config();
    let addr = site.user("leo", "leo-pw", Some("intern"));
    let r = imap_login(d.imap_port, &addr, "leo-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&addr));
    let (code, fields, out) = doveadm_user(&addr);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        fields.contains(&("quota_rule".into(), "*:bytes=52428800".into())),
        "{out}"
    );
    // Small: sieve_access 0
    let r = sieve_login(d.sieve_port, &addr, "leo-pw");
    assert_eq!(r, "NO \"Authentication failed.\"");
    let r = pop3_login(d.pop3_port, &addr, "leo-pw");
    assert_eq!(r, "+OK Logged in.");
}

#[test]
fn app_password_over_imap_and_smtp_without_ldap_and_sasl_log_rows() {
    let mut site = Site::new("apppw");
    let (d, p) = (dovecot(), postfix());
    let addr = site.user("ann", "ann-pw", Some("staff"));
    let r = imap_login(d.imap_port, &addr, "ann-pw");
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&addr));
    assert_eq!(
        site.sasl_log(&addr),
        vec![vec![s("imap"), s("127.0.0.1"), s("0")]]
    );

    // LDAP gone: the app password still logs in, over IMAP and over SMTP AUTH via Postfix.
    let (id, app_password) = site.add_app_password(&addr);
    let bh = common::BlackHole::new();
    site.env.ldap_at(&["127.0.0.1"], bh.port());
    site.write_config();
    let r = imap_login(d.imap_port, &addr, &app_password);
    assert!(r.ok(), "{r:#?}\nlog:\n{}", site.log(&addr));
    let r = smtp_auth(p.port, &addr, &app_password);
    assert!(r.starts_with("235"), "AUTH PLAIN: {r}\n{}", site.log(&addr));
    assert_eq!(bh.connections(), 0, "an app password login contacted LDAP");
    assert_eq!(
        site.sasl_log(&addr),
        vec![
            vec![s("imap"), s("127.0.0.1"), Some(id.clone())],
            vec![s("smtp"), s("127.0.0.1"), Some(id)]
        ]
    );
    log_line(&[
        &format!("login user={addr}"),
        "service=smtp",
        "reason=\"app password",
    ]);
}

//! Login-path integration tests (issue 2): the real binary against a throwaway slapd and MariaDB.
mod common;

use common::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

const PW: &str = "Alice-Pw-1 ä*()\\";

/// [`common::alice_env`] with [`PW`].
fn alice_env() -> TestEnv {
    common::alice_env(PW)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[track_caller]
fn assert_no_ldap_traffic(bh: &BlackHole, out: &Outcome) {
    assert_eq!(
        bh.connections(),
        0,
        "the binary connected to the LDAP host although it must not:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Harness self-tests (do not need the product)
// ---------------------------------------------------------------------------------------------

#[test]
fn harness_servers_and_subtree() {
    let env = TestEnv::new(&[
        LdapUser::new("alice", "alice@example.org", "alice-pw").employee_type("staff")
    ]);
    // service account can bind and search the subtree; user can bind with her password
    let s = slapd();
    assert_eq!(slapd::bind_as(s.port, SVC_DN, SVC_PW).unwrap(), 0);
    assert_eq!(
        slapd::bind_as(s.port, &env.ldap.user_dn("alice"), "alice-pw").unwrap(),
        0
    );
    assert_eq!(
        slapd::bind_as(s.port, &env.ldap.user_dn("alice"), "nope").unwrap(),
        49
    );
    let mut c = ldap3::LdapConn::new(&s.url()).unwrap();
    c.simple_bind(SVC_DN, SVC_PW).unwrap().success().unwrap();
    let (entries, _) = c
        .search(
            &env.ldap.dn,
            ldap3::Scope::Subtree,
            "(mail=alice@example.org)",
            vec!["mail", "employeeType", "displayName"],
        )
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(entries.len(), 1);
    // database: schema loaded, user can log in over TCP
    env.db.add_domain(&Domain::new("example.org"));
    env.db
        .add_mailbox(&Mailbox::new("alice@example.org").quota(1024));
    let rows = env.db.rows(
        "SELECT username, quota, authsource, JSON_VALUE(attributes, '$.imap_access') FROM mailbox",
    );
    assert_eq!(
        rows,
        vec![vec![
            Some("alice@example.org".into()),
            Some("1024".into()),
            Some("ldap".into()),
            Some("1".into())
        ]]
    );
    let mut u = env.db.user_conn().unwrap();
    use mysql::prelude::Queryable;
    let n: Option<i64> = u.query_first("SELECT COUNT(*) FROM templates").unwrap();
    assert_eq!(n, Some(2));
}

fn tls_bind(url: &str, ca: &std::path::Path, starttls: bool) -> Result<u32, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let settings = ldap3::LdapConnSettings::new()
        .set_config(std::sync::Arc::new(cfg))
        .set_starttls(starttls)
        .set_conn_timeout(std::time::Duration::from_secs(2));
    let mut c = ldap3::LdapConn::with_settings(settings, url).map_err(|e| e.to_string())?;
    let rc = c.simple_bind(SVC_DN, SVC_PW).map_err(|e| e.to_string())?.rc;
    Ok(rc)
}

#[test]
fn harness_tls() {
    let s = slapd();
    let c = certs();
    assert_eq!(tls_bind(&s.ldaps_url(), &c.ca, false), Ok(0));
    assert_eq!(tls_bind(&s.url(), &c.ca, true), Ok(0));
    let e = tls_bind(&s.ldaps_url(), &c.other_ca, false).unwrap_err();
    assert!(
        e.contains("UnknownIssuer") || e.contains("certificate"),
        "{e}"
    );
    let e = tls_bind(&s.url(), &c.other_ca, true).unwrap_err();
    assert!(
        e.contains("UnknownIssuer") || e.contains("certificate"),
        "{e}"
    );
}

#[test]
fn harness_black_hole_and_dead_port() {
    let bh = BlackHole::new();
    assert_eq!(bh.connections(), 0);
    let s1 = std::net::TcpStream::connect(bh.addr).unwrap();
    let s2 = std::net::TcpStream::connect(bh.addr).unwrap();
    assert_eq!(bh.connections(), 2);
    // never answers
    s1.set_read_timeout(Some(std::time::Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 1];
    let e = std::io::Read::read(&mut &s1, &mut buf).unwrap_err();
    assert!(matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    drop((s1, s2));
    assert_eq!(bh.connections(), 2);
    let p = dead_port();
    let e = std::net::TcpStream::connect(("127.0.0.1", p)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    // a second loopback address on the slapd port is refused too (used for failover tests)
    let e = std::net::TcpStream::connect(("127.0.0.2", slapd().port)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

// ---------------------------------------------------------------------------------------------
// Success and exported fields
// ---------------------------------------------------------------------------------------------

#[test]
fn ok_exports_exact_fields() {
    let env = alice_env();
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(0).assert_never_printed(PW);
    assert_eq!(
        out.exported(),
        map(&[
            ("USER", "alice@example.org"),
            ("EXTRA", out.env["EXTRA"].as_str()),
            ("userdb_uid", "5000"),
            ("userdb_gid", "5000"),
            ("userdb_home", "/var/vmail/example.org/alice"),
            ("userdb_quota_rule", "*:bytes=1073741824"),
        ]),
        "{out}"
    );
    assert_eq!(
        out.extra(),
        set(&[
            "userdb_uid",
            "userdb_gid",
            "userdb_home",
            "userdb_quota_rule"
        ]),
        "{out}"
    );
    assert!(!out.env.contains_key("AUTHORIZED"), "{out}");
    let line = out
        .log_line()
        .unwrap_or_else(|| panic!("no log line:\n{out}"));
    for part in [
        "login user=alice@example.org",
        "service=imap",
        "rip=192.0.2.10",
        "result=ok",
        "ms=",
    ] {
        assert!(line.contains(part), "log line lacks {part:?}: {line}");
    }
}

#[test]
fn ok_quota_zero_has_no_quota_rule() {
    let env = TestEnv::new(&[LdapUser::new("bob", "bob@example.org", "bob-pw")]);
    env.db.add_domain(&Domain::new("example.org"));
    env.db
        .add_mailbox(&Mailbox::new("bob@example.org").quota(0));
    let out = env.cp().login("bob@example.org", "bob-pw").run();
    out.assert_code(0);
    assert_eq!(
        out.userdb(),
        map(&[
            ("userdb_uid", "5000"),
            ("userdb_gid", "5000"),
            ("userdb_home", "/var/vmail/example.org/bob"),
        ]),
        "{out}"
    );
    assert_eq!(
        out.extra(),
        set(&["userdb_uid", "userdb_gid", "userdb_home"]),
        "{out}"
    );
}

#[test]
fn ok_userdb_field_placeholders() {
    let mut env = alice_env();
    env.cfg["dovecot"]["userdb_fields"] = json!({
        "uid": "vmail",
        "home": "/srv/mail/{domain}/{local_part}",
        "mail": "maildir:/srv/maildirs/{username}/Maildir",
        "note": "{local_part} at {domain} is {username}"
    });
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(0);
    assert_eq!(
        out.userdb(),
        map(&[
            ("userdb_uid", "vmail"),
            ("userdb_home", "/srv/mail/example.org/alice"),
            (
                "userdb_mail",
                "maildir:/srv/maildirs/alice@example.org/Maildir"
            ),
            ("userdb_note", "alice at example.org is alice@example.org"),
            ("userdb_quota_rule", "*:bytes=1073741824"),
        ]),
        "{out}"
    );
    assert_eq!(
        out.extra(),
        set(&[
            "userdb_uid",
            "userdb_home",
            "userdb_mail",
            "userdb_note",
            "userdb_quota_rule"
        ]),
        "{out}"
    );
}

#[test]
fn ok_mixed_case_login_exports_canonical_user() {
    let env = alice_env();
    let out = env.cp().login("Alice@Example.ORG", PW).run();
    out.assert_code(0);
    assert_eq!(out.env["USER"], "alice@example.org", "{out}");
    assert_eq!(
        out.env["userdb_home"], "/var/vmail/example.org/alice",
        "{out}"
    );
}

#[test]
fn ok_remote_ip_falls_back_to_remote_ip_var_and_config_from_env() {
    let env = alice_env();
    let out = env
        .cp()
        .env_remove("TCPREMOTEIP")
        .env("REMOTE_IP", "198.51.100.7")
        .config_at(ConfigAt::Env)
        .login("alice@example.org", PW)
        .run();
    out.assert_code(0);
    let line = out
        .log_line()
        .unwrap_or_else(|| panic!("no log line:\n{out}"));
    assert!(line.contains("rip=198.51.100.7"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Rejections (exit 1)
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_password_is_rejected() {
    let env = alice_env();
    let bad = "Not-The-Password-9137";
    let out = env.cp().login("alice@example.org", bad).run();
    out.assert_code(1)
        .assert_stderr_contains("wrong password")
        .assert_stderr_contains("result=rejected")
        .assert_never_printed(bad);
    assert!(out.stdout.is_empty(), "reply program must not run:\n{out}");
}

#[test]
fn unknown_user_is_rejected() {
    let env = alice_env();
    // neither mailbox row nor LDAP entry
    env.cp()
        .login("nobody@example.org", PW)
        .run()
        .assert_code(1)
        .assert_stderr_contains("result=rejected");
    // mailbox row but no LDAP entry
    env.db.add_mailbox(&Mailbox::new("ghost@example.org"));
    env.cp()
        .login("ghost@example.org", PW)
        .run()
        .assert_code(1)
        .assert_stderr_contains("no such LDAP entry");
}

#[test]
fn empty_password_is_rejected_without_ldap_traffic() {
    let mut env = alice_env();
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    let out = env.cp().login("alice@example.org", "").run();
    out.assert_code(1).assert_stderr_contains("empty password");
    assert_no_ldap_traffic(&bh, &out);
}

#[test]
fn filter_metacharacters_in_login_match_no_one() {
    // One LDAP user whose password we send: any login that matched her entry would be accepted.
    let env = alice_env();
    let cases = [
        "*@example.org",
        "*",
        "al*ce@example.org",
        "alice@example.org)(mail=*",
        "*)(objectClass=*",
        "\\61lice@example.org",
        "alice\\2a@example.org",
        "alice(@example.org",
        "alice)@example.org",
    ];
    // mailbox + domain rows exist for every such login, so the request reaches the LDAP search
    env.db.add_domain(&Domain::new(""));
    for login in cases {
        let domain = login.rsplit_once('@').map_or("", |(_, d)| d);
        if !["", "example.org"].contains(&domain) {
            env.db.add_domain(&Domain::new(domain));
        }
        env.db.add_mailbox(&Mailbox::new(login));
        let out = env.cp().login(login, PW).run();
        out.assert_code(1)
            .assert_stderr_lacks("result=ok")
            .assert_stderr_lacks("wrong password")
            .assert_stderr_lacks("ambiguous");
        // refused by the search (escaped filter matched nothing) or as a malformed login name;
        // never by an earlier check that would leave the filter untested
        assert!(
            out.stderr.contains("no such LDAP entry") || out.stderr.contains("malformed login"),
            "{out}"
        );
    }
    // with a second entry, an unescaped `*` would make the search ambiguous instead
    env.ldap
        .add_user(&LdapUser::new("bob", "bob@example.org", PW));
    let out = env.cp().login("*@example.org", PW).run();
    out.assert_code(1)
        .assert_stderr_lacks("ambiguous")
        .assert_stderr_contains("no such LDAP entry");
}

#[test]
fn ambiguous_entry_is_rejected() {
    let env = TestEnv::new(&[
        LdapUser::new("alice1", "alice@example.org", PW),
        LdapUser::new("alice2", "alice@example.org", PW),
    ]);
    env.db.add_domain(&Domain::new("example.org"));
    env.db.add_mailbox(&Mailbox::new("alice@example.org"));
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(1).assert_stderr_contains("ambiguous");
}

#[test]
fn disabled_protocol_is_rejected_without_ldap_traffic() {
    let mut env = TestEnv::new(&[LdapUser::new("alice", "alice@example.org", PW)]);
    env.db.add_domain(&Domain::new("example.org"));
    env.db
        .add_mailbox(&Mailbox::new("alice@example.org").attr("pop3_access", "0"));
    // imap is allowed, and a service without an <svc>_access attribute is not restricted
    env.cp().login("alice@example.org", PW).run().assert_code(0);
    env.cp()
        .service("doveadm")
        .login("alice@example.org", PW)
        .run()
        .assert_code(0);
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    let out = env
        .cp()
        .service("pop3")
        .login("alice@example.org", PW)
        .run();
    out.assert_code(1)
        .assert_stderr_contains("service pop3 disabled");
    assert_no_ldap_traffic(&bh, &out);
}

#[test]
fn inactive_mailbox_is_rejected_without_ldap_traffic() {
    let mut env = TestEnv::new(&[
        LdapUser::new("alice", "alice@example.org", PW),
        LdapUser::new("carol", "carol@example.org", PW),
    ]);
    env.db.add_domain(&Domain::new("example.org"));
    env.db
        .add_mailbox(&Mailbox::new("alice@example.org").active(0));
    // active = 2 ("receive only" in mailcow): no login either
    env.db
        .add_mailbox(&Mailbox::new("carol@example.org").active(2));
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    for user in ["alice@example.org", "carol@example.org"] {
        let out = env.cp().login(user, PW).run();
        out.assert_code(1)
            .assert_stderr_contains("mailbox inactive");
        assert_no_ldap_traffic(&bh, &out);
    }
}

#[test]
fn inactive_domain_is_rejected_without_ldap_traffic() {
    let mut env = TestEnv::new(&[LdapUser::new("alice", "alice@example.org", PW)]);
    env.db.add_domain(&Domain::new("example.org").active(0));
    env.db.add_mailbox(&Mailbox::new("alice@example.org"));
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(1).assert_stderr_contains("domain inactive");
    assert_no_ldap_traffic(&bh, &out);
}

#[test]
fn resource_mailbox_is_rejected_without_ldap_traffic() {
    let mut env = TestEnv::new(&[LdapUser::new("room", "room@example.org", PW)]);
    env.db.add_domain(&Domain::new("example.org"));
    env.db
        .add_mailbox(&Mailbox::new("room@example.org").kind("location"));
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    let out = env.cp().login("room@example.org", PW).run();
    out.assert_code(1)
        .assert_stderr_contains("resource mailbox");
    assert_no_ldap_traffic(&bh, &out);
}

#[test]
fn mailcow_authsource_is_rejected_without_ldap_traffic() {
    let mut env = TestEnv::new(&[LdapUser::new("alice", "alice@example.org", PW)]);
    env.db.add_domain(&Domain::new("example.org"));
    env.db
        .add_mailbox(&Mailbox::new("alice@example.org").authsource("mailcow"));
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(1).assert_stderr_contains("not LDAP-backed");
    assert_no_ldap_traffic(&bh, &out);
}

#[test]
fn ldap_user_without_mailbox_is_rejected_when_provisioning_is_off() {
    let mut env = alice_env();
    env.cfg["login_provisioning"] = json!(false);
    env.ldap
        .add_user(&LdapUser::new("dave", "dave@example.org", "dave-pw").employee_type("staff"));
    let out = env.cp().login("dave@example.org", "dave-pw").run();
    out.assert_code(1).assert_stderr_contains("result=rejected");
    assert!(
        env.db
            .rows("SELECT username FROM mailbox WHERE username = 'dave@example.org'")
            .is_empty(),
        "a mailbox was created although login_provisioning is off:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Failover and faults (exit 111)
// ---------------------------------------------------------------------------------------------

#[test]
fn first_host_refused_second_host_used() {
    let mut env = alice_env();
    // nothing listens on 127.0.0.2:<slapd port> (slapd binds 127.0.0.1 only)
    env.ldap_at(&["127.0.0.2", "127.0.0.1"], slapd().port);
    env.cp().login("alice@example.org", PW).run().assert_code(0);
}

#[test]
fn first_host_never_answering_second_host_used() {
    let mut env = alice_env();
    let bh = BlackHole::bind(&format!("127.0.0.3:{}", slapd().port)).expect("bind 127.0.0.3");
    env.ldap_at(&["127.0.0.3", "127.0.0.1"], slapd().port);
    env.cfg["ldap"]["timeout_ms"] = json!(500);
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(0);
    assert!(bh.connections() >= 1, "first host was not tried:\n{out}");
}

#[test]
fn all_hosts_refused_is_tempfail() {
    let mut env = alice_env();
    env.ldap_at(&["127.0.0.2", "127.0.0.4"], slapd().port);
    env.cp()
        .login("alice@example.org", PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("result=tempfail")
        .assert_stderr_contains("unreachable");
    env.ldap_at(&["127.0.0.1"], dead_port());
    env.cp()
        .login("alice@example.org", PW)
        .run()
        .assert_code(111);
}

#[test]
fn never_answering_host_is_tempfail() {
    let mut env = alice_env();
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    env.cfg["ldap"]["connect_timeout_ms"] = json!(500);
    env.cfg["ldap"]["timeout_ms"] = json!(500);
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(111)
        .assert_stderr_contains("result=tempfail");
    assert!(bh.connections() >= 1, "{out}");
}

#[test]
fn overall_deadline_is_tempfail() {
    let mut env = alice_env();
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    env.cfg["ldap"]["timeout_ms"] = json!(30000);
    env.cfg["deadline_ms"] = json!(1000);
    env.cp()
        .login("alice@example.org", PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("deadline");
}

#[test]
fn database_down_is_tempfail() {
    let mut env = alice_env();
    env.cfg["database"]["port"] = json!(dead_port());
    env.cp()
        .login("alice@example.org", PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("result=tempfail");
    // lookup mode too
    env.cp().lookup("alice@example.org").run().assert_code(111);
}

#[test]
fn database_timeout_is_its_own() {
    // a database that accepts the connection and never greets: database.timeout_ms ends the
    // wait. The LDAP timeouts (which used to be the database's) and the deadline are longer
    // than the harness's 60 s safety limit, which would fail the run if they applied.
    let mut env = alice_env();
    let bh = BlackHole::new();
    env.cfg["database"]["host"] = json!("127.0.0.1");
    env.cfg["database"]["port"] = json!(bh.port());
    env.cfg["database"]["timeout_ms"] = json!(300);
    env.cfg["ldap"]["connect_timeout_ms"] = json!(120_000);
    env.cfg["ldap"]["timeout_ms"] = json!(120_000);
    env.cfg["deadline_ms"] = json!(120_000);
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(111)
        .assert_stderr_contains("reason=\"database unreachable")
        .assert_stderr_lacks("deadline");
    assert!(bh.connections() >= 1, "{out}");
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

#[test]
fn starttls_with_right_ca() {
    let mut env = alice_env();
    env.cfg["ldap"]["use_tls"] = json!(true);
    env.cp().login("alice@example.org", PW).run().assert_code(0);
}

#[test]
fn ldaps_with_right_ca() {
    let mut env = alice_env();
    env.cfg["ldap"]["use_ssl"] = json!(true);
    env.cfg["ldap"]["port"] = json!(slapd().ldaps_port);
    env.cp().login("alice@example.org", PW).run().assert_code(0);
}

#[test]
fn wrong_ca_is_tempfail() {
    let mut env = alice_env();
    env.cfg["ldap"]["ca_file"] = json!(certs().other_ca);
    env.cfg["ldap"]["use_tls"] = json!(true);
    env.cp()
        .login("alice@example.org", PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("TLS");
    env.cfg["ldap"]["use_tls"] = json!(false);
    env.cfg["ldap"]["use_ssl"] = json!(true);
    env.cfg["ldap"]["port"] = json!(slapd().ldaps_port);
    env.cp()
        .login("alice@example.org", PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("TLS");
}

#[test]
fn tls_wrong_hostname_is_tempfail() {
    // the right CA, but slapd reached as 127.0.0.2: its certificate names localhost and 127.0.0.1
    let mut env = alice_env();
    let s = slapd();
    for (port, key) in [(s.port, "use_tls"), (s.ldaps_port, "use_ssl")] {
        let target = format!("127.0.0.1:{port}").parse().unwrap();
        let fwd = Forwarder::start("127.0.0.2:0", target).expect("forwarder on 127.0.0.2");
        env.ldap_at(&["127.0.0.2"], fwd.addr.port());
        env.cfg["ldap"]["use_tls"] = json!(key == "use_tls");
        env.cfg["ldap"]["use_ssl"] = json!(key == "use_ssl");
        env.cfg["ldap"]["ignore_ssl_errors"] = json!(false);
        env.cp()
            .login("alice@example.org", PW)
            .run()
            .assert_code(111)
            .assert_stderr_contains(
                "TLS: invalid peer certificate: certificate not valid for name",
            );
        // the same path works when the name is not checked: the name was the only fault
        env.cfg["ldap"]["ignore_ssl_errors"] = json!(true);
        env.cp().login("alice@example.org", PW).run().assert_code(0);
    }
}

#[test]
fn ca_only_trusts_the_ca_file_and_not_the_system_roots() {
    let mut env = alice_env();
    env.cfg["ldap"]["use_ssl"] = json!(true);
    env.cfg["ldap"]["port"] = json!(slapd().ldaps_port);
    env.cfg["ldap"]["ca_only"] = json!(true);
    env.cp().login("alice@example.org", PW).run().assert_code(0);

    // the test CA as the only system root (SSL_CERT_FILE), an unrelated CA in ca_file
    let system = certs().ca.to_str().unwrap().to_owned();
    env.cfg["ldap"]["ca_file"] = json!(certs().other_ca);
    env.cfg["ldap"]["ca_only"] = json!(false);
    let login = |env: &TestEnv| {
        env.cp()
            .env("SSL_CERT_FILE", &system)
            .login("alice@example.org", PW)
            .run()
    };
    login(&env).assert_code(0);
    env.cfg["ldap"]["ca_only"] = json!(true);
    login(&env)
        .assert_code(111)
        .assert_stderr_contains("TLS: invalid peer certificate");
}

#[test]
fn ignore_ssl_errors_accepts_wrong_ca() {
    let mut env = alice_env();
    env.cfg["ldap"]["ca_file"] = json!(certs().other_ca);
    env.cfg["ldap"]["ignore_ssl_errors"] = json!(true);
    env.cfg["ldap"]["use_tls"] = json!(true);
    env.cp().login("alice@example.org", PW).run().assert_code(0);
    env.cfg["ldap"]["use_tls"] = json!(false);
    env.cfg["ldap"]["use_ssl"] = json!(true);
    env.cfg["ldap"]["port"] = json!(slapd().ldaps_port);
    env.cp().login("alice@example.org", PW).run().assert_code(0);
}

// ---------------------------------------------------------------------------------------------
// Lookup mode (AUTHORIZED=1)
// ---------------------------------------------------------------------------------------------

#[test]
fn lookup_found_exports_fields_without_ldap() {
    let mut env = alice_env();
    env.db
        .add_mailbox(&Mailbox::new("carol@example.org").active(2));
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    let out = env.cp().lookup("alice@example.org").run();
    out.assert_code(0); // /usr/bin/env ran
    assert_eq!(
        out.exported(),
        map(&[
            ("AUTHORIZED", "2"),
            ("USER", "alice@example.org"),
            ("EXTRA", out.env["EXTRA"].as_str()),
            ("userdb_uid", "5000"),
            ("userdb_gid", "5000"),
            ("userdb_home", "/var/vmail/example.org/alice"),
            ("userdb_quota_rule", "*:bytes=1073741824"),
        ]),
        "{out}"
    );
    assert_eq!(
        out.extra(),
        set(&[
            "userdb_uid",
            "userdb_gid",
            "userdb_home",
            "userdb_quota_rule"
        ]),
        "{out}"
    );
    // active = 2 is found in lookup mode
    let out2 = env.cp().lookup("carol@example.org").run();
    out2.assert_code(0);
    assert_eq!(
        out2.env.get("AUTHORIZED").map(String::as_str),
        Some("2"),
        "{out2}"
    );
    assert_eq!(out2.env["USER"], "carol@example.org", "{out2}");
    assert_no_ldap_traffic(&bh, &out2);
    // resource mailboxes receive mail too (mailcow's SQL userdb finds them); their logins
    // stay refused (resource_mailbox_is_rejected_without_ldap_traffic)
    env.db
        .add_mailbox(&Mailbox::new("room@example.org").kind("location"));
    let room = env.cp().lookup("room@example.org").run();
    room.assert_code(0);
    assert_eq!(room.env["USER"], "room@example.org", "{room}");
    assert_no_ldap_traffic(&bh, &room);
}

#[test]
fn lookup_unknown_is_3() {
    let mut env = alice_env();
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    let out = env.cp().lookup("nobody@example.org").run();
    out.assert_code(3);
    assert!(out.stdout.is_empty(), "{out}");
    assert_no_ldap_traffic(&bh, &out);
}

// ---------------------------------------------------------------------------------------------
// Misuse (exit 2)
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_misuse(out: &Outcome) {
    out.assert_code(2);
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "misuse must print exactly one line on stderr:\n{out}"
    );
    assert!(out.stdout.is_empty(), "{out}");
}

#[test]
fn misuse_is_2() {
    let mut env = alice_env();
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    // fd 3 not open
    assert_misuse(&env.cp().no_fd3().run());
    // no NUL terminator at all
    assert_misuse(&env.cp().input(b"alice@example.org").run());
    // only the user is terminated
    assert_misuse(&env.cp().input(b"alice@example.org\0secret").run());
    // more than 512 bytes
    let long = format!("alice@example.org\0{}\0\0", "x".repeat(600));
    assert_misuse(&env.cp().input(long.as_bytes()).run());
    let out = env.cp().input(&[b'a'; 513]).run();
    assert_misuse(&out);
    assert_no_ldap_traffic(&bh, &out);
}

#[test]
fn a_writer_that_never_closes_fd3_gets_111_at_the_default_deadline() {
    // Dovecot never kills the helper; the configuration (and its deadline_ms) is read only after
    // the request, so the default deadline bounds the wait for it.
    let mut env = alice_env();
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    let out = env.cp().fd3_never_closed().run();
    out.assert_code(111).assert_stderr_contains(
        "checkpassword result=tempfail reason=\"deadline of 10000 ms exceeded before the \
         request on fd 3 and the configuration were read\"",
    );
    assert_no_ldap_traffic(&bh, &out);
}

#[test]
fn input_of_exactly_512_bytes_is_accepted() {
    let env = alice_env();
    // strlen(user) + strlen(password) + 3 == 512: the largest request Dovecot sends
    let pass = "p".repeat(512 - 3 - "alice@example.org".len());
    let out = env.cp().login("alice@example.org", &pass).run();
    out.assert_code(1).assert_stderr_contains("wrong password");
    // one byte more is misuse
    let mut bytes = format!("alice@example.org\0{pass}x\0").into_bytes();
    bytes.push(0);
    assert_eq!(bytes.len(), 513);
    assert_misuse(&env.cp().input(&bytes).run());
}

// ---------------------------------------------------------------------------------------------
// Broken configuration (exit 111, one line naming the key)
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_config_is_tempfail_naming_the_key() {
    let env = alice_env();
    let cases: Vec<(&str, serde_json::Value)> = {
        let mut unknown = env.cfg.clone();
        unknown["ldap"]["frobnicate_hosts"] = json!(true);
        let mut unknown_top = env.cfg.clone();
        unknown_top["frobnicate_top"] = json!(1);
        let mut both = env.cfg.clone();
        both["ldap"]["use_ssl"] = json!(true);
        both["ldap"]["use_tls"] = json!(true);
        let mut filter = env.cfg.clone();
        filter["ldap"]["filter"] = json!("(objectClass=inetOrgPerson");
        let mut no_pw = env.cfg.clone();
        no_pw["ldap"]
            .as_object_mut()
            .unwrap()
            .remove("bind_password");
        let mut no_db_pw = env.cfg.clone();
        no_db_pw["database"]
            .as_object_mut()
            .unwrap()
            .remove("password");
        vec![
            ("frobnicate_hosts", unknown),
            ("frobnicate_top", unknown_top),
            ("use_tls", both),
            ("filter", filter),
            ("bind_password", no_pw),
            ("password", no_db_pw),
        ]
    };
    for (key, cfg) in cases {
        let out = env.cp().config(&cfg).login("alice@example.org", PW).run();
        out.assert_code(111).assert_stderr_contains(key);
        assert!(out.stdout.is_empty(), "{out}");
    }
    // not YAML at all
    env.cp()
        .config_yaml("ldap: [unclosed")
        .login("alice@example.org", PW)
        .run()
        .assert_code(111);
    // empty file, missing file
    env.cp()
        .config_yaml("")
        .login("alice@example.org", PW)
        .run()
        .assert_code(111);
    env.cp()
        .config_file("/nonexistent/mailcow-ldap-auth.yml")
        .login("alice@example.org", PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("/nonexistent/mailcow-ldap-auth.yml");
}

// ---------------------------------------------------------------------------------------------
// With Dovecot's real checkpassword-reply (fd 4)
// ---------------------------------------------------------------------------------------------

#[test]
fn real_checkpassword_reply_auth_and_lookup() {
    let env = alice_env();
    let out = env
        .cp()
        .config_at(ConfigAt::AfterSubcommand)
        .reply(CHECKPASSWORD_REPLY, &[])
        .fd4()
        .login("alice@example.org", PW)
        .run();
    out.assert_code(0).assert_never_printed(PW);
    let want = map(&[
        ("user", "alice@example.org"),
        ("userdb_uid", "5000"),
        ("userdb_gid", "5000"),
        ("userdb_home", "/var/vmail/example.org/alice"),
        ("userdb_quota_rule", "*:bytes=1073741824"),
    ]);
    assert_eq!(out.fd4_fields(), want, "{out}");
    let out = env
        .cp()
        .config_at(ConfigAt::AfterSubcommand)
        .reply(CHECKPASSWORD_REPLY, &[])
        .fd4()
        .lookup("alice@example.org")
        .run();
    out.assert_code(2);
    assert_eq!(out.fd4_fields(), want, "{out}");
}

// ---------------------------------------------------------------------------------------------
// fd hygiene
// ---------------------------------------------------------------------------------------------

#[test]
fn fd3_is_closed_before_the_reply_program_runs() {
    let env = alice_env();
    let script = "if [ -e /proc/self/fd/3 ]; then echo FD3=open; else echo FD3=closed; fi; \
                  exec /usr/bin/env";
    let out = env
        .cp()
        .reply("/bin/sh", &["-c", script])
        .login("alice@example.org", PW)
        .run();
    out.assert_code(0);
    assert_eq!(
        out.env.get("FD3").map(String::as_str),
        Some("closed"),
        "{out}"
    );
    assert_eq!(out.env["USER"], "alice@example.org", "{out}");
}

#[test]
fn deadline_holds_even_when_stderr_blocks() {
    // Dovecot stops draining the helper's stderr: every log write blocks. The answer must
    // still come at the deadline, as a temporary failure.
    let mut env = alice_env();
    let bh = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], bh.port());
    env.cfg["deadline_ms"] = json!(300);
    env.cfg["ldap"]["timeout_ms"] = json!(30000);
    let t0 = std::time::Instant::now();
    let out = env.cp().login("alice@example.org", PW).stderr_full().run();
    eprintln!(
        "figure: stderr blocked, deadline 300 ms → exit {:?} after {} ms",
        out.code,
        t0.elapsed().as_millis()
    );
    out.assert_code(111);
}

#[test]
fn host_that_binds_but_never_answers_a_search_fails_over() {
    // 127.0.0.2 on slapd's port: binds pass through to slapd, searches are swallowed.
    let mut env = alice_env();
    let port = slapd().port;
    let _proxy = FirstRequestProxy::start(
        &format!("127.0.0.2:{port}"),
        format!("127.0.0.1:{port}").parse().unwrap(),
    )
    .expect("proxy on 127.0.0.2");
    env.ldap_at(&["127.0.0.2", "127.0.0.1"], port);
    env.cfg["ldap"]["timeout_ms"] = json!(500);
    let out = env.cp().login("alice@example.org", PW).run();
    out.assert_code(0);
    assert_eq!(out.env["USER"], "alice@example.org", "{out}");

    // with no other host to ask, the hung search is a temporary failure
    env.ldap_at(&["127.0.0.2"], port);
    env.cp()
        .login("alice@example.org", PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("search on 127.0.0.2 failed: timed out");
}

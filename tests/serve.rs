//! `serve` as Dovecot's Lua script reaches it: the real binary over HTTP, on real slapd and
//! MariaDB (each a pooled connection away).

mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::serve::{Reply, Serve, assert_result, private_file};
use common::*;
use mysql::prelude::Queryable;
use provision_helpers::{DomainRow, golden, insert_template, row_counts};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PW: &str = "Pass \"w0rd\" ünï";

/// alice (existing mailbox), bob (LDAP only: first login creates), carol (imap off), dave
/// (mailcow authsource), erin (not in LDAP, no mailbox).
fn site() -> TestEnv {
    let env = TestEnv::new(&[
        LdapUser::new("alice", "alice@example.org", PW),
        LdapUser::new("bob", "bob@example.org", PW),
        LdapUser::new("carol", "carol@example.org", PW),
    ]);
    env.db.add_domain(&Domain::new("example.org"));
    env.db
        .add_mailbox(&Mailbox::new("alice@example.org").quota(1 << 30));
    env.db
        .add_mailbox(&Mailbox::new("carol@example.org").attr("imap_access", "0"));
    env.db
        .add_mailbox(&Mailbox::new("dave@example.org").authsource("mailcow"));
    env
}

/// `serve` on the env's config with this `serve:` section (listen and token added).
fn serve_with(env: &TestEnv, section: serde_json::Value) -> Serve {
    let mut cfg = env.cfg.clone();
    cfg["serve"] = section;
    Serve::start(&cfg)
}

#[test]
fn answers_every_result_and_never_logs_the_password() {
    let env = site();
    let serve = Serve::start(&env.cfg);
    let ok = serve.auth("alice@example.org", PW, "imap");
    assert_result(&ok, "ok");
    assert_eq!(ok.body["user"], "alice@example.org");
    assert_eq!(
        ok.body["fields"]["userdb_home"],
        "/var/vmail/example.org/alice"
    );
    assert_eq!(ok.body["fields"]["userdb_quota_rule"], "*:bytes=1073741824");
    assert_result(
        &serve.auth("alice@example.org", "wrong", "imap"),
        "mismatch",
    );
    assert_result(&serve.auth("erin@example.org", PW, "imap"), "unknown");
    assert_result(&serve.auth("carol@example.org", PW, "imap"), "disabled");
    assert_result(&serve.auth("dave@example.org", PW, "imap"), "next");
    let created = serve.auth("bob@example.org", PW, "imap");
    assert_result(&created, "ok");
    assert_eq!(row_counts(&env.db, "bob@example.org")["mailbox"], 1);

    let found = serve.get("/lookup?user=alice%40example.org&dovecot=2.4");
    assert_result(&found, "ok");
    assert_eq!(found.body["fields"]["quota_storage_size"], "1073741824");
    let none = serve.get("/lookup?user=erin%40example.org");
    assert_result(&none, "unknown");

    let metrics = serve.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.body.as_str().unwrap();
    assert!(
        text.contains(
            r#"mailcow_ldap_auth_requests_total{kind="auth",service="imap",result="ok"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"mailcow_ldap_auth_pool_connections{pool="ldap_search",state="idle"}"#)
    );
    assert!(
        text.contains("mailcow_ldap_auth_request_seconds_count 8"),
        "{text}"
    );

    let log = serve.log();
    assert!(
        log.contains("login user=alice@example.org service=imap rip=192.0.2.10 result=ok"),
        "{log}"
    );
    assert!(
        log.contains("result=rejected reason=\"wrong password"),
        "{log}"
    );
    assert!(
        !log.contains(PW) && !text.contains(PW),
        "password in the log or metrics"
    );
}

#[test]
fn tempfail_when_ldap_is_unreachable() {
    let mut env = site();
    env.ldap_at(&["127.0.0.1"], dead_port());
    let serve = Serve::start(&env.cfg);
    let reply = serve.auth("alice@example.org", PW, "imap");
    assert_result(&reply, "tempfail");
    assert!(
        reply.body["reason"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{reply:?}"
    );
}

#[test]
fn refuses_requests_without_the_token_or_with_bad_bodies() {
    let env = site();
    let serve = Serve::start(&env.cfg);
    let body = json!({"username": "alice@example.org", "password": PW}).to_string();
    for token in [None, Some("wrong"), Some("")] {
        let reply = serve.request("POST", "/auth", token, body.as_bytes());
        assert_eq!(reply.status, 401, "{token:?}: {reply:?}");
    }
    assert_eq!(serve.request("GET", "/metrics", None, b"").status, 401);
    assert_eq!(
        serve
            .request("GET", "/lookup?user=a%40b", Some("x"), b"")
            .status,
        401
    );
    assert_eq!(serve.request("GET", "/health", None, b"").status, 200);

    let bad = format!(r#"{{"username": "alice@example.org", "password": "{PW}", "#);
    let reply = serve.request("POST", "/auth", Some(&serve.token), bad.as_bytes());
    assert_eq!(reply.status, 400, "{reply:?}");
    let unknown_field = json!({"username": "a@b.c", "password": PW, "passwd": PW}).to_string();
    let reply = serve.request(
        "POST",
        "/auth",
        Some(&serve.token),
        unknown_field.as_bytes(),
    );
    assert_eq!(reply.status, 400, "{reply:?}");
    let numeric = br#"{"username": "alice@example.org", "password": 4711081542}"#;
    assert_eq!(
        serve
            .request("POST", "/auth", Some(&serve.token), numeric)
            .status,
        400
    );
    let huge = json!({"username": "alice@example.org", "password": "x".repeat(20_000)}).to_string();
    let reply = serve.request("POST", "/auth", Some(&serve.token), huge.as_bytes());
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(
        serve
            .request("GET", "/auth", Some(&serve.token), b"")
            .status,
        405
    );
    assert_eq!(
        serve
            .request("GET", "/nope", Some(&serve.token), b"")
            .status,
        404
    );

    let log = serve.log();
    assert!(log.contains("http status=401"), "{log}");
    assert!(log.contains("http status=413"), "{log}");
    for secret in [PW, "4711081542", serve.token.as_str()] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn does_not_start_without_a_trusted_token_file() {
    let env = site();
    let mut cfg = env.cfg.clone();
    cfg["serve"] = json!({"listen": "127.0.0.1:1"});
    let out = Run::subcommand(&cfg, &["serve"]).run();
    out.assert_code(111);
    out.assert_stderr_contains("serve.token_file: missing");

    let dir = tempfile::Builder::new()
        .prefix("tok.")
        .tempdir_in(process::scratch())
        .unwrap();
    let token = dir.path().join("token");
    private_file(&token, "secret\n");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o620)).unwrap();
    cfg["serve"]["token_file"] = json!(token);
    let out = Run::subcommand(&cfg, &["serve"]).run();
    out.assert_code(111);
    out.assert_stderr_contains("serve.token_file");
    out.assert_stderr_contains("chmod go-w");

    cfg["serve"]["pool"] = json!(3);
    let out = Run::subcommand(&cfg, &["serve"]).run();
    out.assert_code(111);
    out.assert_stderr_contains("unknown field `pool`");
}

#[test]
fn first_ldap_host_dies_and_the_pool_moves_to_the_second() {
    let mut env = site();
    let slapd_addr: SocketAddr = format!("127.0.0.1:{}", slapd().port).parse().unwrap();
    let first = Switch::start(&format!("127.0.0.2:{}", slapd().port), slapd_addr)
        .expect("proxy on 127.0.0.2 (same port as slapd)");
    env.ldap_at(&["127.0.0.2", "127.0.0.1"], slapd().port);
    let serve = Serve::start(&env.cfg);
    for _ in 0..3 {
        assert_result(&serve.auth("alice@example.org", PW, "imap"), "ok");
    }
    first.down();
    for _ in 0..5 {
        assert_result(&serve.auth("alice@example.org", PW, "imap"), "ok");
        assert_result(
            &serve.auth("alice@example.org", "wrong", "imap"),
            "mismatch",
        );
    }
}

#[test]
fn pooled_connections_recover_after_the_ldap_server_restarts() {
    // A slapd of this test's own: restarting the shared one would disturb the other tests.
    let own = Slapd::start_in("slapd-restart");
    let mut env = site();
    let subtree = own.subtree(&[LdapUser::new("alice", "alice@example.org", PW)]);
    env.ldap_at(&["127.0.0.1"], own.port);
    env.cfg["ldap"]["base_dn"] = json!(subtree.dn);
    let serve = Serve::start(&env.cfg);
    let parallel = |n: usize| -> Vec<Reply> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|_| s.spawn(|| serve.auth("alice@example.org", PW, "imap")))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };
    // Fill the pools with several connections each.
    for reply in parallel(8) {
        assert_result(&reply, "ok");
    }
    let before = own.pid();
    own.restart();
    assert_ne!(own.pid(), before);
    // Every pooled LDAP connection is dead now; each is replaced on its first use.
    for reply in parallel(8) {
        assert_result(&reply, "ok");
    }
    assert_result(
        &serve.auth("alice@example.org", "wrong", "imap"),
        "mismatch",
    );

    // Database connections cut by the server while idle are replaced too.
    cut_database_connections(&env);
    // Longer than a pooled connection may lie idle unchecked.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    for reply in parallel(4) {
        assert_result(&reply, "ok");
    }
}

#[test]
fn two_hundred_concurrent_requests_are_all_answered_correctly() {
    let env = site();
    let sizes = json!({"workers": 8, "ldap_search_connections": 2,
                       "ldap_bind_connections": 4, "database_connections": 4});
    let serve = serve_with(&env, sizes);
    let replies: Vec<(usize, Reply)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let serve = &serve;
                s.spawn(move || {
                    let password = if i % 3 == 0 { "wrong" } else { PW };
                    (i, serve.auth("alice@example.org", password, "imap"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, reply) in &replies {
        assert_result(reply, if i % 3 == 0 { "mismatch" } else { "ok" });
    }
    let metrics = serve.get("/metrics");
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains(r#"result="ok"} 133"#), "{text}");
    assert!(text.contains(r#"pool="database",state="max"} 4"#), "{text}");
}

/// bob in LDAP (staff), no mailbox yet; the golden domain and StaffUI template; serve with
/// staff mapped to StaffUI.
fn staff_site() -> (TestEnv, Serve) {
    staff_site_with(json!({}))
}

/// [`staff_site`] with this `serve:` section.
fn staff_site_with(serve: Value) -> (TestEnv, Serve) {
    let env = TestEnv::new(&[LdapUser::new("bob", "bob@example.org", PW)
        .display_name("Bob Example")
        .employee_type("staff")]);
    DomainRow::from_golden(&golden()).insert(&env.db);
    let text = golden()["template"]["attributes_text"]
        .as_str()
        .unwrap()
        .to_owned();
    insert_template(&env.db, "StaffUI", &text);
    let mut cfg = env.cfg.clone();
    cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "StaffUI" }]);
    cfg["serve"] = serve;
    let serve = Serve::start(&cfg);
    (env, serve)
}

#[test]
fn twenty_first_logins_at_once_make_one_complete_mailbox() {
    let (env, serve) = staff_site();
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| s.spawn(|| serve.auth("bob@example.org", PW, "imap")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for reply in &replies {
        assert_result(reply, "ok");
    }
    let counts = row_counts(&env.db, "bob@example.org");
    // The golden template carries one tag: one row in every table.
    for (table, n) in &counts {
        assert_eq!(*n, 1, "{table}: {counts:?}");
    }
    assert_eq!(
        serve
            .log()
            .matches("mailbox created from template StaffUI")
            .count(),
        1
    );
}

#[test]
fn sighup_rereads_the_config_and_keeps_the_old_one_when_broken() {
    let env = site();
    let serve = Serve::start(&env.cfg);
    assert_result(&serve.auth("alice@example.org", PW, "imap"), "ok");
    private_file(&serve.config_path, "ldap: [broken\n");
    serve.signal(libc::SIGHUP);
    serve.wait_for_log("reload failed, keeping the running configuration");
    assert_result(&serve.auth("alice@example.org", PW, "imap"), "ok");

    // A good new config applies: here, a new token.
    private_file(&serve.dir.join("token2"), "second-token\n");
    let mut cfg = env.cfg.clone();
    cfg["serve"] = json!({"listen": serve.addr, "token_file": serve.dir.join("token2")});
    private_file(&serve.config_path, &serde_norway::to_string(&cfg).unwrap());
    serve.signal(libc::SIGHUP);
    serve.wait_for_log("configuration reloaded");
    assert_eq!(serve.auth("alice@example.org", PW, "imap").status, 401);
    let body = json!({"username": "alice@example.org", "password": PW}).to_string();
    let reply = serve.request("POST", "/auth", Some("second-token"), body.as_bytes());
    assert_result(&reply, "ok");
}

#[test]
fn sigterm_answers_the_requests_in_flight_then_exits() {
    let mut env = site();
    // The LDAP host accepts and never answers: each login takes the LDAP timeout.
    let hole = BlackHole::new();
    env.ldap_at(&["127.0.0.1"], hole.port());
    env.cfg["ldap"]["timeout_ms"] = json!(1500);
    env.cfg["ldap"]["connect_timeout_ms"] = json!(1500);
    let mut serve = Serve::start(&env.cfg);
    let replies = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| serve.auth("alice@example.org", PW, "imap")))
            .collect();
        while hole.connections() < 3 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        serve.signal(libc::SIGTERM);
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for reply in &replies {
        assert_result(reply, "tempfail");
    }
    let status = serve.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", serve.log());
    assert!(serve.log().contains("serve: stopped"));
}

#[test]
fn a_client_that_sends_nothing_is_dropped() {
    use std::io::Read;
    let env = site();
    let serve = serve_with(&env, json!({"client_timeout_ms": 200}));
    let mut idle = serve.raw_client();
    let mut buf = [0u8; 64];
    // Closed by serve (EOF or reset), not by our own read timeout.
    match idle.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}"),
    }
    assert_result(&serve.auth("alice@example.org", PW, "imap"), "ok");
}

#[test]
fn listens_on_a_unix_socket_too() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let env = site();
    let dir = tempfile::Builder::new()
        .prefix("sock.")
        .tempdir_in(process::scratch())
        .unwrap();
    let path = dir.path().join("serve.sock");
    let serve = serve_with(&env, json!({ "listen": path }));
    assert_result(&serve.auth("alice@example.org", PW, "imap"), "ok");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o666);
    drop(serve); // SIGTERM
    assert!(!path.exists(), "socket left behind");
}

#[test]
fn a_client_trickling_its_request_is_cut_off() {
    use std::io::{Read, Write};
    let env = site();
    let serve = serve_with(&env, json!({"client_timeout_ms": 300}));
    let mut slow = serve.raw_client();
    slow.write_all(b"POST /auth HTTP/1.1\r\n").unwrap();
    // One byte every 50 ms: each read is quick, the request as a whole never completes.
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if slow.write_all(b"X").is_err() {
            break;
        }
    }
    // The 408 may be lost to the reset that bytes sent after the close cause: the log tells.
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
    assert!(serve.log().contains("http status=408"), "{}", serve.log());
}

#[test]
fn answers_100_continue_before_the_body() {
    use std::io::{Read, Write};
    let env = site();
    let serve = Serve::start(&env.cfg);
    let body = json!({"username": "alice@example.org", "password": PW}).to_string();
    let mut client = serve.raw_client();
    write!(
        client,
        "POST /auth HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        serve.token,
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    client.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""result":"ok""#), "{answer}");
}

/// The counts of `mailcow_ldap_auth_mailbox_reads_total` for `read` (`before_ldap` or
/// `after_bind`): (database, remembered).
fn mailbox_reads(serve: &Serve, read: &str) -> (u64, u64) {
    let metrics = serve.get("/metrics");
    let text = metrics.body.as_str().unwrap();
    let count = |source: &str| {
        let line = format!(
            "mailcow_ldap_auth_mailbox_reads_total{{read=\"{read}\",source=\"{source}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {line} in {text}"))
    };
    (count("database"), count("remembered"))
}

/// `cfg` with the reads after the bind never reused: every acceptance on a fresh read.
fn reads_after_bind_never_reused(cfg: &Value) -> Value {
    let mut cfg = cfg.clone();
    cfg["serve"] = json!({"change_poll_ms": 0});
    cfg
}

#[test]
fn a_row_remembered_from_a_recent_login_saves_a_read_but_decides_nothing() {
    let env = site();
    let serve = Serve::start(&reads_after_bind_never_reused(&env.cfg));
    let alice = |password: &str| serve.auth("alice@example.org", password, "imap");
    assert_result(&alice(PW), "ok");
    assert_result(&alice(PW), "ok");
    assert_eq!(
        mailbox_reads(&serve, "before_ldap"),
        (1, 1),
        "the second login took the row again"
    );
    assert_eq!(
        mailbox_reads(&serve, "after_bind"),
        (2, 0),
        "change_poll_ms 0: every acceptance on a read of its own"
    );

    // deactivated since: refused at once (the read after the LDAP bind decides)
    env.db
        .exec("UPDATE mailbox SET active = 0 WHERE username = 'alice@example.org'");
    assert_result(&alice(PW), "disabled");
    // active again: accepted at once (a remembered refusal is read again)
    env.db
        .exec("UPDATE mailbox SET active = 1 WHERE username = 'alice@example.org'");
    assert_result(&alice(PW), "ok");

    // an app password added after the row was remembered works at once, as an app password
    env.db.exec(
        "INSERT INTO app_passwd (name, mailbox, domain, password, imap_access, active) \
         VALUES ('phone', 'alice@example.org', 'example.org', '{PLAIN}app-secret-1', 1, 1)",
    );
    let by_app = alice("app-secret-1");
    assert_result(&by_app, "ok");
    assert!(
        serve.log().contains("app password"),
        "accepted as an app password:\n{}",
        serve.log()
    );
    // a mailbox with app passwords is never remembered: revoking one counts at once
    let (database, remembered) = mailbox_reads(&serve, "before_ldap");
    assert_result(&alice(PW), "ok");
    assert_eq!(
        mailbox_reads(&serve, "before_ldap"),
        (database + 1, remembered)
    );
    env.db.exec("DELETE FROM app_passwd");
    assert_result(&alice("app-secret-1"), "mismatch");
    assert!(!serve.log().contains("app-secret-1"));

    // frank's LDAP entry is gone (none here) and his row remembered from a refused login: an
    // app password added since answers first, as the search's "no entry" is checked again
    env.db.add_mailbox(&Mailbox::new("frank@example.org"));
    let frank = |password: &str| serve.auth("frank@example.org", password, "imap");
    assert_result(&frank("app-secret-2"), "unknown");
    env.db.exec(
        "INSERT INTO app_passwd (name, mailbox, domain, password, imap_access, active) \
         VALUES ('phone', 'frank@example.org', 'example.org', '{PLAIN}app-secret-2', 1, 1)",
    );
    assert_result(&frank("app-secret-2"), "ok");
}

/// Cuts every connection of the test database's user, as a server restart or `wait_timeout`.
fn cut_database_connections(env: &TestEnv) {
    let mut root = mariadb().root();
    let ids: Vec<u64> = root
        .exec(
            "SELECT id FROM information_schema.processlist WHERE user = ?",
            (&env.db.user,),
        )
        .unwrap();
    assert!(!ids.is_empty());
    for id in ids {
        let _ = root.query_drop(format!("KILL {id}"));
    }
}

/// Waits until reads after the bind are reused: the tables have been unchanged for a while
/// (serve::unchanged: 5 s after the last change began); from then on, logins (by `login`, all
/// accepted) spaced wider than the polls read nothing in the database.
fn reads_after_the_bind_reused_from_now_on(serve: &Serve, login: impl Fn() -> Reply) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let before = mailbox_reads(serve, "after_bind");
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(150));
            assert_result(&login(), "ok");
        }
        let after = mailbox_reads(serve, "after_bind");
        if after.0 == before.0 {
            assert_eq!(after.1, before.1 + 3, "each login counted as reused");
            return;
        }
        assert!(Instant::now() < until, "reads after the bind never reused");
    }
}

/// `mailcow_ldap_auth_after_bind_reuse_ends_total`: polls that ended the reuse of earlier reads.
fn reuse_ends(serve: &Serve) -> u64 {
    let metrics = serve.get("/metrics");
    let text = metrics.body.as_str().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("mailcow_ldap_auth_after_bind_reuse_ends_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reuse_ends_total in {text}"))
}

/// Runs `change` and waits (up to 20 s) until a poll ended the reuse of the reads before it.
/// While the tables were settled, that is the poll that saw the change.
fn change_and_wait_for_the_poll(env: &TestEnv, serve: &Serve, change: &str) {
    let before = reuse_ends(serve);
    env.db.exec(change);
    let until = Instant::now() + Duration::from_secs(20);
    while reuse_ends(serve) == before {
        assert!(Instant::now() < until, "no poll saw {change}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reads_after_the_bind_are_reused_only_while_mailcows_tables_are_unchanged() {
    let (env, serve) = staff_site();
    let bob = || serve.auth("bob@example.org", PW, "imap");
    assert_result(&bob(), "ok");
    let reused_from_now_on = || reads_after_the_bind_reused_from_now_on(&serve, bob);
    // Each change counts from the next poll, whichever table and column it is in, though the
    // login before it was answered from a reused read.
    for (change, undo, refused) in [
        (
            "UPDATE mailbox SET active = 0",
            "UPDATE mailbox SET active = 1",
            "disabled",
        ),
        (
            "UPDATE domain SET active = 0",
            "UPDATE domain SET active = 1",
            "disabled",
        ),
        (
            "UPDATE mailbox SET attributes = JSON_SET(attributes, '$.imap_access', '0')",
            "UPDATE mailbox SET attributes = JSON_SET(attributes, '$.imap_access', '1')",
            "disabled",
        ),
        (
            "UPDATE mailbox SET authsource = 'mailcow'",
            "UPDATE mailbox SET authsource = 'ldap'",
            "next",
        ),
    ] {
        reused_from_now_on();
        change_and_wait_for_the_poll(&env, &serve, change);
        assert_result(&bob(), refused);
        // (a reused read that would refuse is read again: no need to wait)
        env.db.exec(undo);
        assert_result(&bob(), "ok");
    }
    // a template changed in mailcow's UI is applied by the next login after the poll
    reused_from_now_on();
    let quota = || env.db.rows("SELECT quota FROM mailbox")[0][0].clone();
    assert_eq!(quota().as_deref(), Some("1073741824"));
    change_and_wait_for_the_poll(
        &env,
        &serve,
        "UPDATE templates SET attributes = JSON_SET(attributes, '$.quota', 2147483648) \
         WHERE template = 'StaffUI'",
    );
    assert_result(&bob(), "ok");
    assert_eq!(quota().as_deref(), Some("2147483648"));
}

#[test]
fn logins_right_after_a_template_reapply_obey_it_though_their_read_predates_it() {
    // Polls a second apart: the logins below fall between two of them.
    let (env, serve) = staff_site_with(json!({"change_poll_ms": 1000}));
    let bob = || serve.auth("bob@example.org", PW, "imap");
    assert_result(&bob(), "ok");
    change_and_wait_for_the_poll(
        &env,
        &serve,
        "UPDATE templates SET attributes = JSON_SET(attributes, '$.imap_access', 0) \
         WHERE template = 'StaffUI'",
    );
    // The first login re-applies the template (IMAP off). The next ones are offered its read
    // from before that write: it needs a write, so it is read again, and the update found
    // done decides.
    let reused = mailbox_reads(&serve, "after_bind").1;
    assert_result(&bob(), "disabled");
    for _ in 0..5 {
        assert_result(&bob(), "disabled");
    }
    assert!(
        mailbox_reads(&serve, "after_bind").1 > reused,
        "a read from before the re-apply was offered"
    );
    let imap = env.db.rows(
        "SELECT JSON_VALUE(attributes, '$.imap_access') FROM mailbox \
         WHERE username = 'bob@example.org'",
    );
    assert_eq!(imap[0][0].as_deref(), Some("0"));
}

#[test]
fn a_failed_poll_ends_the_reuse_of_every_read_made_before_it() {
    let (env, serve) = staff_site();
    let bob = || serve.auth("bob@example.org", PW, "imap");
    assert_result(&bob(), "ok");
    reads_after_the_bind_reused_from_now_on(&serve, bob);
    let before = mailbox_reads(&serve, "after_bind");
    // Every connection serve has to the database goes: the poll's fails, and is made again.
    cut_database_connections(&env);
    serve.wait_for_log("cannot ask the database whether mailcow's tables changed");
    serve.wait_for_log("the database answers again");
    // A pooled connection used in the last 2 s is not pinged: its login may find it cut and
    // answer tempfail; the next one reads on a new connection.
    if bob().body["result"] == "tempfail" {
        assert_result(&bob(), "ok");
    }
    let after = mailbox_reads(&serve, "after_bind");
    assert_eq!(
        after.1, before.1,
        "the read kept from before the failed poll is not reused (still fresh: under 5 s old)"
    );
    assert!(after.0 > before.0, "read in the database");
}

//! `serve` with `ldap.from_mailcow` (the mailcow-dockerized recipe): mailcow's settings read at
//! start, again every `serve.mailcow_settings_refresh_s` and on SIGHUP, the logins on pooled
//! LDAP connections of those settings. slapd is reached through counting forwarders, so the
//! tests see how many LDAP connections serve opens and to which "host".
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::serve::{Serve, assert_result};
use common::*;
use provision_helpers::{golden, insert_template};
use serde_json::json;
use std::net::SocketAddr;

const PW: &str = "Alice-Pw-1";
const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";

/// alice and bob (employeeType staff) in LDAP, domain example.org, template Staff, no
/// mailboxes; the file leaves the LDAP settings to mailcow's table (still empty).
fn env() -> TestEnv {
    let mut env = TestEnv::new(&[
        LdapUser::new("alice", ALICE, PW).employee_type("staff"),
        LdapUser::new("bob", BOB, PW).employee_type("staff"),
    ]);
    env.db.add_domain(&Domain::new("example.org"));
    insert_template(
        &env.db,
        "Staff",
        golden()["template"]["attributes_text"].as_str().unwrap(),
    );
    config_from_mailcow(&mut env.cfg);
    env
}

/// A forwarder to the shared slapd: a "host" whose connections are counted.
fn ldap_host() -> Forwarder {
    let target: SocketAddr = format!("127.0.0.1:{}", slapd().port).parse().unwrap();
    Forwarder::start("127.0.0.1:0", target).expect("forwarder")
}

/// mailcow's UI saving the provider with `host` as the LDAP server and the mapping given.
fn save_provider(env: &TestEnv, host: &Forwarder, mappers: &str, templates: &str) {
    let port = host.addr.port().to_string();
    save_as_mailcow_ui(env, mappers, templates, &[("port", &port)]);
}

/// serve on `cfg` with one pooled LDAP connection for searches and one for binds, reading
/// mailcow's settings again every second.
fn serve(cfg: &serde_json::Value) -> Serve {
    let mut cfg = cfg.clone();
    cfg["serve"] = json!({
        "ldap_search_connections": 1,
        "ldap_bind_connections": 1,
        "mailcow_settings_refresh_s": 1
    });
    Serve::start(&cfg)
}

/// [`env`] with the provider saved (its host counted, no mapping), and [`serve`] on it.
fn running() -> (TestEnv, Forwarder, Serve) {
    let env = env();
    let host = ldap_host();
    save_provider(&env, &host, "[]", "[]");
    let serve = serve(&env.cfg);
    (env, host, serve)
}

fn metrics(serve: &Serve) -> String {
    serve.get("/metrics").body.as_str().unwrap().to_owned()
}

#[test]
fn logins_share_the_pooled_connections_of_mailcows_settings() {
    let (_env, host, serve) = running();
    for _ in 0..10 {
        assert_result(&serve.auth(ALICE, PW, "imap"), "ok");
    }
    std::thread::scope(|threads| {
        for _ in 0..4 {
            threads.spawn(|| {
                for _ in 0..5 {
                    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");
                }
            });
        }
    });
    // 30 logins on at most the two pooled connections (per login: one each).
    assert_eq!(host.connections(), 2, "{}", serve.log());
    let text = metrics(&serve);
    assert!(
        text.contains("mailcow_ldap_auth_mailcow_settings_refresh_failed 0"),
        "{text}"
    );
    assert!(
        !text.contains("mailcow_ldap_auth_mailcow_settings_loaded_timestamp_seconds 0\n"),
        "{text}"
    );
    assert!(!serve.log().contains(SVC_PW), "bind password in the log");
}

#[test]
fn sighup_reads_the_changed_settings_and_the_next_login_follows_them() {
    let env = env();
    let (first, second) = (ldap_host(), ldap_host());
    save_provider(&env, &first, "[]", "[]");
    let mut cfg = env.cfg.clone();
    // No periodic reading gets in the way: only the SIGHUP reads the table.
    cfg["serve"] = json!({"mailcow_settings_refresh_s": 3600});
    let serve = Serve::start(&cfg);
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");
    serve.wait_for_log("mailbox created from template Default");
    let before = first.connections();
    assert!(before > 0);

    // The admin moves LDAP to another server and maps staff to Staff (index-keyed, as PHP
    // keeps a list with a gap).
    save_provider(&env, &second, r#"{"1":"staff"}"#, r#"{"1":"Staff"}"#);
    serve.signal(libc::SIGHUP);
    serve.wait_for_log("configuration reloaded");
    assert_result(&serve.auth(BOB, PW, "imap"), "ok");
    serve.wait_for_log("mailbox created from template Staff");
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");
    assert_eq!(first.connections(), before, "{}", serve.log());
    assert!(second.connections() > 0);
}

#[test]
fn a_change_in_mailcows_ui_counts_after_the_refresh_interval() {
    let (env, first, serve) = running();
    let second = ldap_host();
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");

    // Only the mapping changes: the pooled connections stay.
    save_provider(&env, &first, r#"["staff"]"#, r#"["Staff"]"#);
    serve.wait_for_log(
        "mailcow's LDAP settings changed: the mapping changed; connection pools kept",
    );
    assert_result(&serve.auth(BOB, PW, "imap"), "ok");
    serve.wait_for_log("mailbox created from template Staff");
    assert_eq!(first.connections(), 2, "{}", serve.log());

    // Another server: new pools, and the next login goes there.
    save_provider(&env, &second, r#"["staff"]"#, r#"["Staff"]"#);
    serve.wait_for_log("mailcow's LDAP settings changed: new connection pools");
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");
    assert_eq!(first.connections(), 2, "{}", serve.log());
    assert_eq!(second.connections(), 2, "{}", serve.log());
}

#[test]
fn unusable_settings_keep_the_last_good_ones_and_say_why() {
    let (env, host, serve) = running();
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");

    // The admin removes the LDAP provider: SIGHUP and the periodic readings keep the last
    // good settings, and the log says why, once.
    env.db.exec("DELETE FROM identity_provider");
    serve.signal(libc::SIGHUP);
    serve.wait_for_log("configuration reloaded");
    let why = "serve: reading mailcow's LDAP settings failed: configuration error in mailcow's identity_provider \
               table: no LDAP identity provider configured in mailcow (authsource missing)";
    serve.wait_for_log(&format!(
        "{why}; set it up in mailcow's UI or turn ldap.from_mailcow off; keeping the last good ones"
    ));
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");
    assert_result(&serve.auth(BOB, PW, "imap"), "ok");
    let text = metrics(&serve);
    assert!(
        text.contains("mailcow_ldap_auth_mailcow_settings_refresh_failed 1"),
        "{text}"
    );
    // A bad value instead: the same.
    save_provider(&env, &host, "[]", "[]");
    serve.wait_for_log("mailcow's LDAP settings read again");
    env.db
        .exec("UPDATE identity_provider SET `value` = 'x' WHERE `key` = 'port'");
    serve.wait_for_log("port: 'x' is not a port number; keeping the last good ones");
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");
    assert_eq!(serve.log().matches(why).count(), 1, "{}", serve.log());
    // Two pooled connections before the SIGHUP (which builds new pools), two after it.
    assert_eq!(host.connections(), 4, "{}", serve.log());
}

#[test]
fn without_a_provider_at_start_logins_are_a_configuration_error_until_one_is_saved() {
    let env = env();
    let serve = serve(&env.cfg);
    serve.wait_for_log(
        "no LDAP identity provider configured in mailcow (authsource missing); set it up in \
         mailcow's UI or turn ldap.from_mailcow off; logins read them per login until a reading \
         succeeds",
    );
    let reply = serve.auth(ALICE, PW, "imap");
    assert_result(&reply, "tempfail");
    assert!(
        reply.body["reason"]
            .as_str()
            .unwrap()
            .contains("no LDAP identity provider configured in mailcow"),
        "{reply:?}"
    );
    let text = metrics(&serve);
    for line in [
        "mailcow_ldap_auth_mailcow_settings_refresh_failed 1",
        "mailcow_ldap_auth_mailcow_settings_loaded_timestamp_seconds 0\n",
    ] {
        assert!(text.contains(line), "{text}");
    }

    let host = ldap_host();
    save_provider(&env, &host, "[]", "[]");
    serve.wait_for_log("mailcow's LDAP settings changed: new connection pools");
    assert!(serve.log().contains("mailcow's LDAP settings read again"));
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");
    assert_eq!(host.connections(), 2, "{}", serve.log());
}

#[test]
fn a_database_outage_keeps_the_settings_and_is_logged_once() {
    let mut env = env();
    let host = ldap_host();
    save_provider(&env, &host, "[]", "[]");
    let target: SocketAddr = format!("127.0.0.1:{}", env.db.server.port).parse().unwrap();
    let database = Switch::start("127.0.0.1:0", target).expect("switch");
    env.cfg["database"]["port"] = json!(database.addr.port());
    let serve = serve(&env.cfg);
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");

    database.down();
    serve.wait_for_log("keeping the last good ones");
    // A few more readings fail meanwhile (one a second).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    database.up();
    serve.wait_for_log("mailcow's LDAP settings read again");
    assert_eq!(
        serve.log().matches("keeping the last good ones").count(),
        1,
        "{}",
        serve.log()
    );
    assert_result(&serve.auth(ALICE, PW, "imap"), "ok");
    assert_eq!(host.connections(), 2, "{}", serve.log());
    let log = serve.log();
    assert!(!log.contains(SVC_PW) && !log.contains(&env.db.password));
}

#[test]
fn warnings_about_mailcows_settings_are_logged_with_each_new_reading() {
    let mut env = env();
    env.cfg["ldap"]["ca_file"] = json!(certs().ca);
    let host = ldap_host();
    save_provider(&env, &host, "[]", "[]");
    let serve = serve(&env.cfg);
    let warning = "ldap.ca_file is set but neither use_ssl nor use_tls is on";
    serve.wait_for_log(warning);
    save_provider(&env, &host, r#"["staff"]"#, r#"["Staff"]"#);
    serve.wait_for_log("mailcow's LDAP settings changed");
    assert_eq!(serve.log().matches(warning).count(), 2, "{}", serve.log());
}

//! Provisioning integration tests (issue 3), what refuses or fails a provisioning login: the
//! domain's limits, database faults and lock waits, parallel first logins, services and
//! protocol access, login names. The real binary through checkpassword against a throwaway
//! slapd and MariaDB with the real mailcow schema, as in tests/provision.rs.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;
#[path = "common/provision_setup.rs"]
mod provision_setup;

use common::*;
use provision_helpers::*;
use provision_setup::*;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Limits: each refused with exit 1, nothing written
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_refused_and_untouched(env: &TestEnv, who: &str, reason: &str) {
    let before = snapshot(&env.db);
    login(env, who)
        .assert_code(1)
        .assert_stderr_contains("result=rejected")
        .assert_stderr_contains(reason);
    assert_eq!(snapshot(&env.db), before);
}

#[test]
fn limit_max_mailboxes() {
    let mut domain = golden_domain();
    domain.mailboxes = 2;
    let env = staff_env_with(&[bob(), user("carol", "staff")], domain);
    other_mailbox(&env, "old@example.org", 0, "");
    // resources do not count against the limit
    other_mailbox(&env, "room@example.org", 0, "location");
    login(&env, BOB).assert_code(0);
    assert_refused_and_untouched(&env, "carol@example.org", "mailbox limit");
    assert_eq!(mailbox_count(&env.db), 3);
}

#[test]
fn limit_max_quota_per_mailbox() {
    let mut domain = golden_domain();
    domain.maxquota = 1023;
    let env = staff_env_with(&[bob()], domain);
    assert_refused_and_untouched(&env, BOB, "quota");
    assert_eq!(mailbox_count(&env.db), 0);
}

#[test]
fn limit_domain_quota() {
    let mut domain = golden_domain();
    domain.quota = 1500;
    let env = staff_env_with(&[bob(), user("carol", "staff")], domain);
    // 476.38 MiB, which mailcow rounds to 476: 476 + 1024 = 1500 still fits
    other_mailbox(&env, "old@example.org", 476 * MIB + 400_000, "");
    login(&env, BOB).assert_code(0);
    assert_refused_and_untouched(&env, "carol@example.org", "quota");
    assert_eq!(mailbox_count(&env.db), 2);
}

#[test]
fn limit_missing_domain_and_alias_domain() {
    let mut env = plain_env(&[bob(), LdapUser::new("dave", "dave@example.net", PW)]);
    insert_template(&env.db, "StaffUI", &staff_text());
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "StaffUI" }]);
    assert_refused_and_untouched(&env, BOB, "domain example.org missing");
    // alias domains are not accepted
    let mut d = golden_domain();
    d.domain = "example.com".into();
    d.insert(&env.db);
    env.db.exec(
        "INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('example.net', 'example.com')",
    );
    assert_refused_and_untouched(&env, "dave@example.net", "domain example.net missing");
    assert_eq!(mailbox_count(&env.db), 0);
}

#[test]
fn limit_inactive_domain() {
    let mut domain = golden_domain();
    domain.active = 0;
    let env = staff_env_with(&[bob()], domain);
    assert_refused_and_untouched(&env, BOB, "domain example.org inactive");
    assert_eq!(mailbox_count(&env.db), 0);
}

#[test]
fn limit_alias_collision() {
    let env = staff_env(&[bob()]);
    env.db.exec(
        "INSERT INTO alias (address, goto, domain, active) \
         VALUES ('bob@example.org', 'someone@example.org', 'example.org', 1)",
    );
    assert_refused_and_untouched(&env, BOB, "already an alias");
    assert_eq!(mailbox_count(&env.db), 0);
}

#[test]
fn limit_spam_alias_collision() {
    let env = staff_env(&[bob()]);
    env.db.exec(
        "INSERT INTO spamalias (address, goto, description, validity, permanent) \
         VALUES ('bob@example.org', 'someone@example.org', 'temp', 0, 1)",
    );
    assert_refused_and_untouched(&env, BOB, "spam alias");
    assert_eq!(mailbox_count(&env.db), 0);
}

// ---------------------------------------------------------------------------------------------
// Failures: temporary, and nothing left behind
// ---------------------------------------------------------------------------------------------

#[test]
fn database_error_midway_is_a_temporary_failure_and_rolls_back() {
    let env = staff_env(&[bob()]);
    env.db.exec(
        "CREATE TRIGGER boom BEFORE INSERT ON user_acl FOR EACH ROW \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'",
    );
    let before = snapshot(&env.db);
    login(&env, BOB)
        .assert_code(111)
        .assert_stderr_contains("result=tempfail")
        .assert_stderr_contains("boom");
    assert_eq!(snapshot(&env.db), before);
    env.db.exec("DROP TRIGGER boom");
    login(&env, BOB).assert_code(0);
    assert_rows(&env.db, BOB, &golden()["rows"]);
}

#[test]
fn lock_wait_is_a_bounded_temporary_failure() {
    let mut env = staff_env(&[bob()]);
    // give the database more time than the lock wait, so the server's timeout answers
    env.cfg["ldap"]["timeout_ms"] = json!(8000);
    env.cfg["deadline_ms"] = json!(15000);
    let mut holder = env.db.conn();
    {
        use mysql::prelude::Queryable;
        holder.query_drop("START TRANSACTION").unwrap();
        holder
            .query_drop("SELECT * FROM domain WHERE domain = 'example.org' FOR UPDATE")
            .unwrap();
    }
    let before = snapshot(&env.db);
    let t0 = std::time::Instant::now();
    login(&env, BOB)
        .assert_code(111)
        .assert_stderr_contains("Lock wait timeout");
    // the session's innodb_lock_wait_timeout, not the server default of 50 s
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(snapshot(&env.db), before);
    drop(holder);
    login(&env, BOB).assert_code(0);
    assert_one_of_each(&env.db, BOB, 1);
}

// ---------------------------------------------------------------------------------------------
// Races
// ---------------------------------------------------------------------------------------------

#[test]
fn twenty_parallel_first_logins_of_one_user() {
    let env = staff_env(&[bob()]);
    let outs: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20).map(|_| s.spawn(|| login(&env, BOB))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        out.assert_code(0);
    }
    let created = outs
        .iter()
        .filter(|o| o.stderr.contains("mailbox created from template StaffUI"))
        .count();
    assert_eq!(created, 1, "exactly one login creates the mailbox");
    assert_eq!(mailbox_count(&env.db), 1);
    assert_one_of_each(&env.db, BOB, 1);
    assert_rows(&env.db, BOB, &golden()["rows"]);
}

#[test]
fn domain_limit_holds_under_parallel_first_logins() {
    let mut domain = golden_domain();
    domain.mailboxes = 3;
    let users: Vec<LdapUser> = (0..8).map(|i| user(&format!("u{i}"), "staff")).collect();
    let env = staff_env_with(&users, domain);
    let outs: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let env = &env;
                s.spawn(move || login(env, &format!("u{i}@example.org")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = outs.iter().filter(|o| o.code == Some(0)).count();
    let refused: Vec<&Outcome> = outs.iter().filter(|o| o.code == Some(1)).collect();
    assert_eq!(ok, 3, "{outs:#?}");
    assert_eq!(refused.len(), 5, "{outs:#?}");
    for o in refused {
        o.assert_stderr_contains("mailbox limit");
    }
    assert_eq!(mailbox_count(&env.db), 3);
    for (table, rows) in snapshot(&env.db) {
        assert_eq!(rows.len(), 3, "{table}");
    }
}

// ---------------------------------------------------------------------------------------------
// Services and protocol access
// ---------------------------------------------------------------------------------------------

#[test]
fn every_service_name_provisions() {
    let services = ["imap", "pop3", "sieve", "smtp"];
    let users: Vec<LdapUser> = services.iter().map(|s| user(s, "contractor")).collect();
    let env = staff_env(&users);
    for s in services {
        let who = format!("{s}@example.org");
        let out = env.cp().service(s).login(&who, PW).run();
        out.assert_code(0)
            .assert_stderr_contains(&format!("service={s}"))
            .assert_stderr_contains("mailbox created from template Default");
        assert_eq!(out.env.get("USER"), Some(&who));
        assert_one_of_each(&env.db, &who, 0);
    }
}

#[test]
fn disabled_pop3_provisions_but_refuses_pop3() {
    // StaffUI has pop3_access 0
    let env = staff_env(&[bob(), user("carol", "staff")]);
    env.cp().service("imap").login(BOB, PW).run().assert_code(0);
    // a fresh user logging in by POP3 is provisioned, then refused
    env.cp()
        .service("pop3")
        .login("carol@example.org", PW)
        .run()
        .assert_code(1)
        .assert_stderr_contains("mailbox created from template StaffUI")
        .assert_stderr_lacks("result=ok");
    assert_one_of_each(&env.db, "carol@example.org", 1);
    // existing mailboxes: refused by POP3 (before LDAP), fine by IMAP
    for who in [BOB, "carol@example.org"] {
        env.cp()
            .service("pop3")
            .login(who, PW)
            .run()
            .assert_code(1)
            .assert_stderr_contains("service pop3 disabled");
        env.cp().service("imap").login(who, PW).run().assert_code(0);
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------------------------

#[test]
fn idn_login_provisions_and_finds_the_punycode_mailbox() {
    let puny = "bob@xn--bcher-kva.example";
    let mut env = plain_env(&[LdapUser::new("bob", puny, PW)
        .display_name("Bob Bücher")
        .employee_type("staff")]);
    let mut d = golden_domain();
    d.domain = "xn--bcher-kva.example".into();
    d.insert(&env.db);
    insert_template(&env.db, "StaffUI", &staff_text());
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "StaffUI" }]);
    let out = login(&env, " Bob@Bücher.Example ");
    out.assert_code(0)
        .assert_stderr_contains("mailbox created from template StaffUI");
    assert_eq!(out.env.get("USER").map(String::as_str), Some(puny));
    let m = &json_rows(
        &env.db,
        "SELECT username, local_part, domain, name FROM mailbox",
    )[0];
    assert_eq!(m["username"], json!(puny));
    assert_eq!(m["local_part"], json!("bob"));
    assert_eq!(m["domain"], json!("xn--bcher-kva.example"));
    assert_eq!(m["name"], json!("Bob Bücher"));
    assert_one_of_each(&env.db, puny, 1);
    // second login by the Unicode name finds the same mailbox
    login(&env, "bob@bücher.example")
        .assert_code(0)
        .assert_stderr_contains("reason=\"ok\"");
    // lookup mode too
    let out = env.cp().lookup("BOB@BÜCHER.example").run();
    out.assert_code(0);
    assert_eq!(out.env.get("USER").map(String::as_str), Some(puny));
    assert_eq!(mailbox_count(&env.db), 1);
}

#[test]
fn malformed_login_names_are_refused_not_tempfailed() {
    let env = staff_env(&[bob()]);
    let before = snapshot(&env.db);
    for name in [
        "bob",
        "bob@",
        "@example.org",
        "b ob@example.org",
        "bob@exa mple.org",
    ] {
        login(&env, name)
            .assert_code(1)
            .assert_stderr_contains("malformed login name");
        env.cp().lookup(name).run().assert_code(3);
    }
    assert_eq!(snapshot(&env.db), before);
}

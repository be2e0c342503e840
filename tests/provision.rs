//! Provisioning integration tests (issue 3), first and later logins: the real binary, driven
//! like Dovecot drives it (checkpassword, credentials on fd 3), against a throwaway slapd and a
//! MariaDB loaded with the real mailcow schema. Every test has its own database and LDAP
//! subtree. Limits, failures, races, services and addresses: tests/provision_limits.rs.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;
#[path = "common/provision_setup.rs"]
mod provision_setup;

use common::*;
use provision_helpers::*;
use provision_setup::*;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------------------------
// First login
// ---------------------------------------------------------------------------------------------

#[test]
fn first_login_writes_the_golden_rows() {
    let env = staff_env(&[bob()]);
    let out = login(&env, BOB);
    out.assert_code(0)
        .assert_stderr_contains("result=ok")
        .assert_stderr_contains("mailbox created from template StaffUI")
        .assert_stderr_contains("RL_VALUE bob@example.org = 10 / 1h")
        .assert_stderr_contains("memcached flush")
        .assert_never_printed(PW);
    assert_eq!(out.env.get("USER").map(String::as_str), Some(BOB));
    assert_eq!(
        out.env.get("userdb_quota_rule").map(String::as_str),
        Some("*:bytes=1073741824")
    );

    let golden = golden();
    assert_rows(&env.db, BOB, &golden["rows"]);
    // nothing else was written anywhere
    for (table, rows) in snapshot(&env.db) {
        assert_eq!(rows.len(), 1, "{table}: {rows:#?}");
    }
    // the attributes text is byte for byte what mailcow's INSERT + JSON_SET leaves
    let text = single(&env.db, "SELECT attributes FROM mailbox").unwrap();
    let stamp = single(
        &env.db,
        "SELECT JSON_VALUE(attributes, '$.passwd_update') FROM mailbox",
    )
    .unwrap();
    let golden_text = golden["rows"]["mailbox"][0]["attributes"].as_str().unwrap();
    let golden_stamp = "2026-11-28 16:23:50";
    assert_eq!(text.replace(&stamp, golden_stamp), golden_text);
    // the stored hash is the PHP-computed one of the template text
    assert_eq!(
        single(
            &env.db,
            "SELECT JSON_VALUE(attributes, '$.attribute_hash') FROM mailbox"
        )
        .as_deref(),
        golden["template"]["attribute_hash"].as_str()
    );
}

/// The expected rows for a mailbox created from the built-in Default template.
fn default_rows(username: &str, name: &str) -> Value {
    let (local, domain) = username.split_once('@').unwrap();
    let mut rows = golden()["rows"].clone();
    let (_, default_hash) = vector("mailcow Default mailbox template as inserted by mailcow");
    for table in [
        "alias",
        "quota2",
        "quota2replica",
        "user_acl",
        "_sogo_static_view",
    ] {
        let row = &mut rows[table][0];
        for col in ["username", "address", "goto", "c_uid", "c_name", "mail"] {
            if row.get(col).is_some() {
                row[col] = json!(username);
            }
        }
    }
    let m = &mut rows["mailbox"][0];
    m["username"] = json!(username);
    m["local_part"] = json!(local);
    m["domain"] = json!(domain);
    m["name"] = json!(name);
    m["quota"] = json!(0);
    let mut attrs: Map<String, Value> =
        serde_json::from_str(m["attributes"].as_str().unwrap()).unwrap();
    attrs["pop3_access"] = json!("1");
    attrs["attribute_hash"] = json!(default_hash);
    m["attributes"] = json!(Value::Object(attrs).to_string());
    rows["alias"][0]["domain"] = json!(domain);
    rows["_sogo_static_view"][0]["domain"] = json!(domain);
    rows["_sogo_static_view"][0]["c_cn"] = json!(name);
    // Default: every ACL 1 except syncjobs, sogo_profile_reset and the absent pw_reset
    rows["user_acl"][0]["pw_reset"] = json!(0);
    rows["tags_mailbox"] = json!([]);
    rows
}

#[test]
fn first_login_with_the_builtin_default_template() {
    let mut nameless = user("carol", "contractor");
    nameless.display_name = None;
    let env = staff_env(&[
        LdapUser::new("dave", "dave@example.org", PW)
            .display_name("<Dave D>")
            .employee_type("contractor"),
        nameless,
        // no employeeType at all: the default template too
        LdapUser::new("erin", "erin@example.org", PW).display_name("Erin"),
    ]);
    for (who, name) in [
        ("dave@example.org", "Dave D"),
        // no displayName: the local part (mailcow's fallback is broken and leaves '')
        ("carol@example.org", "carol"),
        ("erin@example.org", "Erin"),
    ] {
        login(&env, who)
            .assert_code(0)
            .assert_stderr_contains("mailbox created from template Default")
            .assert_stderr_contains(&format!("HDEL RL_VALUE {who}"));
        assert_rows(&env.db, who, &default_rows(who, name));
    }
    assert_eq!(mailbox_count(&env.db), 3);
}

#[test]
fn sogo_view_row_carries_aliases_alias_domains_and_external_sender_acl() {
    let env = staff_env(&[bob()]);
    env.db.exec(
        "INSERT INTO alias (address, goto, domain, active, sogo_visible) VALUES \
         ('sales@example.org', 'bob@example.org', 'example.org', 1, 1), \
         ('info@example.org', 'other@example.org,bob@example.org', 'example.org', 1, 1), \
         ('old@example.org', 'bob@example.org', 'example.org', 0, 1), \
         ('hidden@example.org', 'bob@example.org', 'example.org', 1, 0), \
         ('@example.org', 'bob@example.org', 'example.org', 1, 1), \
         ('notbob@example.org', 'bobby@example.org', 'example.org', 1, 1)",
    );
    env.db.exec(
        "INSERT INTO alias_domain (alias_domain, target_domain) VALUES ('example.net', 'example.org')",
    );
    env.db.exec(
        "INSERT INTO sender_acl (logged_in_as, send_as, external) VALUES \
         ('bob@example.org', 'bob@external.test', 1), ('bob@example.org', 'team@example.org', 0)",
    );
    login(&env, BOB).assert_code(0);
    let row = &json_rows(
        &env.db,
        "SELECT aliases, ad_aliases, ext_acl, c_cn FROM _sogo_static_view",
    )[0];
    assert_eq!(row["aliases"], json!("info@example.org sales@example.org"));
    assert_eq!(row["ad_aliases"], json!("bob@example.net"));
    assert_eq!(row["ext_acl"], json!("bob@external.test"));
    assert_eq!(row["c_cn"], json!("Bob Example"));
}

#[test]
fn no_mapping_and_no_default_template_refuses_and_writes_nothing() {
    let mut env = staff_env(&[user("carol", "contractor")]);
    env.cfg["default_template"] = Value::Null;
    let before = snapshot(&env.db);
    login(&env, "carol@example.org")
        .assert_code(1)
        .assert_stderr_contains("no attribute mapping");
    assert_eq!(snapshot(&env.db), before);
}

#[test]
fn missing_template_refuses_and_writes_nothing() {
    let mut env = staff_env(&[bob()]);
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "Gone" }]);
    let before = snapshot(&env.db);
    login(&env, BOB)
        .assert_code(1)
        .assert_stderr_contains("template Gone missing");
    assert_eq!(snapshot(&env.db), before);
    // a domain template of that name does not count
    env.db
        .exec("INSERT INTO templates (template, type, attributes) VALUES ('Gone', 'domain', '{}')");
    login(&env, BOB)
        .assert_code(1)
        .assert_stderr_contains("template Gone missing");
    assert_eq!(snapshot(&env.db), before);
}

// ---------------------------------------------------------------------------------------------
// Later logins
// ---------------------------------------------------------------------------------------------

#[test]
fn second_login_writes_nothing() {
    let env = staff_env(&[bob()]);
    login(&env, BOB).assert_code(0);
    let before = snapshot(&env.db);
    // DATETIME has one-second resolution: any write now would change `modified`
    std::thread::sleep(std::time::Duration::from_millis(1100));
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("reason=\"ok\"");
    assert_eq!(snapshot(&env.db), before);
    assert!(before["mailbox"][0]["modified"].is_string());
}

#[test]
fn changed_template_text_is_reapplied() {
    let env = staff_env(&[bob()]);
    login(&env, BOB).assert_code(0);
    // things a template update keeps: keys it does not know, relayhost, passwd_update
    env.db.exec(
        "UPDATE mailbox SET attributes = JSON_SET(attributes, '$.recovery_email', 'r@x.org', \
         '$.relayhost', '3') WHERE username = 'bob@example.org'",
    );
    let stamp = single(
        &env.db,
        "SELECT JSON_VALUE(attributes, '$.passwd_update') FROM mailbox",
    );

    // raw text stored with unescaped UTF-8 and an emoji; quota 5 MiB, "active": "1"
    let (raw, php_hash) = vector("raw text stored with unescaped UTF-8, emoji and spaces");
    set_template_text(&env.db, "StaffUI", &raw);
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("template StaffUI re-applied")
        .assert_stderr_contains("memcached flush");

    let m = &json_rows(
        &env.db,
        "SELECT quota, active, name, attributes FROM mailbox",
    )[0];
    assert_eq!(m["quota"], json!(5 * MIB));
    assert_eq!(m["active"], json!(1));
    assert_eq!(m["name"], json!("Bob Example"));
    let attrs: Map<String, Value> =
        serde_json::from_str(m["attributes"].as_str().unwrap()).unwrap();
    assert_eq!(attrs["attribute_hash"], json!(php_hash));
    assert_eq!(attrs["recovery_email"], json!("r@x.org"));
    assert_eq!(attrs["relayhost"], json!("3"));
    assert_eq!(
        attrs.get("passwd_update").and_then(Value::as_str),
        stamp.as_deref()
    );
    // keys the new template does not carry keep their values
    assert_eq!(attrs["pop3_access"], json!("0"));
    assert_eq!(attrs["quarantine_notification"], json!("hourly"));
    assert!(attrs.values().all(Value::is_string), "{attrs:?}");
    // tags are added, never removed
    let tags: Vec<String> = env
        .db
        .rows("SELECT tag_name FROM tags_mailbox ORDER BY tag_name")
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    let mut want = vec!["a/b", "q\"uote", "staff", "Ünïcödé 📬"];
    want.sort();
    let mut tags_sorted = tags.clone();
    tags_sorted.sort();
    assert_eq!(tags_sorted, want);
    // every ACL column rewritten: the new template has no acl_* key, so all 0
    let acl = &json_rows(&env.db, "SELECT * FROM user_acl")[0];
    for (col, v) in acl {
        if col != "username" {
            assert_eq!(v, &json!(0), "user_acl.{col}");
        }
    }
    assert_eq!(
        single(&env.db, "SELECT active FROM alias").as_deref(),
        Some("1")
    );
    assert_one_of_each(&env.db, BOB, 4);

    // and the next login finds nothing to do
    let before = snapshot(&env.db);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("reason=\"ok\"");
    assert_eq!(snapshot(&env.db), before);
}

#[test]
fn reapplied_inactive_template_deactivates_everywhere() {
    let env = staff_env(&[bob()]);
    login(&env, BOB).assert_code(0);
    set_template_text(
        &env.db,
        "StaffUI",
        &staff_text().replace("\"active\":1", "\"active\":0"),
    );
    login(&env, BOB)
        .assert_code(1)
        .assert_stderr_contains("mailbox inactive");
    assert_eq!(
        single(&env.db, "SELECT active FROM mailbox").as_deref(),
        Some("0")
    );
    assert_eq!(
        single(&env.db, "SELECT active FROM alias").as_deref(),
        Some("0")
    );
    assert!(env.db.rows("SELECT * FROM _sogo_static_view").is_empty());
    // An inactive mailbox is refused before LDAP is asked, so a later template cannot
    // re-activate it by a login (mailcow's quirk: it re-applies first, then checks).
    set_template_text(&env.db, "StaffUI", &staff_text());
    let before = snapshot(&env.db);
    login(&env, BOB)
        .assert_code(1)
        .assert_stderr_contains("mailbox inactive");
    assert_eq!(snapshot(&env.db), before);
}

#[test]
fn changed_display_name_updates_the_name_only_when_given() {
    let env = staff_env(&[bob()]);
    login(&env, BOB).assert_code(0);
    let dn = env.ldap.user_dn("bob");
    ldap_replace(&dn, "displayName", &["<Robert Example>"]);
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("template StaffUI re-applied");
    let mut expected = golden()["rows"].clone();
    expected["mailbox"][0]["name"] = json!("Robert Example");
    expected["_sogo_static_view"][0]["c_cn"] = json!("Robert Example");
    assert_rows(&env.db, BOB, &expected);

    // no displayName in LDAP: the stored name stays and nothing is re-applied
    ldap_replace(&dn, "displayName", &[]);
    let before = snapshot(&env.db);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("reason=\"ok\"");
    assert_eq!(snapshot(&env.db), before);
}

#[test]
fn update_breaking_the_domain_quota_is_skipped_as_a_whole() {
    let mut domain = golden_domain();
    domain.quota = 1500;
    let env = staff_env_with(&[bob()], domain);
    other_mailbox(&env, "old@example.org", 400 * MIB, "");
    login(&env, BOB).assert_code(0);
    let before = snapshot(&env.db);
    // 2 GiB: within maxquota (10240 MiB) but 400 + 2048 > 1500
    set_template_text(
        &env.db,
        "StaffUI",
        &staff_text()
            .replace("1073741824", "2147483648")
            .replace("\"acl_syncjobs\":0", "\"acl_syncjobs\":1"),
    );
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("quota")
        .assert_stderr_contains("template not applied");
    assert_eq!(snapshot(&env.db), before);
    // a template above the per-mailbox maximum is skipped too
    set_template_text(
        &env.db,
        "StaffUI",
        &staff_text().replace("1073741824", &(10241 * MIB).to_string()),
    );
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("per mailbox");
    assert_eq!(snapshot(&env.db), before);
    // exactly filling the domain is fine: 400 + 1100 = 1500
    set_template_text(
        &env.db,
        "StaffUI",
        &staff_text().replace("1073741824", &(1100 * MIB).to_string()),
    );
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("template StaffUI re-applied");
    assert_eq!(
        single(
            &env.db,
            "SELECT quota FROM mailbox WHERE username = 'bob@example.org'"
        ),
        Some((1100 * MIB).to_string())
    );
}

#[test]
fn update_with_a_missing_template_logs_in_unchanged() {
    let env = staff_env(&[bob()]);
    login(&env, BOB).assert_code(0);
    let before = snapshot(&env.db);
    env.db
        .exec("UPDATE templates SET template = 'Renamed' WHERE template = 'StaffUI'");
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("template StaffUI missing");
    assert_eq!(snapshot(&env.db), before);
}

/// The StaffUI text with `from` replaced by `to` (which must occur exactly once).
fn staff_with(changes: &[(&str, &str)]) -> String {
    let mut text = staff_text();
    for (from, to) in changes {
        assert_eq!(text.matches(from).count(), 1, "{from} in the StaffUI text");
        text = text.replace(from, to);
    }
    text
}

/// A domain of 1500 MiB where bob (1024 MiB, from StaffUI) and old@ (1000 MiB, added after
/// bob's first login, as when an admin lowers the domain quota) together hold more than that.
fn over_committed_env(first_text: &str) -> TestEnv {
    let mut domain = golden_domain();
    domain.quota = 1500;
    let env = staff_env_with(&[bob()], domain);
    set_template_text(&env.db, "StaffUI", first_text);
    login(&env, BOB).assert_code(0);
    other_mailbox(&env, "old@example.org", 1000 * MIB, "");
    env
}

/// bob's `active`, `quota` or `attribute_hash`, as text.
fn bob_column(env: &TestEnv, column: &str) -> Option<String> {
    let index = ["active", "quota", "attribute_hash"]
        .iter()
        .position(|c| *c == column)
        .unwrap_or_else(|| panic!("bob_column does not read {column}"));
    env.db.rows(
        "SELECT active, quota, JSON_VALUE(attributes, '$.attribute_hash') FROM mailbox \
         WHERE username = 'bob@example.org'",
    )[0][index]
        .clone()
}

#[test]
fn deactivating_template_with_the_same_quota_applies_on_an_over_committed_domain() {
    let env = over_committed_env(&staff_text());
    let text = staff_with(&[("\"active\":1", "\"active\":0")]);
    set_template_text(&env.db, "StaffUI", &text);
    login(&env, BOB)
        .assert_code(1)
        .assert_stderr_contains("result=rejected")
        .assert_stderr_contains("mailbox inactive")
        .assert_stderr_contains("template StaffUI re-applied")
        .assert_stderr_lacks("template not applied");
    // the update was written, not only obeyed
    assert_eq!(bob_column(&env, "active").as_deref(), Some("0"));
    assert_eq!(
        bob_column(&env, "quota"),
        Some((1024 * MIB).to_string()),
        "the quota stays"
    );
    assert_eq!(
        bob_column(&env, "attribute_hash"),
        Some(provision_hash(&text))
    );
    assert_eq!(
        single(
            &env.db,
            "SELECT active FROM alias WHERE address = 'bob@example.org'"
        )
        .as_deref(),
        Some("0")
    );
    assert!(
        env.db
            .rows("SELECT * FROM _sogo_static_view WHERE c_uid = 'bob@example.org'")
            .is_empty()
    );
}

/// mailcow's `attribute_hash` of a template text (the PHP algorithm, unit-tested against
/// every vector of tests/fixtures/attribute_hash_vectors.json).
fn provision_hash(text: &str) -> String {
    mailcow_ldap_auth::mailcow::template::attribute_hash(text)
}

#[test]
fn template_quota_shrinking_on_an_over_committed_domain_is_applied() {
    let env = over_committed_env(&staff_text());
    set_template_text(
        &env.db,
        "StaffUI",
        &staff_with(&[
            ("1073741824", &(512 * MIB).to_string()),
            ("\"acl_syncjobs\":0", "\"acl_syncjobs\":1"),
        ]),
    );
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("result=ok")
        .assert_stderr_contains("template StaffUI re-applied")
        .assert_stderr_lacks("template not applied");
    assert_eq!(bob_column(&env, "quota"), Some((512 * MIB).to_string()));
    assert_eq!(
        single(
            &env.db,
            "SELECT syncjobs FROM user_acl WHERE username = 'bob@example.org'"
        )
        .as_deref(),
        Some("1")
    );
    // the same quota again, with another change: still applied on the over-committed domain
    set_template_text(
        &env.db,
        "StaffUI",
        &staff_with(&[("1073741824", &(512 * MIB).to_string())]),
    );
    login(&env, BOB)
        .assert_code(0)
        .assert_stderr_contains("template StaffUI re-applied");
    assert_eq!(
        single(
            &env.db,
            "SELECT syncjobs FROM user_acl WHERE username = 'bob@example.org'"
        )
        .as_deref(),
        Some("0")
    );
}

#[test]
fn skipped_update_still_obeys_the_templates_access_and_active_flags() {
    // bob starts with POP3 allowed
    let pop3_on = staff_with(&[("\"pop3_access\":0", "\"pop3_access\":1")]);
    let mut domain = golden_domain();
    domain.quota = 1500;
    let env = staff_env_with(&[bob()], domain);
    set_template_text(&env.db, "StaffUI", &pop3_on);
    other_mailbox(&env, "old@example.org", 400 * MIB, "");
    env.cp().service("pop3").login(BOB, PW).run().assert_code(0);
    let before = snapshot(&env.db);

    // 2 GiB does not fit (400 + 2048 > 1500), and the template also disables POP3
    set_template_text(
        &env.db,
        "StaffUI",
        &staff_with(&[("1073741824", "2147483648")]),
    );
    env.cp()
        .service("pop3")
        .login(BOB, PW)
        .run()
        .assert_code(1)
        .assert_stderr_contains("result=rejected")
        .assert_stderr_contains("service pop3 disabled")
        .assert_stderr_contains("quota")
        .assert_stderr_contains("template not applied");
    assert_eq!(
        snapshot(&env.db),
        before,
        "the update is skipped as a whole"
    );
    let out = env.cp().service("imap").login(BOB, PW).run();
    out.assert_code(0)
        .assert_stderr_contains("result=ok")
        .assert_stderr_contains("template not applied");
    // the stored quota, not the refused one
    assert_eq!(
        out.userdb().get("userdb_quota_rule").map(String::as_str),
        Some("*:bytes=1073741824")
    );
    assert_eq!(snapshot(&env.db), before);

    // a refused quota increase that also deactivates the mailbox refuses every login
    set_template_text(
        &env.db,
        "StaffUI",
        &staff_with(&[
            ("1073741824", "2147483648"),
            ("\"active\":1", "\"active\":0"),
        ]),
    );
    env.cp()
        .service("imap")
        .login(BOB, PW)
        .run()
        .assert_code(1)
        .assert_stderr_contains("mailbox inactive")
        .assert_stderr_contains("template not applied");
    assert_eq!(snapshot(&env.db), before);
}

const BROKEN_TEMPLATES: [(Option<&str>, &str); 2] = [
    (Some("[]"), "not a JSON object"),
    (None, "no attributes (NULL)"),
];

#[test]
fn update_with_an_unreadable_template_logs_in_unchanged() {
    let env = staff_env(&[bob()]);
    login(&env, BOB).assert_code(0);
    let before = snapshot(&env.db);
    for (text, problem) in BROKEN_TEMPLATES {
        env.db.exec_with(
            "UPDATE templates SET attributes = ? WHERE template = 'StaffUI'",
            (text,),
        );
        login(&env, BOB)
            .assert_code(0)
            .assert_stderr_contains("result=ok")
            .assert_stderr_contains("StaffUI")
            .assert_stderr_contains(problem)
            .assert_stderr_contains("mailbox left unchanged");
        assert_eq!(snapshot(&env.db), before, "{text:?}");
    }
}

#[test]
fn first_login_with_an_unreadable_template_is_refused() {
    let env = staff_env(&[bob()]);
    for (text, problem) in BROKEN_TEMPLATES {
        env.db.exec_with(
            "UPDATE templates SET attributes = ? WHERE template = 'StaffUI'",
            (text,),
        );
        let before = snapshot(&env.db);
        login(&env, BOB)
            .assert_code(1)
            .assert_stderr_contains("result=rejected")
            .assert_stderr_contains("StaffUI")
            .assert_stderr_contains(problem);
        assert_eq!(snapshot(&env.db), before, "{text:?}");
        assert_eq!(mailbox_count(&env.db), 0);
    }
}

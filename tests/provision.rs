//! Provisioning integration tests (issue 3): the real binary, driven like Dovecot drives it
//! (checkpassword, credentials on fd 3), against a throwaway slapd and a MariaDB loaded with the
//! real mailcow schema. Every test has its own database and LDAP subtree.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use provision_helpers::*;
use serde_json::{Map, Value, json};

const BOB: &str = "bob@example.org";
const PW: &str = "Secret-pw-1";

fn staff_text() -> String {
    golden()["template"]["attributes_text"]
        .as_str()
        .unwrap()
        .into()
}

fn bob() -> LdapUser {
    LdapUser::new("bob", BOB, PW)
        .display_name("Bob Example")
        .employee_type("staff")
}

fn user(uid: &str, employee_type: &str) -> LdapUser {
    LdapUser::new(uid, &format!("{uid}@example.org"), PW).employee_type(employee_type)
}

/// The golden domain row, the golden StaffUI template, `staff` mapped to StaffUI and the
/// built-in Default as default_template.
fn staff_env(users: &[LdapUser]) -> TestEnv {
    staff_env_with(users, DomainRow::from_golden(&golden()))
}

/// A test env on plain LDAP (without the harness's CA file, which only matters with TLS).
fn plain_env(users: &[LdapUser]) -> TestEnv {
    let mut env = TestEnv::new(users);
    env.cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
    env
}

fn staff_env_with(users: &[LdapUser], domain: DomainRow) -> TestEnv {
    let mut env = plain_env(users);
    domain.insert(&env.db);
    insert_template(&env.db, "StaffUI", &staff_text());
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "StaffUI" }]);
    env.cfg["default_template"] = json!("Default");
    env
}

fn login(env: &TestEnv, user: &str) -> Outcome {
    env.cp().login(user, PW).run()
}

fn golden_domain() -> DomainRow {
    DomainRow::from_golden(&golden())
}

/// A mailbox owned by someone else in the domain (kind '' unless given), with `quota` bytes.
fn other_mailbox(env: &TestEnv, username: &str, quota: i64, kind: &str) {
    env.db
        .add_mailbox(&Mailbox::new(username).quota(quota).kind(kind));
}

fn is_datetime(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

const TIME_COLUMNS: [&str; 2] = ["created", "modified"];

/// Compares one stored row with the expected one on every column; time columns only on
/// NULL-ness (and format), `alias.id` not at all, `mailbox.attributes` as JSON with
/// `passwd_update` checked for its format.
#[track_caller]
fn assert_row(table: &str, actual: &Map<String, Value>, expected: &Map<String, Value>) {
    let actual_cols: Vec<&String> = actual.keys().collect();
    let expected_cols: Vec<&String> = expected.keys().collect();
    assert_eq!(actual_cols, expected_cols, "{table}: columns");
    for (col, want) in expected {
        let got = &actual[col];
        if TIME_COLUMNS.contains(&col.as_str()) {
            assert_eq!(
                got.is_null(),
                want.is_null(),
                "{table}.{col}: {got} vs {want}"
            );
            if !got.is_null() {
                assert!(is_datetime(got), "{table}.{col}: {got}");
            }
            continue;
        }
        if table == "alias" && col == "id" {
            continue;
        }
        if table == "mailbox" && col == "attributes" {
            let mut got: Map<String, Value> = serde_json::from_str(got.as_str().unwrap()).unwrap();
            let mut want: Map<String, Value> =
                serde_json::from_str(want.as_str().unwrap()).unwrap();
            let stamp = got.remove("passwd_update").expect("passwd_update");
            assert!(is_datetime(&stamp), "passwd_update {stamp}");
            want.remove("passwd_update");
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "attributes keys and order"
            );
            assert_eq!(got, want, "mailbox.attributes");
            continue;
        }
        assert_eq!(got, want, "{table}.{col}");
    }
}

#[track_caller]
fn assert_rows(db: &TestDb, username: &str, expected: &Value) {
    let actual = rows_of(db, username);
    for table in PROVISIONED.map(|t| t.name) {
        let want: Vec<Map<String, Value>> = expected[table]
            .as_array()
            .unwrap_or_else(|| panic!("expected rows for {table}"))
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect();
        let got = &actual[table];
        assert_eq!(got.len(), want.len(), "{table}: {got:#?}");
        for (g, w) in got.iter().zip(&want) {
            assert_row(table, g, w);
        }
    }
}

fn mailbox_count(db: &TestDb) -> i64 {
    db.rows("SELECT COUNT(*) FROM mailbox")[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

fn single(db: &TestDb, sql: &str) -> Option<String> {
    let rows = db.rows(sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0][0].clone()
}

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

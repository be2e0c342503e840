//! The setting of the provisioning tests (tests/provision.rs, tests/provision_limits.rs): Bob
//! and other LDAP users, the golden domain and StaffUI template, logins through checkpassword,
//! and row comparisons against the golden rows. Included with `#[path]` beside
//! common/provision_helpers.rs.
#![allow(dead_code)]

use crate::common::*;
use crate::provision_helpers::*;
use serde_json::{Map, Value, json};

pub const BOB: &str = "bob@example.org";
pub const PW: &str = "Secret-pw-1";

pub fn staff_text() -> String {
    golden()["template"]["attributes_text"]
        .as_str()
        .unwrap()
        .into()
}

pub fn bob() -> LdapUser {
    LdapUser::new("bob", BOB, PW)
        .display_name("Bob Example")
        .employee_type("staff")
}

pub fn user(uid: &str, employee_type: &str) -> LdapUser {
    LdapUser::new(uid, &format!("{uid}@example.org"), PW).employee_type(employee_type)
}

/// The golden domain row, the golden StaffUI template, `staff` mapped to StaffUI and the
/// built-in Default as default_template.
pub fn staff_env(users: &[LdapUser]) -> TestEnv {
    staff_env_with(users, DomainRow::from_golden(&golden()))
}

/// A test env on plain LDAP (without the harness's CA file, which only matters with TLS).
pub fn plain_env(users: &[LdapUser]) -> TestEnv {
    let mut env = TestEnv::new(users);
    env.cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
    env
}

pub fn staff_env_with(users: &[LdapUser], domain: DomainRow) -> TestEnv {
    let mut env = plain_env(users);
    domain.insert(&env.db);
    insert_template(&env.db, "StaffUI", &staff_text());
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "StaffUI" }]);
    env.cfg["default_template"] = json!("Default");
    env
}

pub fn login(env: &TestEnv, user: &str) -> Outcome {
    env.cp().login(user, PW).run()
}

pub fn golden_domain() -> DomainRow {
    DomainRow::from_golden(&golden())
}

/// A mailbox owned by someone else in the domain (kind '' unless given), with `quota` bytes.
pub fn other_mailbox(env: &TestEnv, username: &str, quota: i64, kind: &str) {
    env.db
        .add_mailbox(&Mailbox::new(username).quota(quota).kind(kind));
}

pub fn is_datetime(v: &Value) -> bool {
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

pub const TIME_COLUMNS: [&str; 2] = ["created", "modified"];

/// Compares one stored row with the expected one on every column; time columns only on
/// NULL-ness (and format), `alias.id` not at all, `mailbox.attributes` as JSON with
/// `passwd_update` checked for its format.
#[track_caller]
pub fn assert_row(table: &str, actual: &Map<String, Value>, expected: &Map<String, Value>) {
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
pub fn assert_rows(db: &TestDb, username: &str, expected: &Value) {
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

pub fn mailbox_count(db: &TestDb) -> i64 {
    db.rows("SELECT COUNT(*) FROM mailbox")[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

pub fn single(db: &TestDb, sql: &str) -> Option<String> {
    let rows = db.rows(sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0][0].clone()
}

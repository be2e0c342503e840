//! Helpers for the provisioning tests (tests/provision*.rs and others): mailcow rows as JSON, table
//! snapshots, templates, domains with every limit, and LDAP attribute changes.
//! Included with `#[path]`, so it reaches the harness as `crate::common`.
#![allow(dead_code)]

use crate::common::{
    Domain, LdapUser, Mailbox, PROVISIONED, TestDb, TestEnv, config_from_mailcow, provisioned,
    save_as_mailcow_ui, slapd,
};
use mysql::prelude::Queryable;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};

pub const MIB: i64 = 1_048_576;

/// One SQL value as JSON: integers as numbers, text as strings, DATETIME as
/// "YYYY-MM-DD HH:MM:SS", NULL as null.
pub fn sql_to_json(v: mysql::Value) -> Value {
    match v {
        mysql::Value::NULL => Value::Null,
        mysql::Value::Int(i) => Value::from(i),
        mysql::Value::UInt(u) => Value::from(u),
        mysql::Value::Float(f) => Value::from(f64::from(f)),
        mysql::Value::Double(f) => Value::from(f),
        mysql::Value::Bytes(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
        mysql::Value::Date(y, mo, d, h, mi, s, _) => {
            Value::String(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
        }
        other => Value::String(format!("{other:?}")),
    }
}

/// Rows of a query (binary protocol, so numbers stay numbers) as column → value maps.
pub fn json_rows(db: &TestDb, sql: &str) -> Vec<Map<String, Value>> {
    let rows: Vec<mysql::Row> = db
        .conn()
        .exec(sql, ())
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.into_iter()
        .map(|row| {
            let names: Vec<String> = row
                .columns_ref()
                .iter()
                .map(|c| c.name_str().into_owned())
                .collect();
            names
                .into_iter()
                .zip(row.unwrap().into_iter().map(sql_to_json))
                .collect()
        })
        .collect()
}

/// Every row of every provisioned table, all columns (time columns included).
pub fn snapshot(db: &TestDb) -> BTreeMap<&'static str, Vec<Map<String, Value>>> {
    PROVISIONED
        .iter()
        .map(|t| (t.name, json_rows(db, t.all)))
        .collect()
}

/// Number of rows per provisioned table that belong to `username`.
pub fn row_counts(db: &TestDb, username: &str) -> BTreeMap<&'static str, i64> {
    PROVISIONED
        .iter()
        .map(|t| {
            let n: Option<i64> = db
                .conn()
                .exec_first(t.count_of_address, (username,))
                .unwrap_or_else(|e| panic!("{}: {e}", t.count_of_address));
            (t.name, n.unwrap_or(0))
        })
        .collect()
}

/// One row of `username` in every provisioned table, `tags` of them in `tags_mailbox`: a
/// complete mailbox, written once.
#[track_caller]
pub fn assert_one_of_each(db: &TestDb, username: &str, tags: i64) {
    let counts = row_counts(db, username);
    for (table, n) in &counts {
        let want = if *table == "tags_mailbox" { tags } else { 1 };
        assert_eq!(*n, want, "{table} rows of {username}: {counts:?}");
    }
}

/// A `domain` row with every limit given (MiB, as mailcow stores them).
#[derive(Clone, Debug)]
pub struct DomainRow {
    pub domain: String,
    pub description: String,
    pub aliases: i64,
    pub mailboxes: i64,
    pub defquota: i64,
    pub maxquota: i64,
    pub quota: i64,
    pub active: i64,
}

impl DomainRow {
    /// The domain row of tests/fixtures/golden-provision-bob.json.
    pub fn from_golden(golden: &Value) -> DomainRow {
        let d = &golden["domain_row"];
        DomainRow {
            domain: d["domain"].as_str().unwrap().into(),
            description: d["description"].as_str().unwrap().into(),
            aliases: d["aliases"].as_i64().unwrap(),
            mailboxes: d["mailboxes"].as_i64().unwrap(),
            defquota: d["defquota"].as_i64().unwrap(),
            maxquota: d["maxquota"].as_i64().unwrap(),
            quota: d["quota"].as_i64().unwrap(),
            active: d["active"].as_i64().unwrap(),
        }
    }

    pub fn insert(&self, db: &TestDb) {
        db.conn()
            .exec_drop(
                "INSERT INTO domain (domain, description, aliases, mailboxes, defquota, maxquota, \
                 quota, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    &self.domain,
                    &self.description,
                    self.aliases,
                    self.mailboxes,
                    self.defquota,
                    self.maxquota,
                    self.quota,
                    self.active,
                ),
            )
            .unwrap_or_else(|e| panic!("insert domain {}: {e}", self.domain));
    }
}

/// Adds a mailbox template with this exact attributes text.
pub fn insert_template(db: &TestDb, name: &str, attributes_text: &str) {
    db.conn()
        .exec_drop(
            "INSERT INTO templates (template, type, attributes) VALUES (?, 'mailbox', ?)",
            (name, attributes_text),
        )
        .unwrap_or_else(|e| panic!("insert template {name}: {e}"));
}

/// The golden template (tests/fixtures) as the mailbox template `name`.
pub fn insert_golden_template(db: &TestDb, name: &str) {
    let golden = golden();
    let attributes = golden["template"]["attributes_text"]
        .as_str()
        .expect("golden template text");
    insert_template(db, name, attributes);
}

/// Replaces the attributes text of a mailbox template.
pub fn set_template_text(db: &TestDb, name: &str, attributes_text: &str) {
    db.conn()
        .exec_drop(
            "UPDATE templates SET attributes = ? WHERE template = ? AND type = 'mailbox'",
            (attributes_text, name),
        )
        .unwrap_or_else(|e| panic!("update template {name}: {e}"));
}

/// Replaces (or with an empty list removes) an attribute of an LDAP entry.
pub fn ldap_replace(dn: &str, attribute: &str, values: &[&str]) {
    let mut c = slapd().admin();
    let values: HashSet<&str> = values.iter().copied().collect();
    c.modify(dn, vec![ldap3::Mod::Replace(attribute, values)])
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("modify {dn} {attribute}: {e}"));
    let _ = c.unbind();
}

/// The site of the mailcow recipe's end-to-end tests (tests/mailcow_e2e.rs, mailcow24_e2e.rs):
/// anna, bert and cleo (LDAP, employeeType staff, password `<name>-pw`) and fred (authsource
/// mailcow) at `domain`, the golden template as Staff; the file leaves LDAP to mailcow's table,
/// which maps staff to Staff (JSON arrays, as mailcow's UI saves them). The four addresses in
/// that order.
pub fn mailcow_site(domain: &str) -> (TestEnv, [String; 4]) {
    let [anna, bert, cleo, fred] =
        ["anna", "bert", "cleo", "fred"].map(|u| format!("{u}@{domain}"));
    let mut env = TestEnv::new(&[
        LdapUser::new("anna", &anna, "anna-pw").employee_type("staff"),
        LdapUser::new("bert", &bert, "bert-pw").employee_type("staff"),
        LdapUser::new("cleo", &cleo, "cleo-pw").employee_type("staff"),
    ]);
    env.db.add_domain(&Domain::new(domain));
    env.db
        .add_mailbox(&Mailbox::new(&fred).authsource("mailcow"));
    insert_golden_template(&env.db, "Staff");
    config_from_mailcow(&mut env.cfg);
    save_as_mailcow_ui(&env, r#"["staff"]"#, r#"["Staff"]"#, &[]);
    (env, [anna, bert, cleo, fred])
}

/// tests/fixtures/golden-provision-bob.json: the rows mailcow's PHP wrote for one LDAP user.
pub fn golden() -> Value {
    serde_json::from_str(include_str!("../fixtures/golden-provision-bob.json")).unwrap()
}

/// The raw template text of the PHP `attribute_hash` vector called `name`, and its hash.
pub fn vector(name: &str) -> (String, String) {
    let all: Vec<Value> =
        serde_json::from_str(include_str!("../fixtures/attribute_hash_vectors.json")).unwrap();
    let v = all
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"));
    (
        v["raw"].as_str().unwrap().into(),
        v["attribute_hash"].as_str().unwrap().into(),
    )
}

/// The rows of every provisioned table that belong to `username`.
pub fn rows_of(db: &TestDb, username: &str) -> BTreeMap<&'static str, Vec<Map<String, Value>>> {
    snapshot(db)
        .into_iter()
        .map(|(table, rows)| {
            let key = provisioned(table).key;
            let rows = rows.into_iter().filter(|r| r[key] == username).collect();
            (table, rows)
        })
        .collect()
}

/// A row made comparable: time columns only as "set"/NULL, `alias.id` dropped, and
/// `mailbox.attributes` parsed without `passwd_update` (a time, checked for presence).
pub fn normalise(table: &str, row: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (col, v) in row {
        let v = match (table, col.as_str()) {
            (_, "created" | "modified") => json!(if v.is_null() { "NULL" } else { "set" }),
            ("alias", "id") => continue,
            ("mailbox", "attributes") => {
                let mut attrs: Map<String, Value> =
                    serde_json::from_str(v.as_str().unwrap()).unwrap();
                assert!(attrs.remove("passwd_update").is_some(), "passwd_update");
                Value::Object(attrs)
            }
            _ => v.clone(),
        };
        out.insert(col.clone(), v);
    }
    out
}

/// Every provisioned row of `username`, normalised.
pub fn normalised_rows_of(
    db: &TestDb,
    username: &str,
) -> BTreeMap<&'static str, Vec<Map<String, Value>>> {
    rows_of(db, username)
        .into_iter()
        .map(|(table, rows)| (table, rows.iter().map(|r| normalise(table, r)).collect()))
        .collect()
}

/// Deletes an LDAP entry.
pub fn ldap_delete(dn: &str) {
    let mut c = slapd().admin();
    c.delete(dn)
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("delete {dn}: {e}"));
    let _ = c.unbind();
}

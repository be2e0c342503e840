//! Opt-in deactivation (`sync.deactivate_missing`, issue 12): LDAP-backed mailboxes missing
//! from `missing_runs` complete listings in a row are deactivated (mailbox and alias), never
//! more than `max_deactivate_percent` of them in one run, never after an incomplete listing;
//! `--dry-run` lists them; activating one again is the admin's decision.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use provision_helpers::*;
use serde_json::{Value, json};

const PW: &str = "Sync-deactivate-pw-1";

fn user(i: usize) -> LdapUser {
    LdapUser::new(&format!("u{i}"), &format!("u{i}@example.org"), PW).employee_type("staff")
}

/// `n` users imported by a first sync; deactivation on (2 runs, `percent`).
fn imported(n: usize, percent: u32) -> (TestEnv, tempfile::TempDir) {
    let users: Vec<LdapUser> = (0..n).map(user).collect();
    let mut env = TestEnv::new(&users);
    env.cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
    let mut d = DomainRow::from_golden(&golden());
    d.mailboxes = 100;
    d.quota = 1_000_000;
    d.insert(&env.db);
    insert_template(&env.db, "Plain", r#"{"quota":0}"#);
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "Plain" }]);
    env.sync_on();
    env.cfg["sync"]["deactivate_missing"] = json!(true);
    env.cfg["sync"]["missing_runs"] = json!(2);
    env.cfg["sync"]["max_deactivate_percent"] = json!(percent);
    let state = sync_state();
    let (out, summary) = sync_json(&env, &state);
    out.assert_code(0);
    assert_eq!(summary["created"], n, "{out}");
    (env, state)
}

fn sync_json(env: &TestEnv, state: &tempfile::TempDir) -> (Outcome, Value) {
    let out = env.forced_sync(state).arg("--json").run();
    let summary = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON object ({e}):\n{out}"));
    (out, summary)
}

fn active(db: &TestDb, who: &str) -> (Option<String>, Option<String>) {
    let m = db.rows_with("SELECT active FROM mailbox WHERE username = ?", (who,));
    let a = db.rows_with("SELECT active FROM alias WHERE address = ?", (who,));
    (m[0][0].clone(), a[0][0].clone())
}

fn on() -> (Option<String>, Option<String>) {
    (Some("1".into()), Some("1".into()))
}

#[test]
fn a_mailbox_missing_from_two_listings_is_deactivated_once() {
    let (env, state) = imported(10, 10);
    ldap_delete(&env.ldap.user_dn("u3"));

    // first miss: counted in the program's own table, nothing deactivated
    let (out, summary) = sync_json(&env, &state);
    out.assert_code(0);
    assert_eq!(summary["deactivated"], 0, "{out}");
    assert_eq!(active(&env.db, "u3@example.org"), on());
    let misses = env
        .db
        .rows("SELECT username, misses FROM mailcow_ldap_auth_missing");
    assert_eq!(
        misses,
        vec![vec![Some("u3@example.org".into()), Some("1".into())]]
    );

    // a dry run lists who would be deactivated and writes nothing
    let before = snapshot(&env.db);
    let out = env.forced_sync(&state).arg("--dry-run").run();
    out.assert_code(0);
    assert!(
        out.stdout.contains(
            "sync dry-run user=u3@example.org result=deactivated reason=\"would deactivate"
        ),
        "{out}"
    );
    assert_eq!(snapshot(&env.db), before);

    // second miss: mailbox and alias deactivated, one log line
    let (out, summary) = sync_json(&env, &state);
    out.assert_code(0);
    assert_eq!(summary["deactivated"], 1, "{out}");
    out.assert_stderr_contains("user=u3@example.org result=deactivated");
    assert_eq!(
        active(&env.db, "u3@example.org"),
        (Some("0".into()), Some("0".into()))
    );
    assert!(
        env.db
            .rows("SELECT 1 FROM _sogo_static_view WHERE c_uid = 'u3@example.org'")
            .is_empty()
    );
    assert_eq!(active(&env.db, "u4@example.org"), on());

    // the admin activates it again: the sync leaves it so, and never reactivates by itself
    env.db
        .exec("UPDATE mailbox SET active = 1 WHERE username = 'u3@example.org'");
    env.db
        .exec("UPDATE alias SET active = 1 WHERE address = 'u3@example.org'");
    for _ in 0..2 {
        let (_, summary) = sync_json(&env, &state);
        assert_eq!(summary["deactivated"], 0);
    }
    assert_eq!(active(&env.db, "u3@example.org"), on());
}

#[test]
fn a_user_back_in_the_directory_starts_counting_again() {
    let (env, state) = imported(10, 10);
    ldap_delete(&env.ldap.user_dn("u5"));
    sync_json(&env, &state).0.assert_code(0);
    env.ldap.add_user(&user(5));
    sync_json(&env, &state).0.assert_code(0);
    assert!(
        env.db
            .rows("SELECT * FROM mailcow_ldap_auth_missing")
            .is_empty()
    );
    ldap_delete(&env.ldap.user_dn("u5"));
    let (_, summary) = sync_json(&env, &state);
    assert_eq!(summary["deactivated"], 0, "one miss after the return");
    assert_eq!(active(&env.db, "u5@example.org"), on());
}

#[test]
fn more_than_the_allowed_share_deactivates_none() {
    // 2 of 10 missing is 20 %, more than 10 %
    let (env, state) = imported(10, 10);
    ldap_delete(&env.ldap.user_dn("u1"));
    ldap_delete(&env.ldap.user_dn("u2"));
    sync_json(&env, &state).0.assert_code(0);
    let (out, summary) = sync_json(&env, &state);
    out.assert_code(0)
        .assert_stderr_contains("2 of 10 LDAP-backed mailboxes are missing")
        .assert_stderr_contains("none deactivated");
    assert_eq!(summary["deactivated"], 0);
    for who in ["u1@example.org", "u2@example.org"] {
        assert_eq!(active(&env.db, who), on(), "{who}");
    }
}

#[test]
fn an_incomplete_listing_counts_no_miss_and_deactivates_nobody() {
    let (mut env, state) = imported(10, 10);
    ldap_delete(&env.ldap.user_dn("u7"));
    sync_json(&env, &state).0.assert_code(0);
    // a listing that fails (base DN gone): the run ends as a fault before counting
    let good_base = env.cfg["ldap"]["base_dn"].clone();
    env.cfg["ldap"]["base_dn"] = json!(format!("ou=gone,{}", good_base.as_str().unwrap()));
    let (out, summary) = sync_json(&env, &state);
    out.assert_code(111);
    assert_eq!(summary["result"], "tempfail");
    assert_eq!(active(&env.db, "u7@example.org"), on());
    let misses = env.db.rows("SELECT misses FROM mailcow_ldap_auth_missing");
    assert_eq!(misses, vec![vec![Some("1".into())]], "{out}");
    // the next complete listing is the second miss
    env.cfg["ldap"]["base_dn"] = good_base;
    let (_, summary) = sync_json(&env, &state);
    assert_eq!(summary["deactivated"], 1);
}

#[test]
fn off_by_default_and_then_no_table() {
    let users: Vec<LdapUser> = (0..3).map(user).collect();
    let mut env = TestEnv::new(&users);
    env.cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
    DomainRow::from_golden(&golden()).insert(&env.db);
    insert_template(&env.db, "Plain", r#"{"quota":0}"#);
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "Plain" }]);
    env.sync_on();
    let state = sync_state();
    sync_json(&env, &state).0.assert_code(0);
    ldap_delete(&env.ldap.user_dn("u0"));
    for _ in 0..4 {
        let (_, summary) = sync_json(&env, &state);
        assert!(summary.get("deactivated").is_none(), "{summary}");
    }
    assert_eq!(active(&env.db, "u0@example.org"), on());
    let tables = env.db.rows("SHOW TABLES LIKE 'mailcow_ldap_auth_missing'");
    assert!(tables.is_empty());
}

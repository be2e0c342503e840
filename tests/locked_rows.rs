//! Decisions on locked rows (issue 7, item 3): a template update decides on the mailbox row as
//! locked in its transaction, not on what was read before. The timing is hooked with a lock:
//! the test holds the row the binary locks first (`FOR UPDATE`) in its own transaction — the
//! domain row for a login, the mailbox row for the sync, whose batches lock the domain row
//! last — starts the binary, waits until the binary waits for that lock, changes the mailbox
//! and commits.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use mysql::Conn;
use mysql::prelude::Queryable;
use provision_helpers::*;
use serde_json::json;
use std::time::{Duration, Instant};

const BOB: &str = "bob@example.org";
const PW: &str = "Locked-pw-1";

/// A template without `active`: re-applying it keeps the mailbox's own `active`.
const TEMPLATE: &str = r#"{"quota":0,"tags":["t"],"imap_access":1}"#;

/// bob's LDAP entry (mapped to `Plain`) and his LDAP-backed, active mailbox, whose stored
/// attributes carry no `attribute_hash`: the next login or sync re-applies `Plain`.
fn env() -> (TestEnv, tempfile::TempDir) {
    let mut env = TestEnv::new(&[LdapUser::new("bob", BOB, PW)
        .display_name("Bob")
        .employee_type("staff")]);
    env.cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
    DomainRow::from_golden(&golden()).insert(&env.db);
    insert_template(&env.db, "Plain", TEMPLATE);
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "Plain" }]);
    env.sync_on();
    env.db.add_mailbox(&Mailbox::new(BOB));
    (env, sync_state())
}

fn single(db: &TestDb, sql: &str) -> Option<String> {
    db.rows(sql).into_iter().next().and_then(|r| r[0].clone())
}

/// What a login locks first.
const DOMAIN_ROW: &str = "SELECT active FROM domain WHERE domain = 'example.org' FOR UPDATE";
/// What a sync batch locks first.
const BOBS_ROW: &str = "SELECT active FROM mailbox WHERE username = 'bob@example.org' FOR UPDATE";

/// Runs `run` while the test holds the row `lock` locks; once the binary waits for that lock,
/// runs `change` in the holding transaction and commits.
fn with_locked(db: &TestDb, lock: &str, run: Run, change: &str) -> Outcome {
    let mut holder = db.conn();
    holder
        .query_drop("START TRANSACTION")
        .expect("start the holding transaction");
    holder.query_drop(lock).expect("lock the row");
    let child = std::thread::spawn(move || run.run());
    wait_for_lock_wait(db, &child);
    holder.query_drop(change).expect("change the mailbox");
    holder.query_drop("COMMIT").expect("commit");
    child.join().expect("the binary's thread")
}

/// Until a session of this test's database user runs a locking read (which can only wait:
/// the test holds the row).
fn wait_for_lock_wait(db: &TestDb, child: &std::thread::JoinHandle<Outcome>) {
    let mut watcher: Conn = db.server.root();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: Option<i64> = watcher
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE USER = ? AND INFO LIKE '%FOR UPDATE%'",
                (&db.user,),
            )
            .expect("read lock waits");
        if waiting.unwrap_or(0) > 0 {
            return;
        }
        assert!(
            !child.is_finished(),
            "the binary ended without waiting for the lock"
        );
        assert!(Instant::now() < deadline, "no lock wait within 30 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sync_keeps_a_mailbox_deactivated_meanwhile_inactive() {
    let (env, state) = env();
    let out = with_locked(
        &env.db,
        BOBS_ROW,
        env.forced_sync(&state),
        "UPDATE mailbox SET active = 0 WHERE username = 'bob@example.org'",
    );
    out.assert_code(0)
        .assert_stderr_contains("user=bob@example.org result=reapplied");
    assert_eq!(
        single(&env.db, "SELECT active FROM mailbox").as_deref(),
        Some("0"),
        "{out}"
    );
    assert!(
        single(
            &env.db,
            "SELECT JSON_VALUE(attributes, '$.attribute_hash') FROM mailbox"
        )
        .is_some(),
        "the template was applied: {out}"
    );
    assert!(env.db.rows("SELECT * FROM _sogo_static_view").is_empty());
}

#[test]
fn sync_leaves_a_mailbox_switched_to_mailcow_meanwhile() {
    let (env, state) = env();
    let before = rows_of(&env.db, BOB);
    let out = with_locked(
        &env.db,
        BOBS_ROW,
        env.forced_sync(&state),
        "UPDATE mailbox SET authsource = 'mailcow' WHERE username = 'bob@example.org'",
    );
    out.assert_code(0)
        .assert_stderr_contains("authsource is mailcow now: template not applied")
        .assert_stderr_contains("reapplied=0");
    let mut after = rows_of(&env.db, BOB);
    // only the holder's own change
    after.get_mut("mailbox").unwrap()[0]["authsource"] = json!("ldap");
    after.get_mut("mailbox").unwrap()[0]["modified"] = before["mailbox"][0]["modified"].clone();
    assert_eq!(after, before, "{out}");
}

#[test]
fn login_of_a_mailbox_switched_to_mailcow_meanwhile_is_refused() {
    let (env, _state) = env();
    let out = with_locked(
        &env.db,
        DOMAIN_ROW,
        env.cp().login(BOB, PW),
        "UPDATE mailbox SET authsource = 'mailcow' WHERE username = 'bob@example.org'",
    );
    out.assert_code(1)
        .assert_stderr_contains("mailbox not LDAP-backed (authsource mailcow)");
    assert_eq!(
        single(
            &env.db,
            "SELECT JSON_VALUE(attributes, '$.attribute_hash') FROM mailbox"
        ),
        None,
        "not re-applied: {out}"
    );
}

#[test]
fn login_of_a_mailbox_deactivated_meanwhile_is_refused() {
    let (env, _state) = env();
    let out = with_locked(
        &env.db,
        DOMAIN_ROW,
        env.cp().login(BOB, PW),
        "UPDATE mailbox SET active = 0 WHERE username = 'bob@example.org'",
    );
    out.assert_code(1)
        .assert_stderr_contains("mailbox inactive");
    assert_eq!(
        single(&env.db, "SELECT active FROM mailbox").as_deref(),
        Some("0"),
        "{out}"
    );
}

/// A sync batch reads its domain's usage before it takes the domain lock and again under it
/// only when this program's write count of the domain moved meanwhile: a mailbox created
/// while the batch waited for the lock (by a login: one more write counted) still counts
/// against the domain's limit.
#[test]
fn sync_counts_a_mailbox_created_while_it_waited_for_the_domain_lock() {
    let env = TestEnv::new(&[LdapUser::new("bob", BOB, PW)
        .display_name("Bob")
        .employee_type("staff")]);
    let mut cfg = env.cfg.clone();
    cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
    let mut domain = DomainRow::from_golden(&golden());
    domain.mailboxes = 2;
    domain.insert(&env.db);
    insert_template(&env.db, "Plain", TEMPLATE);
    env.db.add_mailbox(&Mailbox::new("alice@example.org"));
    let mut env = env;
    env.cfg = cfg;
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "Plain" }]);
    env.sync_on();
    let state = sync_state();
    let out = with_locked(
        &env.db,
        DOMAIN_ROW,
        env.forced_sync(&state),
        "INSERT INTO mailbox (username, password, name, description, quota, local_part, \
           domain, attributes, custom_attributes, kind, multiple_bookings, authsource, active) \
         VALUES ('zed@example.org', '', 'Zed', '', 0, 'zed', 'example.org', '{}', '{}', '', -1, \
           'mailcow', 1); \
         INSERT INTO mailcow_ldap_auth_domain_writes (domain, writes) VALUES ('example.org', 1) \
           ON DUPLICATE KEY UPDATE writes = writes + 1",
    );
    assert!(
        out.stderr.contains("user=bob@example.org result=failed")
            || out.stderr.contains("user=bob@example.org result=refused"),
        "bob would be the domain's third mailbox of 2: {out}"
    );
    assert!(
        env.db
            .rows("SELECT username FROM mailbox WHERE username = 'bob@example.org'")
            .is_empty(),
        "{out}"
    );
}

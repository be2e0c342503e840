//! No panic on data (issue 7, item 4): rows whose columns hold an unexpected type (schema
//! drift, hand-edited data) are a temporary failure for a login and a counted failure for one
//! sync entry — never a panic (exit 101). Each test changes its own database's schema.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use provision_helpers::*;
use serde_json::json;

const PW: &str = "Bad-rows-pw-1";

fn user(uid: &str) -> LdapUser {
    LdapUser::new(uid, &format!("{uid}@example.org"), PW).employee_type("staff")
}

fn env(users: &[LdapUser]) -> TestEnv {
    let mut env = TestEnv::new(users);
    env.cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
    DomainRow::from_golden(&golden()).insert(&env.db);
    insert_template(&env.db, "Plain", r#"{"quota":0,"tags":["t"]}"#);
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "Plain" }]);
    env
}

#[test]
fn login_on_a_column_of_unexpected_type_is_tempfail() {
    let env = env(&[user("alice")]);
    env.db.add_mailbox(&Mailbox::new("alice@example.org"));
    env.db
        .exec("ALTER TABLE mailbox MODIFY active VARCHAR(10) NOT NULL DEFAULT '1'");
    env.db
        .exec("UPDATE mailbox SET active = 'yes' WHERE username = 'alice@example.org'");
    for out in [
        env.cp().login("alice@example.org", PW).run(),
        env.cp().lookup("alice@example.org").run(),
    ] {
        out.assert_code(111)
            .assert_stderr_contains("database holds unexpected data: mailbox.active")
            .assert_stderr_lacks("panicked");
    }
}

#[test]
fn login_on_a_domain_row_of_unexpected_type_is_tempfail() {
    // read only under the provisioning transaction's lock
    let env = env(&[user("bob")]);
    env.db
        .exec("ALTER TABLE domain MODIFY mailboxes VARCHAR(10) NOT NULL DEFAULT '0'");
    env.db.exec("UPDATE domain SET mailboxes = 'many'");
    env.cp()
        .login("bob@example.org", PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("database holds unexpected data: domain.mailboxes")
        .assert_stderr_lacks("panicked");
    assert!(env.db.rows("SELECT * FROM mailbox").is_empty());
}

#[test]
fn sync_counts_a_bad_row_as_failed_and_goes_on() {
    let mut env = env(&[user("bob"), user("carol"), user("dave")]);
    env.sync_on();
    env.db.add_mailbox(&Mailbox::new("bob@example.org"));
    env.db.add_mailbox(&Mailbox::new("carol@example.org"));
    env.db
        .exec("ALTER TABLE mailbox MODIFY quota VARCHAR(20) NOT NULL DEFAULT '0'");
    env.db
        .exec("UPDATE mailbox SET quota = 'lots' WHERE username = 'bob@example.org'");
    let out = env.forced_sync(&sync_state()).run();
    out.assert_code(0)
        .assert_stderr_contains("user=bob@example.org result=failed")
        .assert_stderr_contains("mailbox.quota holds a value of an unexpected type")
        .assert_stderr_contains("user=carol@example.org result=reapplied")
        .assert_stderr_contains("user=dave@example.org result=created")
        .assert_stderr_contains("created=1 reapplied=1 unchanged=0 skipped=0 failed=1 entries=3");
    assert_eq!(row_counts(&env.db, "dave@example.org")["mailbox"], 1);
}

//! `ldap.from_mailcow`: the LDAP settings and the attribute mapping read from mailcow's
//! `identity_provider` table, with rows written as mailcow's UI writes them.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use provision_helpers::{golden, insert_template};
use serde_json::json;

const PW: &str = "Alice-Pw-1";
const ALICE: &str = "alice@example.org";

/// alice (employeeType staff) in LDAP, domain example.org, templates Staff and Default, no
/// mailbox; the config file holds only the database and what mailcow has no field for.
fn env() -> TestEnv {
    let mut env = TestEnv::new(&[LdapUser::new("alice", ALICE, PW)
        .employee_type("staff")
        .display_name("Alice Example")]);
    env.db.add_domain(&Domain::new("example.org"));
    let golden = golden();
    insert_template(
        &env.db,
        "Staff",
        golden["template"]["attributes_text"].as_str().unwrap(),
    );
    config_from_mailcow(&mut env.cfg);
    env
}

/// The tags of alice's mailbox: the Staff template gives "staff", Default none.
fn tags(env: &TestEnv) -> Vec<Vec<Option<String>>> {
    env.db
        .rows("SELECT tag_name FROM tags_mailbox WHERE username = 'alice@example.org'")
}

fn staff_tag() -> Vec<Vec<Option<String>>> {
    vec![vec![Some("staff".to_owned())]]
}

#[test]
fn array_mappers_provision_from_the_mapped_template() {
    let env = env();
    save_as_mailcow_ui(&env, r#"["admins","staff"]"#, r#"["Admins","Staff"]"#, &[]);
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(0)
        .assert_stderr_contains("mailbox created from template Staff")
        .assert_never_printed(SVC_PW);
    assert_eq!(tags(&env), staff_tag());
}

#[test]
fn index_keyed_mappers_provision_from_the_mapped_template() {
    let env = env();
    // An API client that sent ["", "staff"]: PHP kept index 1.
    save_as_mailcow_ui(&env, r#"{"1":"staff"}"#, r#"{"1":"Staff"}"#, &[]);
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(0)
        .assert_stderr_contains("mailbox created from template Staff");
}

#[test]
fn each_login_follows_the_table_as_it_is_now() {
    let env = env();
    save_as_mailcow_ui(&env, "[]", "[]", &[("login_provisioning", "")]);
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(1)
        .assert_stderr_contains("login_provisioning is off");
    // The admin turns auto-create on in the UI: the next login creates from the default.
    save_as_mailcow_ui(&env, "[]", "[]", &[("login_provisioning", "1")]);
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(0)
        .assert_stderr_contains("mailbox created from template Default");
    // A wrong bind password in the UI: LDAP refuses the service bind, a temporary failure.
    save_as_mailcow_ui(&env, "[]", "[]", &[("bindpass", "not-the-password")]);
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("LDAP service bind")
        .assert_never_printed("not-the-password");
}

#[test]
fn without_an_ldap_provider_logins_are_a_configuration_error() {
    let env = env();
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("no LDAP identity provider configured in mailcow");
    save_as_mailcow_ui(&env, "[]", "[]", &[("authsource", "keycloak")]);
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("(authsource 'keycloak')");
    save_as_mailcow_ui(&env, "[]", "[]", &[("authsource", "ldap"), ("basedn", "")]);
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("basedn (ldap.base_dn): must not be empty");
}

#[test]
fn mailboxes_that_need_no_ldap_are_answered_without_the_settings() {
    let env = env(); // no provider in the table
    env.db
        .add_mailbox(&Mailbox::new("carol@example.org").authsource("mailcow"));
    env.cp()
        .login("carol@example.org", "any")
        .run()
        .assert_code(1)
        .assert_stderr_contains("not LDAP-backed");
}

#[test]
fn a_setting_in_both_places_is_refused() {
    let mut env = env();
    save_as_mailcow_ui(&env, "[]", "[]", &[]);
    env.cfg["ldap"]["hosts"] = json!(["127.0.0.1"]);
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("ldap.hosts: ldap.from_mailcow is on");
    env.cfg["ldap"].as_object_mut().unwrap().remove("hosts");
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "Staff" }]);
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("attribute_mapping: ldap.from_mailcow is on");
}

#[test]
fn test_connection_says_where_each_setting_came_from() {
    let env = env();
    save_as_mailcow_ui(&env, r#"["staff"]"#, r#"["Staff"]"#, &[]);
    let out = Run::subcommand(&env.cfg, &["test-connection", "--user", ALICE]).run();
    out.assert_code(0).assert_never_printed(SVC_PW);
    for line in [
        "ldap.hosts: from mailcow (identity_provider.host)",
        "attribute_mapping: from mailcow (identity_provider.mappers, templates)",
        "ldap.timeout_ms: from ",
        "a first login creates the mailbox from template Staff",
    ] {
        assert!(out.stdout.contains(line), "stdout lacks {line:?}:\n{out}");
    }
}

#[test]
fn the_sync_and_the_lua_front_end_read_the_table_too() {
    let mut env = env();
    save_as_mailcow_ui(&env, r#"["staff"]"#, r#"["Staff"]"#, &[]);
    env.sync_on();
    env.forced_sync(&sync_state()).run().assert_code(0);
    assert_eq!(tags(&env), staff_tag());
    let out = Run::subcommand(
        &env.cfg,
        &[
            "dovecot-lua",
            "verify",
            "--service",
            "imap",
            "--dovecot",
            "2.3",
            "--",
            ALICE,
        ],
    )
    .stdin(PW.as_bytes())
    .run();
    out.assert_code(0);
}

#[test]
fn authsource_searches_with_the_tables_settings() {
    let env = env();
    save_as_mailcow_ui(&env, "[]", "[]", &[]);
    env.db
        .add_mailbox(&Mailbox::new(ALICE).authsource("mailcow"));
    let out = Run::subcommand(&env.cfg, &["authsource", "ldap", ALICE]).run();
    out.assert_code(0);
    assert!(
        out.stdout.contains("ok alice@example.org: mailcow -> ldap"),
        "{out}"
    );
    // Without a provider in the table, switching to LDAP is a configuration error; switching
    // back to mailcow needs no LDAP settings.
    env.db.exec("DELETE FROM identity_provider");
    Run::subcommand(&env.cfg, &["authsource", "ldap", ALICE])
        .run()
        .assert_code(111)
        .assert_stderr_contains("no LDAP identity provider configured in mailcow");
    Run::subcommand(&env.cfg, &["authsource", "mailcow", ALICE])
        .run()
        .assert_code(0);
}

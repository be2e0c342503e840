//! SQL that holds under every `sql_mode` (issue 7, item 1): the real binary against two MariaDB
//! servers of its own — one that turns on `NO_BACKSLASH_ESCAPES` through `init_connect` (after
//! the handshake, so a driver that escapes by the handshake's mode gets it wrong), one with it in
//! the global `sql_mode`. The test databases' users are not SUPER, so `init_connect` runs for
//! them (the harness checks the mode the product's own user gets).
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::mariadb::Mariadb;
use common::*;
use mysql::prelude::Queryable;
use provision_helpers::*;
use serde_json::json;
use std::sync::OnceLock;

const PW: &str = "Mode-pw-1";
const ALICE: &str = "alice@example.org";

fn init_connect_server() -> &'static Mariadb {
    static M: OnceLock<Mariadb> = OnceLock::new();
    M.get_or_init(|| {
        Mariadb::start_with(&[
            "--init-connect=SET SESSION sql_mode=CONCAT(@@sql_mode,',NO_BACKSLASH_ESCAPES')",
        ])
    })
}

fn global_mode_server() -> &'static Mariadb {
    static M: OnceLock<Mariadb> = OnceLock::new();
    M.get_or_init(|| {
        Mariadb::start_with(&[
            "--sql-mode=STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,\
             NO_BACKSLASH_ESCAPES",
        ])
    })
}

/// Both servers, by name (for assertion messages).
fn servers() -> [(&'static str, &'static Mariadb); 2] {
    [
        ("init_connect", init_connect_server()),
        ("global sql_mode", global_mode_server()),
    ]
}

fn staff_text() -> String {
    golden()["template"]["attributes_text"]
        .as_str()
        .unwrap()
        .into()
}

/// A test env on `server`: the golden domain (example.org), StaffUI mapped from `staff`,
/// mailcow's built-in Default as default_template. Asserts that the product's database user
/// really works under NO_BACKSLASH_ESCAPES.
fn env_on(server: &'static Mariadb, users: &[LdapUser]) -> TestEnv {
    let mut env = TestEnv::on(server, users);
    env.cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
    DomainRow::from_golden(&golden()).insert(&env.db);
    insert_template(&env.db, "StaffUI", &staff_text());
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "StaffUI" }]);
    env.cfg["default_template"] = json!("Default");
    // no `{local_part}` path: a '/' in a local part is refused there, which is not what these
    // tests are about
    env.cfg["dovecot"]["userdb_fields"] = json!({ "uid": "5000", "gid": "5000" });
    let mut own = mysql::Conn::new(
        mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(server.port)
            .user(Some(&env.db.user))
            .pass(Some(&env.db.password))
            .db_name(Some(&env.db.name))
            .prefer_socket(false),
    )
    .expect("connect as the test's database user");
    let mode: String = own
        .query_first("SELECT @@SESSION.sql_mode")
        .expect("read sql_mode")
        .unwrap_or_default();
    assert!(
        mode.contains("NO_BACKSLASH_ESCAPES"),
        "the product's user must get NO_BACKSLASH_ESCAPES, has {mode:?}"
    );
    env
}

fn login(env: &TestEnv, user: &str) -> Outcome {
    env.cp().login(user, PW).run()
}

fn single(db: &TestDb, sql: &str) -> Option<String> {
    db.rows(sql).into_iter().next().and_then(|r| r[0].clone())
}

/// `mailbox` rows as (username, local_part, name), ordered.
fn mailboxes(db: &TestDb) -> Vec<(String, String, String)> {
    json_rows(
        db,
        "SELECT username, local_part, name FROM mailbox ORDER BY username",
    )
    .into_iter()
    .map(|r| {
        let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
        (text("username"), text("local_part"), text("name"))
    })
    .collect()
}

#[test]
fn oneil_logs_in_and_provisions() {
    for (mode, server) in servers() {
        let env = env_on(
            server,
            &[LdapUser::new("oneil", "o'neil@example.org", PW)
                .display_name("Shaun O'Neil")
                .employee_type("staff")],
        );
        let first = login(&env, "o'neil@example.org");
        first
            .assert_code(0)
            .assert_stderr_contains("mailbox created from template StaffUI");
        assert_eq!(first.env["USER"], "o'neil@example.org", "{mode}: {first}");
        assert_eq!(
            mailboxes(&env.db),
            [(
                "o'neil@example.org".into(),
                "o'neil".into(),
                "Shaun O'Neil".into()
            )],
            "{mode}"
        );
        // the existing mailbox: the read with the template, nothing written
        let before = snapshot(&env.db);
        let again = login(&env, "O'Neil@Example.org");
        again.assert_code(0);
        assert_eq!(again.env["USER"], "o'neil@example.org", "{mode}: {again}");
        assert_eq!(snapshot(&env.db), before, "{mode}");
        // a changed template: re-applied under the row locks
        set_template_text(
            &env.db,
            "StaffUI",
            &staff_text().replace("\"staff\"", "\"s'2\""),
        );
        login(&env, "o'neil@example.org")
            .assert_code(0)
            .assert_stderr_contains("template StaffUI re-applied");
        assert_eq!(
            single(
                &env.db,
                "SELECT GROUP_CONCAT(tag_name ORDER BY tag_name) FROM tags_mailbox"
            )
            .as_deref(),
            Some("s'2,staff"),
            "{mode}"
        );
        // lookup mode reads the same way
        let found = env.cp().lookup("o'neil@example.org").run();
        assert_eq!(found.env["USER"], "o'neil@example.org", "{mode}: {found}");
    }
}

/// `alice@example.org` in hex, for a crafted address that names her without a quote.
fn alice_hex() -> String {
    ALICE.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Local parts that turn `WHERE m.username = '<escaped>'` into a match on every row, or on
/// alice's, when the escaping is done for the wrong mode: each `'` becomes `\'` under
/// backslash escaping, which NO_BACKSLASH_ESCAPES reads as a closing quote after a backslash;
/// the comment swallows the next `\'`, `#` the rest. All are valid dot-atoms (mailcow's rule).
fn crafted_addresses() -> Vec<String> {
    vec![
        "a'or/*'*/1#@example.org".to_owned(),
        format!("a'or/*'*/m.username=0x{}#@example.org", alice_hex()),
        "z'or'1'='1@example.org".to_owned(),
    ]
}

#[test]
fn crafted_address_never_yields_alice() {
    for (mode, server) in servers() {
        let crafted = crafted_addresses();
        let mut users = vec![
            LdapUser::new("alice", ALICE, "Alice-only-pw-1")
                .display_name("Alice")
                .employee_type("staff"),
        ];
        for (i, mail) in crafted.iter().enumerate() {
            users.push(LdapUser::new(&format!("mallory{i}"), mail, PW).employee_type("staff"));
        }
        let env = env_on(server, &users);
        env.db.add_mailbox(&Mailbox::new(ALICE).quota(1 << 30));
        let alice_before = rows_of(&env.db, ALICE);
        for mail in &crafted {
            let out = login(&env, mail);
            out.assert_code(0);
            assert_eq!(out.env["USER"], *mail, "{mode}: {out}");
            assert_ne!(out.env["USER"], ALICE, "{mode}: {out}");
            let local = mail.rsplit_once('@').unwrap().0;
            assert!(
                mailboxes(&env.db)
                    .iter()
                    .any(|(username, local_part, _)| username == mail && local_part == local),
                "{mode}: {mail} provisioned as itself: {:?}",
                mailboxes(&env.db)
            );
            assert_eq!(rows_of(&env.db, ALICE), alice_before, "{mode}: {mail}");
        }
        // each crafted mailbox got exactly its own side rows
        for mail in &crafted {
            let counts = row_counts(&env.db, mail);
            assert!(
                counts.values().all(|n| *n == 1 || *n == 0) && counts["mailbox"] == 1,
                "{mode}: {mail}: {counts:?}"
            );
        }
    }
}

#[test]
fn special_characters_round_trip_exactly() {
    // Local parts with every character that means something to SQL or LIKE and that an
    // address may hold; display names and template names with those and the ones it may not.
    let odd_template = r##"T'\"#/*%_`x"##;
    let cases = [
        (
            "q1",
            "a_b@example.org",
            r#"Name 'quoted' \ "dq" # -- /* c */ % _"#,
        ),
        ("q2", "a%b@example.org", r"Back\slash\\ and \' and \0"),
        ("q3", "h#sh@example.org", "Ünïcödé 'x' # y"),
        ("q4", "c/*m*/t@example.org", "/* not a comment */"),
        ("q5", "q'#/*%_'x@example.org", "%_%_"),
        ("q6", "a'b.c'd@example.org", "'"),
    ];
    for (mode, server) in servers() {
        let users: Vec<LdapUser> = cases
            .iter()
            .map(|(uid, mail, name)| {
                LdapUser::new(uid, mail, PW)
                    .display_name(name)
                    .employee_type("odd")
            })
            .collect();
        let mut env = env_on(server, &users);
        insert_template(
            &env.db,
            odd_template,
            r##"{"quota":0,"tags":["t'1","t\\2","%_","#x","/*y*/"],"active":1}"##,
        );
        // a near name that a wildcard or a broken literal would pick up instead
        insert_template(&env.db, "T", r#"{"quota":0,"tags":["wrong"],"active":1}"#);
        env.cfg["attribute_mapping"] = json!([{ "attribute": "odd", "template": odd_template }]);

        for (_, mail, _) in cases {
            let out = login(&env, mail);
            out.assert_code(0)
                .assert_stderr_contains("mailbox created from template");
            assert_eq!(out.env["USER"], mail, "{mode}: {out}");
            // the second login reads the mailbox and the template back by these values
            login(&env, mail).assert_code(0);
        }
        let mut expected: Vec<(String, String, String)> = cases
            .iter()
            .map(|(_, mail, name)| {
                let local = mail.rsplit_once('@').unwrap().0;
                (mail.to_string(), local.to_owned(), name.to_string())
            })
            .collect();
        expected.sort();
        assert_eq!(mailboxes(&env.db), expected, "{mode}");
        // the sync finds each of them by its address, with nothing to do
        env.sync_on();
        let before = snapshot(&env.db);
        env.forced_sync(&sync_state())
            .run()
            .assert_code(0)
            .assert_stderr_contains(
                "created=0 reapplied=0 unchanged=6 skipped=0 failed=0 entries=6",
            );
        assert_eq!(snapshot(&env.db), before, "{mode}: the sync wrote nothing");
        for (_, mail, _) in cases {
            let tags: Vec<Option<String>> = env
                .db
                .rows_with(
                    "SELECT tag_name FROM tags_mailbox WHERE username = ? ORDER BY tag_name",
                    (mail,),
                )
                .into_iter()
                .map(|mut r| r.remove(0))
                .collect();
            let want = ["#x", "%_", "/*y*/", "t'1", "t\\2"].map(|t| Some(t.to_owned()));
            assert_eq!(tags, want, "{mode}: {mail}");
            let counts = row_counts(&env.db, mail);
            assert_eq!(counts["alias"], 1, "{mode}: {mail}: {counts:?}");
            assert_eq!(counts["user_acl"], 1, "{mode}: {mail}: {counts:?}");
        }
    }
}

#[test]
fn matching_follows_the_column_collation() {
    for (mode, server) in servers() {
        let mut env = env_on(
            server,
            &[
                LdapUser::new("carol", "carol@example.org", PW).employee_type("staff"),
                LdapUser::new("dave", "dave@example.org", PW).employee_type("staff"),
            ],
        );
        // stored in mixed case (an admin's insert): mailcow's collation still finds it
        env.db.add_mailbox(&Mailbox::new("Carol@Example.org"));
        let out = login(&env, "carol@example.org");
        out.assert_code(0);
        assert_eq!(out.env["USER"], "carol@example.org", "{mode}: {out}");
        assert_eq!(
            single(&env.db, "SELECT COUNT(*) FROM mailbox").as_deref(),
            Some("1"),
            "{mode}: no second mailbox"
        );
        // template names compare without case too, as mailcow's own query
        env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "staffui" }]);
        login(&env, "dave@example.org")
            .assert_code(0)
            .assert_stderr_contains("mailbox created from template staffui");
        assert_eq!(
            single(
                &env.db,
                "SELECT tag_name FROM tags_mailbox WHERE username = 'dave@example.org'"
            )
            .as_deref(),
            Some("staff"),
            "{mode}: StaffUI's tag"
        );
    }
}

//! The sync's batched writes (issue 12): the rows of a batch are the rows of single logins,
//! the domain's limits hold across a batch, a mailbox that fails inside a batch does not lose
//! the rest, a login during an import still ends with one complete mailbox; `--json`, and no
//! progress line without a terminal. Real slapd and MariaDB, the real binary.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use provision_helpers::*;
use serde_json::{Value, json};

const PW: &str = "Sync-batch-pw-1";
/// More than one batch (the sync writes 200 mailboxes per transaction).
const MANY: usize = 450;

fn staff(i: usize) -> LdapUser {
    LdapUser::new(&format!("u{i:03}"), &format!("u{i:03}@example.org"), PW)
        .display_name(&format!("User {i}"))
        .employee_type("staff")
}

/// Golden domain and StaffUI template, mapped from `staff`; sync on.
fn env(users: &[LdapUser], domain: DomainRow) -> TestEnv {
    let mut env = TestEnv::new(users);
    env.cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
    domain.insert(&env.db);
    let staff_text = golden()["template"]["attributes_text"]
        .as_str()
        .unwrap()
        .to_owned();
    insert_template(&env.db, "StaffUI", &staff_text);
    env.cfg["attribute_mapping"] = json!([{ "attribute": "staff", "template": "StaffUI" }]);
    env.cfg["login_provisioning"] = json!(true);
    env.sync_on();
    env
}

fn roomy_domain() -> DomainRow {
    let mut d = DomainRow::from_golden(&golden());
    d.mailboxes = 10_000;
    d.quota = 10_000_000;
    d
}

fn sync_json(env: &TestEnv, state: &tempfile::TempDir) -> (Outcome, Value) {
    let out = env.forced_sync(state).arg("--json").run();
    let summary = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("--json prints one JSON object ({e}):\n{out}"));
    (out, summary)
}

#[test]
fn batches_write_exactly_the_rows_of_single_logins() {
    let users: Vec<LdapUser> = (0..MANY).map(staff).collect();
    let imported = env(&users, roomy_domain());
    let logged_in = env(&users, roomy_domain());
    // aliases pointing at mailboxes of the batch, which their SOGo view rows list
    for db in [&imported.db, &logged_in.db] {
        db.exec(
            "INSERT INTO alias (address, goto, domain, active) VALUES \
             ('team@example.org', 'u000@example.org,u200@example.org,U449@Example.org', \
              'example.org', 1), \
             ('b-team@example.org', 'u200@example.org', 'example.org', 1), \
             ('a-team@example.org', 'u200@example.org', 'example.org', 1)",
        );
    }
    let (out, summary) = sync_json(&imported, &sync_state());
    out.assert_code(0);
    assert_eq!(summary["created"], MANY, "{out}");
    assert_eq!(summary["failed"], 0, "{out}");
    // the first and last of each batch, and one in the middle
    for i in [0, 1, 100, 199, 200, 399, 400, MANY - 1] {
        let who = format!("u{i:03}@example.org");
        logged_in.cp().login(&who, PW).run().assert_code(0);
        assert_eq!(
            normalised_rows_of(&imported.db, &who),
            normalised_rows_of(&logged_in.db, &who),
            "{who}"
        );
    }
    // and every row of every table, per mailbox
    let aliases = imported.db.rows_with(
        "SELECT aliases FROM _sogo_static_view WHERE c_uid = ?",
        ("u200@example.org",),
    );
    assert_eq!(
        aliases[0][0].as_deref(),
        Some("a-team@example.org b-team@example.org team@example.org")
    );
    // one row per mailbox in every table (StaffUI has one tag), and the three aliases
    for (table, rows) in snapshot(&imported.db) {
        let extra = if table == "alias" { 3 } else { 0 };
        assert_eq!(rows.len(), MANY + extra, "{table} rows");
    }
}

#[test]
fn domain_limits_hold_across_a_batch() {
    // room for 5 more mailboxes, and quota for 3 more (StaffUI gives 1024 MiB)
    let mut d = DomainRow::from_golden(&golden());
    d.mailboxes = 6;
    d.quota = 3 * 1024 + 100;
    let users: Vec<LdapUser> = (0..8).map(staff).collect();
    let env = env(&users, d);
    env.db
        .add_mailbox(&Mailbox::new("existing@example.org").quota(0));
    let (out, summary) = sync_json(&env, &sync_state());
    out.assert_code(0)
        .assert_stderr_contains("result=failed reason=\"quota: template StaffUI gives 1024 MiB, domain example.org has 100 of 3172 MiB left");
    assert_eq!(
        (summary["created"].clone(), summary["failed"].clone()),
        (json!(3), json!(5))
    );

    // the mailbox count: quota for all, room for 5 of 8
    let mut d = DomainRow::from_golden(&golden());
    d.mailboxes = 5;
    d.quota = 100_000;
    let env = self::env(&users, d);
    let (out, summary) = sync_json(&env, &sync_state());
    out.assert_code(0)
        .assert_stderr_contains("mailbox limit of domain example.org reached (5 of 5)");
    assert_eq!(
        (summary["created"].clone(), summary["failed"].clone()),
        (json!(5), json!(3))
    );
    let n = env.db.rows("SELECT COUNT(*) FROM mailbox")[0][0].clone();
    assert_eq!(n.as_deref(), Some("5"));
}

#[test]
fn quota_increases_in_a_batch_hold_the_domain_quota() {
    // five LDAP-backed mailboxes with quota 0; StaffUI gives 1024 MiB: quota for 3 of them
    let mut d = DomainRow::from_golden(&golden());
    d.quota = 3 * 1024 + 100;
    let users: Vec<LdapUser> = (0..5).map(staff).collect();
    let env = env(&users, d);
    for i in 0..5 {
        env.db
            .add_mailbox(&Mailbox::new(&format!("u{i:03}@example.org")));
    }
    let (out, summary) = sync_json(&env, &sync_state());
    out.assert_code(0).assert_stderr_contains(
        "user=u003@example.org result=skipped reason=\"quota: template StaffUI gives 1024 MiB, \
         domain example.org has 100 of 3172 MiB left; template not applied",
    );
    assert_eq!(
        (summary["reapplied"].clone(), summary["skipped"].clone()),
        (json!(3), json!(2)),
        "{out}"
    );
    let quotas = env
        .db
        .rows("SELECT username, quota FROM mailbox ORDER BY username");
    let mib = |i: usize| quotas[i][1].as_deref().unwrap().parse::<i64>().unwrap() >> 20;
    assert_eq!(
        (0..5).map(mib).collect::<Vec<_>>(),
        [1024, 1024, 1024, 0, 0]
    );
}

#[test]
fn a_failing_mailbox_is_counted_and_the_rest_of_the_batch_written() {
    let users: Vec<LdapUser> = (0..10).map(staff).collect();
    let env = env(&users, roomy_domain());
    // u003's address is an alias already (refused by the checks); u006's insert fails on the
    // server (a trigger), which rolls the batch back: it is written again without u006
    env.db.exec(
        "INSERT INTO alias (address, goto, domain, active) \
         VALUES ('u003@example.org', 'someone@example.org', 'example.org', 1)",
    );
    env.db.exec(
        "CREATE TRIGGER refuse_u006 BEFORE INSERT ON mailbox FOR EACH ROW \
         IF NEW.username = 'u006@example.org' THEN \
           SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by a test trigger'; \
         END IF",
    );
    let (out, summary) = sync_json(&env, &sync_state());
    out.assert_code(0)
        .assert_stderr_contains("user=u003@example.org result=failed reason=\"address u003@example.org is already an alias")
        .assert_stderr_contains("user=u006@example.org result=failed")
        .assert_stderr_contains("refused by a test trigger");
    assert_eq!(summary["created"], 8, "{out}");
    assert_eq!(summary["failed"], 2, "{out}");
    for i in (0..10).filter(|i| *i != 3 && *i != 6) {
        let who = format!("u{i:03}@example.org");
        let counts = row_counts(&env.db, &who);
        assert!(counts.values().all(|n| *n == 1), "{who}: {counts:?}");
    }
    assert!(
        row_counts(&env.db, "u006@example.org")
            .values()
            .all(|n| *n == 0)
    );
}

#[test]
fn a_login_during_an_import_ends_with_one_complete_mailbox() {
    let users: Vec<LdapUser> = (0..MANY).map(staff).collect();
    let env = env(&users, roomy_domain());
    let state = sync_state();
    let who = format!("u{:03}@example.org", MANY - 1);
    let (import, logins) = std::thread::scope(|s| {
        let import = s.spawn(|| env.forced_sync(&state).run());
        // logins of the last user to be imported, while the import runs
        let logins: Vec<Outcome> = (0..5).map(|_| env.cp().login(&who, PW).run()).collect();
        (import.join().unwrap(), logins)
    });
    import.assert_code(0);
    for login in &logins {
        login.assert_code(0);
    }
    let counts = row_counts(&env.db, &who);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}\n{import}");
    let summary = import
        .stderr
        .lines()
        .find(|l| l.contains(" created=") && l.contains(" ms="))
        .map(str::to_owned);
    let n = env.db.rows("SELECT COUNT(*) FROM mailbox")[0][0].clone();
    assert_eq!(n, Some(MANY.to_string()), "{summary:?}");
}

#[test]
fn json_summary_and_no_progress_line_without_a_terminal() {
    let env = env(&[staff(1), staff(2)], roomy_domain());
    let state = sync_state();
    let (out, summary) = sync_json(&env, &state);
    out.assert_code(0);
    assert_eq!(
        summary,
        json!({
            "result": "ok", "dry_run": false, "created": 2, "reapplied": 0, "unchanged": 0,
            "skipped": 0, "failed": 0, "entries": 2, "ms": summary["ms"].clone()
        })
    );
    // standard error is a pipe here: log lines only, no progress line
    assert!(!out.stderr.contains('\r'), "{out}");
    assert!(!out.stderr.contains("listing:"), "{out}");

    // not run, and faults, are one object too
    let (out, summary) = sync_json(&env, &state);
    out.assert_code(0);
    assert_eq!(summary["unchanged"], 2);
    let out = env.forced_sync(&state).arg("--json").arg("--dry-run").run();
    let summary: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(summary["dry_run"], true);
    let mut broken = env.cfg.clone();
    broken["database"]["port"] = json!(1);
    let out = Run::subcommand(
        &broken,
        &[
            "sync",
            "--force",
            "--json",
            "--state-dir",
            state.path().join("s").to_str().unwrap(),
        ],
    )
    .run();
    out.assert_code(111);
    let summary: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(summary["result"], "tempfail");
    assert!(summary["reason"].as_str().unwrap().contains("database"));
}

#[test]
fn a_terminal_gets_a_progress_line() {
    let env = env(&[staff(1), staff(2)], roomy_domain());
    let dir = tempfile::Builder::new()
        .prefix("tty.")
        .tempdir_in(common::process::scratch())
        .unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, serde_norway::to_string(&env.cfg).unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let command = format!(
        "{} --config {} sync --force --state-dir {}",
        env!("CARGO_BIN_EXE_mailcow-ldap-auth"),
        config.display(),
        dir.path().join("state").display()
    );
    // script(1) runs the sync with a pseudo-terminal as standard output and error
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("listing: 1 entries"), "{text}");
    assert!(text.contains("\r\x1b[2K"), "the line is cleared: {text}");
    assert!(
        text.contains("sync created=2"),
        "the summary on a terminal: {text}"
    );
}

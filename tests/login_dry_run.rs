//! `login USER --dry-run`: the whole login against a throwaway slapd and MariaDB, printing what
//! it finds and what provisioning would write, and writing nothing.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use std::collections::BTreeMap;

use common::*;
use provision_helpers::{golden, insert_golden_template, set_template_text};

const PW: &str = "Alice-Pw-1 ä*()\\";
const ALICE: &str = "alice@example.org";

/// alice (employeeType staff → template Staff) in LDAP, domain example.org, template Staff.
fn env() -> TestEnv {
    let env = TestEnv::new(&[LdapUser::new("alice", ALICE, PW)
        .employee_type("staff")
        .display_name("Alice Example")]);
    env.db.add_domain(&Domain::new("example.org"));
    insert_golden_template(&env.db, "Staff");
    env
}

fn login(env: &TestEnv, password: &str, dry_run: bool) -> Outcome {
    let mut args = vec!["login", ALICE];
    if dry_run {
        args.push("--dry-run");
    }
    Run::subcommand(&env.cfg, &args)
        .stdin(format!("{password}\n").as_bytes())
        .run()
}

/// Every row of every table of the test's database (sasl_log, mailbox, alias, quota2, …).
fn snapshot(env: &TestEnv) -> BTreeMap<String, Vec<Vec<Option<String>>>> {
    let tables = env
        .db
        .rows("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()");
    assert!(tables.len() > 5, "too few tables: {tables:?}");
    tables
        .into_iter()
        .map(|t| {
            let table = t[0].clone().unwrap();
            let mut rows = env.db.rows(&format!("SELECT * FROM `{table}`"));
            rows.sort();
            (table, rows)
        })
        .collect()
}

#[track_caller]
fn assert_stdout_has(out: &Outcome, line: &str) {
    assert!(
        out.stdout.lines().any(|l| l.contains(line)),
        "stdout lacks {line:?}:\n{out}"
    );
}

#[test]
fn dry_run_of_a_new_user_lists_the_rows_a_real_login_then_writes() {
    let env = env();
    let before = snapshot(&env);
    let out = login(&env, PW, true);
    out.assert_code(0).assert_never_printed(PW);
    for line in [
        "dry-run: login name alice@example.org, service imap",
        "dry-run: no mailbox alice@example.org",
        "the password binds; mapping values 'staff'",
        "dry-run: plan: create the mailbox from template Staff",
        "dry-run: template Staff: {\"quota\":1073741824,",
        "would write mailbox: username alice@example.org, name 'Alice Example', local_part \
         alice, domain example.org, quota 1024 MiB, active 1, authsource ldap",
        "\"pop3_access\":\"0\"",
        "would write quota2, quota2replica: alice@example.org",
        "would write alias: alice@example.org -> alice@example.org, domain example.org, active 1",
        "would write tags_mailbox: staff",
        "would write user_acl: on spam_alias, tls_policy",
        "would write Redis: RL_VALUE alice@example.org = 10 / 1h",
        "checked limits of domain example.org: 0 of 100 mailboxes used; 10240 MiB per \
         mailbox allowed, the template gives 1024 MiB; 0 of 102400 MiB of the domain's quota used",
    ] {
        assert_stdout_has(&out, line);
    }
    assert_eq!(
        out.stdout.lines().last(),
        Some(
            "dry-run: nothing written; the login would answer ok: alice@example.org (mailbox \
             created from template Staff)"
        )
    );
    assert_eq!(snapshot(&env), before, "a dry run must not write");

    // what it listed is what the real login writes
    login(&env, PW, false).assert_code(0);
    assert_ne!(snapshot(&env), before, "the snapshot sees a login's writes");
    assert_eq!(
        env.db.rows(
            "SELECT m.name, m.quota, m.active, a.goto, a.active, t.tag_name FROM mailbox m \
             JOIN alias a ON a.address = m.username JOIN tags_mailbox t USING (username)"
        ),
        vec![
            ["Alice Example", "1073741824", "1", ALICE, "1", "staff"]
                .map(|v| Some(v.to_owned()))
                .to_vec()
        ]
    );
}

#[test]
fn dry_run_with_a_wrong_password_is_refused_and_writes_nothing() {
    let env = env();
    let before = snapshot(&env);
    let out = login(&env, "not-her-password", true);
    out.assert_code(1);
    assert_stdout_has(&out, "dry-run: no mailbox alice@example.org");
    assert_eq!(
        out.stdout.lines().last(),
        Some("dry-run: nothing written; the login would answer rejected: wrong password")
    );
    assert!(!out.stdout.contains("would write"), "{out}");
    assert_eq!(snapshot(&env), before);
}

#[test]
fn dry_run_with_ldap_down_is_a_temporary_failure() {
    let mut env = env();
    env.ldap_at(&["127.0.0.1"], dead_port());
    let before = snapshot(&env);
    let out = login(&env, PW, true);
    out.assert_code(111);
    assert_stdout_has(
        &out,
        "dry-run: nothing written; the login would answer tempfail: all LDAP hosts unreachable",
    );
    assert_eq!(snapshot(&env), before);
}

#[test]
fn dry_run_of_an_existing_user_with_a_changed_template_prints_the_reapply() {
    let env = env();
    login(&env, PW, false).assert_code(0);
    let out = login(&env, PW, true);
    out.assert_code(0);
    assert_stdout_has(
        &out,
        "dry-run: mailbox alice@example.org: active 1, authsource ldap",
    );
    assert_stdout_has(&out, "dry-run: mailbox checks passed");
    assert_stdout_has(&out, "no app password matches");
    assert_stdout_has(&out, "dry-run: plan: re-apply template Staff if it changed");
    assert_stdout_has(&out, "dry-run: provisioning: nothing to write");
    assert!(!out.stdout.contains("would write"), "up to date: {out}");

    let changed = golden()["template"]["attributes_text"]
        .as_str()
        .unwrap()
        .replace("\"rl_value\":\"10\"", "\"rl_value\":\"20\"")
        .replace("\"quota\":1073741824", "\"quota\":2147483648")
        .replace("\"pop3_access\":0", "\"pop3_access\":1");
    set_template_text(&env.db, "Staff", &changed);
    let before = snapshot(&env);
    let out = login(&env, PW, true);
    out.assert_code(0);
    for line in [
        "dry-run: template Staff: {\"quota\":2147483648,",
        "would write mailbox: quota 2048 MiB (now 1024 MiB), active 1, name 'Alice Example', \
         attributes set force_pw_update=0",
        "pop3_access=1",
        "would write alias: active 1",
        "would write tags_mailbox: staff (added; none removed)",
        "would write Redis: RL_VALUE alice@example.org = 20 / 1h",
        "checked the quota limits of domain example.org: 2048 MiB fits",
    ] {
        assert_stdout_has(&out, line);
    }
    assert_stdout_has(
        &out,
        "the login would answer ok: alice@example.org (template Staff re-applied)",
    );
    assert_eq!(snapshot(&env), before, "a dry run must not write");
}

#[test]
fn dry_run_in_a_domain_at_its_mailbox_limit_prints_the_refusal() {
    let env = env();
    env.db.exec("UPDATE domain SET mailboxes = 0");
    let before = snapshot(&env);
    let out = login(&env, PW, true);
    out.assert_code(1);
    assert_stdout_has(
        &out,
        "dry-run: nothing written; the login would answer rejected: mailbox limit of domain \
         example.org reached (0 of 0)",
    );
    assert_eq!(snapshot(&env), before);
}

#[test]
fn dry_run_answers_a_skipped_update_as_the_real_login_does() {
    let env = env();
    login(&env, PW, false).assert_code(0);
    // beyond the domain's 10 GiB per mailbox: skipped, but its `active: 0` still refuses
    let changed = golden()["template"]["attributes_text"]
        .as_str()
        .unwrap()
        .replace("\"quota\":1073741824", "\"quota\":21474836480")
        .replace("\"active\":1", "\"active\":0");
    set_template_text(&env.db, "Staff", &changed);
    let before = snapshot(&env);
    let dry = login(&env, PW, true);
    dry.assert_code(1);
    assert_eq!(snapshot(&env), before);
    let real = login(&env, PW, false);
    real.assert_code(1);
    let answer = real.stdout.trim();
    assert!(
        answer.starts_with("rejected: mailbox inactive; quota:"),
        "{real}"
    );
    assert_eq!(
        dry.stdout.lines().last().unwrap(),
        format!("dry-run: nothing written; the login would answer {answer}")
    );
}

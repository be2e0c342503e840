//! The shell commands an admin runs by hand: `login` (the real login flow from a shell, and
//! its `--dry-run`, which writes nothing) and `test-connection` (the troubleshooting
//! checklist), against a throwaway slapd and MariaDB.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use provision_helpers::{golden, insert_golden_template, set_template_text};
use serde_json::json;
use std::collections::BTreeMap;

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

fn command(env: &TestEnv, args: &[&str]) -> Run {
    Run::subcommand(&env.cfg, args)
}

fn mailbox_count(env: &TestEnv) -> String {
    env.db.rows("SELECT COUNT(*) FROM mailbox")[0][0]
        .clone()
        .unwrap()
}

#[track_caller]
fn assert_stdout_has(out: &Outcome, line: &str) {
    assert!(
        out.stdout.lines().any(|l| l.contains(line)),
        "stdout lacks {line:?}:\n{out}"
    );
}

#[test]
fn login_command_runs_the_login_flow_with_the_password_from_stdin() {
    let mut env = env();
    let out = command(&env, &["login", ALICE, "--service", "imap"])
        .stdin(format!("{PW}\n").as_bytes())
        .run();
    out.assert_code(0).assert_never_printed(PW);
    assert_eq!(
        out.stdout.trim(),
        "ok: alice@example.org (mailbox created from template Staff; skipped outside MySQL: \
         Redis rate limit (RL_VALUE alice@example.org = 10 / 1h), memcached flush)"
    );
    assert_eq!(mailbox_count(&env), "1");

    let out = command(&env, &["login", ALICE])
        .stdin(b"not-her-password\n")
        .run();
    out.assert_code(1);
    assert_eq!(out.stdout.trim(), "rejected: wrong password");

    // the template disables POP3: the same refusal Dovecot would get
    let out = command(&env, &["login", ALICE, "--service", "pop3"])
        .stdin(format!("{PW}\n").as_bytes())
        .run();
    out.assert_code(1);
    assert_eq!(
        out.stdout.trim(),
        "rejected: service pop3 disabled for this mailbox"
    );

    env.ldap_at(&["127.0.0.1"], dead_port());
    let out = command(&env, &["login", ALICE])
        .stdin(format!("{PW}\n").as_bytes())
        .run();
    out.assert_code(111);
    assert!(
        out.stdout
            .starts_with("tempfail: all LDAP hosts unreachable"),
        "{out}"
    );
}

#[test]
fn test_connection_passes_on_a_working_setup() {
    let env = env();
    let out = command(&env, &["test-connection"]).run();
    out.assert_code(0).assert_never_printed(SVC_PW);
    let port = slapd().port;
    assert_stdout_has(
        &out,
        &format!("ok    LDAP 127.0.0.1:{port} bind as {SVC_DN}"),
    );
    assert_stdout_has(&out, &format!("ok    LDAP base DN {}", env.ldap.dn));
    assert_stdout_has(&out, "(mailcow schema 19022026_1220)");
    assert_stdout_has(&out, "ok    mailbox template 'Staff' exists");
    assert_stdout_has(&out, "ok    mailbox template 'Default' exists");
    assert!(!out.stdout.contains("FAIL"), "{out}");
}

#[test]
fn test_connection_warns_about_settings_that_expose_passwords() {
    const CLEAR: &str = "passwords travel in clear";
    const UNVERIFIED: &str = "ldap.ignore_ssl_errors is on: the LDAP server's certificate is \
                              not verified";
    let mut env = env();
    // plain LDAP over loopback: nothing to warn about
    let out = command(&env, &["test-connection"]).run();
    out.assert_code(0)
        .assert_stderr_lacks(CLEAR)
        .assert_stderr_lacks(UNVERIFIED);

    // 0.0.0.0 is not a loopback address (Linux connects it to this machine all the same)
    env.cfg["ldap"]["hosts"] = json!(["0.0.0.0", "localhost"]);
    let out = command(&env, &["test-connection"]).run();
    out.assert_code(0).assert_stderr_contains(
        "warning: ldap: neither use_ssl nor use_tls is on: passwords travel in clear to 0.0.0.0\n",
    );

    env.cfg["ldap"]["hosts"] = json!(["127.0.0.1"]);
    env.cfg["ldap"]["use_tls"] = json!(true);
    env.cfg["ldap"]["ignore_ssl_errors"] = json!(true);
    env.cfg["ldap"]["ca_file"] = json!(certs().other_ca);
    let out = command(&env, &["test-connection"]).run();
    out.assert_code(0)
        .assert_stderr_contains(UNVERIFIED)
        .assert_stderr_contains("ldap.ca_file and ldap.ca_only are ignored")
        .assert_stderr_lacks(CLEAR);
}

#[test]
fn test_connection_names_each_broken_piece() {
    let mut env = env();
    env.db
        .exec("DELETE FROM templates WHERE template = 'Staff'");
    let dead = dead_port();
    env.cfg["ldap"]["hosts"] = json!([format!("127.0.0.2"), "127.0.0.1"]);
    env.cfg["ldap"]["port"] = json!(slapd().port);
    // 127.0.0.2 has nothing listening on slapd's port: refused, the next host works
    let out = command(&env, &["test-connection"]).run();
    out.assert_code(111);
    assert_stdout_has(&out, "FAIL  all LDAP hosts unreachable: 127.0.0.2");
    assert_stdout_has(&out, "ok    LDAP 127.0.0.1");
    assert_stdout_has(&out, "FAIL  mailbox template 'Staff' exists");

    env.cfg["ldap"]["hosts"] = json!(["127.0.0.1"]);
    env.cfg["ldap"]["bind_password"] = json!("wrong");
    env.cfg["database"]["port"] = json!(dead);
    let out = command(&env, &["test-connection"]).run();
    out.assert_code(111).assert_never_printed("wrong");
    assert_stdout_has(&out, "FAIL  LDAP service bind as");
    assert_stdout_has(&out, "FAIL  database unreachable");
}

#[test]
fn test_connection_user_shows_what_a_first_login_would_do_without_writing() {
    let env = env();
    let out = command(&env, &["test-connection", "--user", "Alice@Example.org"]).run();
    out.assert_code(0);
    assert_stdout_has(
        &out,
        &format!(
            "ok    alice@example.org: LDAP entry uid=alice,{}",
            env.ldap.dn
        ),
    );
    assert_stdout_has(&out, "employeeType: [\"staff\"]");
    assert_stdout_has(
        &out,
        "ok    alice@example.org: a first login creates the mailbox from template Staff",
    );
    assert_eq!(mailbox_count(&env), "0", "test-connection must not write");

    let out = command(&env, &["test-connection", "--user", "nobody@example.org"]).run();
    out.assert_code(111);
    assert_stdout_has(&out, "FAIL  nobody@example.org: no such LDAP entry");

    env.db.exec("UPDATE domain SET mailboxes = 0");
    let out = command(&env, &["test-connection", "--user", ALICE]).run();
    out.assert_code(111);
    assert_stdout_has(
        &out,
        "FAIL  alice@example.org: a first login is refused: mailbox limit of domain example.org reached",
    );
    assert_eq!(mailbox_count(&env), "0");
}

#[test]
fn test_connection_user_with_a_mailbox_reports_its_template_state() {
    let env = env();
    command(&env, &["login", ALICE])
        .stdin(format!("{PW}\n").as_bytes())
        .run()
        .assert_code(0);
    let out = command(&env, &["test-connection", "--user", ALICE]).run();
    out.assert_code(0);
    assert_stdout_has(
        &out,
        "ok    alice@example.org: mailbox exists (authsource ldap, active 1, domain active Some(1))",
    );
    assert_stdout_has(&out, "template Staff is up to date");

    let changed = golden()["template"]["attributes_text"]
        .as_str()
        .unwrap()
        .replace("\"rl_value\":\"10\"", "\"rl_value\":\"20\"");
    env.db.exec_with(
        "UPDATE templates SET attributes = ? WHERE template = 'Staff'",
        (changed,),
    );
    let out = command(&env, &["test-connection", "--user", ALICE]).run();
    out.assert_code(0);
    assert_stdout_has(&out, "the next login re-applies template Staff");
}

/// `test-connection --json`: stdout is exactly one JSON object.
fn json_report(out: &Outcome) -> serde_json::Value {
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON object ({e}):\n{out}"))
}

/// The (status, detail) of every check with this name.
fn checks_named(report: &serde_json::Value, name: &str) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["name"] == name)
        .map(|c| {
            assert!(c["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{c}");
            let text = |k: &str| c[k].as_str().expect("a string").to_owned();
            (text("status"), text("detail"))
        })
        .collect()
}

#[test]
fn test_connection_json_reports_every_check_and_the_next_login() {
    let mut env = env();
    // no ca_file over plain LDAP: no configuration warning
    env.cfg["ldap"].as_object_mut().unwrap().remove("ca_file");
    let out = command(
        &env,
        &["test-connection", "--json", "--user", "Alice@Example.org"],
    )
    .run();
    out.assert_code(0).assert_never_printed(SVC_PW);
    let report = json_report(&out);
    assert_eq!(report["result"], "ok", "{report:#}");
    let port = slapd().port;
    assert_eq!(
        checks_named(&report, "ldap_bind"),
        vec![(
            "ok".into(),
            format!("LDAP 127.0.0.1:{port} bind as {SVC_DN}")
        )]
    );
    assert_eq!(checks_named(&report, "ldap_base_dn").len(), 1);
    assert_eq!(checks_named(&report, "database")[0].0, "ok");
    assert_eq!(
        checks_named(&report, "template"),
        vec![
            ("ok".into(), "mailbox template 'Default' exists".into()),
            ("ok".into(), "mailbox template 'Staff' exists".into())
        ]
    );
    assert_eq!(
        report["user"],
        json!({
            "address": ALICE,
            "dn": format!("uid=alice,{}", env.ldap.dn),
            "attribute_values": ["staff"],
            "display_name": "Alice Example",
            "mapped_template": "Staff",
            "mailbox": null,
            "next_login": { "action": "create", "template": "Staff" }
        })
    );
    assert_eq!(mailbox_count(&env), "0", "test-connection must not write");

    // after the first login: the mailbox, and nothing to do
    command(&env, &["login", ALICE])
        .stdin(format!("{PW}\n").as_bytes())
        .run()
        .assert_code(0);
    let out = command(&env, &["test-connection", "--json", "--user", ALICE]).run();
    let report = json_report(&out);
    assert_eq!(
        report["user"]["mailbox"],
        json!({ "authsource": "ldap", "active": 1, "domain_active": 1 })
    );
    assert_eq!(
        report["user"]["next_login"],
        json!({ "action": "nothing", "reason": "template Staff is up to date" })
    );
}

#[test]
fn test_connection_json_marks_failures_and_warnings() {
    let mut env = env();
    // ca_file over plain LDAP: a configuration warning, which keeps exit 0
    let out = command(&env, &["test-connection", "--json"]).run();
    out.assert_code(0);
    let report = json_report(&out);
    assert_eq!(report["result"], "warn", "{report:#}");
    let warnings = checks_named(&report, "configuration");
    assert!(
        warnings
            .iter()
            .any(|(status, detail)| status == "warn" && detail.contains("ca_file")),
        "{warnings:?}"
    );
    assert_eq!(report["user"], serde_json::Value::Null);

    // the LDAP exposure warnings are checks of their own
    let mut unverified = env.cfg.clone();
    unverified["ldap"]["ignore_ssl_errors"] = json!(true);
    let out = Run::subcommand(&unverified, &["test-connection", "--json"]).run();
    out.assert_code(0);
    let report = json_report(&out);
    assert_eq!(report["result"], "warn");
    let ldap = checks_named(&report, "ldap");
    assert_eq!(ldap.len(), 1, "{ldap:?}");
    assert_eq!(ldap[0].0, "warn");
    assert!(
        ldap[0].1.starts_with("ldap.ignore_ssl_errors is on"),
        "{ldap:?}"
    );

    env.db
        .exec("DELETE FROM templates WHERE template = 'Staff'");
    env.cfg["ldap"]["hosts"] = json!(["127.0.0.2", "127.0.0.1"]);
    let out = command(&env, &["test-connection", "--json", "--user", ALICE]).run();
    out.assert_code(111);
    let report = json_report(&out);
    assert_eq!(report["result"], "fail");
    let binds = checks_named(&report, "ldap_bind");
    assert_eq!(binds.len(), 2, "{binds:?}");
    assert_eq!(binds[0].0, "fail");
    assert!(binds[0].1.contains("127.0.0.2"), "{binds:?}");
    assert_eq!(binds[1].0, "ok");
    assert!(
        checks_named(&report, "template")
            .contains(&("fail".into(), "mailbox template 'Staff' exists".into()))
    );
    assert_eq!(
        report["user"]["next_login"],
        json!({ "action": "refused", "reason": "a first login is refused: template Staff missing" })
    );

    // a broken configuration file is a failed check too, still one JSON object
    let out = command(&env, &["test-connection", "--json"])
        .config_yaml("ldap: [")
        .run();
    out.assert_code(111);
    let report = json_report(&out);
    assert_eq!(report["result"], "fail");
    let config = checks_named(&report, "configuration");
    assert_eq!(config.len(), 1);
    assert_eq!(config[0].0, "fail");
    assert!(
        config[0].1.starts_with("configuration error in "),
        "{config:?}"
    );
}

#[test]
fn quotes_in_login_and_template_names_reach_mysql_as_data() {
    let mut env = TestEnv::new(&[LdapUser::new("obrien", "o'brien@example.org", PW)
        .employee_type("staff")
        .display_name("Pat O'Brien")]);
    env.db.add_domain(&Domain::new("example.org"));
    insert_golden_template(&env.db, "Staff's \\ \"own\"");
    env.cfg["attribute_mapping"] =
        json!([{ "attribute": "staff", "template": "Staff's \\ \"own\"" }]);
    for _ in 0..2 {
        let out = env.cp().login("o'brien@example.org", PW).run();
        out.assert_code(0);
        assert_eq!(out.env["USER"], "o'brien@example.org", "{out}");
    }
    assert_eq!(
        env.db.rows("SELECT username, name FROM mailbox"),
        vec![vec![
            Some("o'brien@example.org".into()),
            Some("Pat O'Brien".into())
        ]]
    );
    env.cp()
        .login("x'or'1'='1@example.org", PW)
        .run()
        .assert_code(1)
        .assert_stderr_contains("no such LDAP entry");
    env.cp()
        .lookup("x'or'1'='1@example.org")
        .run()
        .assert_code(3);
    assert_eq!(mailbox_count(&env), "1");
}

/// `login ALICE` (with `--dry-run`) with this password on standard input.
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
        "would not write Redis (no redis: section, or an invalid rl_frame): RL_VALUE \
         alice@example.org = 10 / 1h",
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

    // the mailbox as it would be created is checked as the real login checks it
    let out = Run::subcommand(
        &env.cfg,
        &["login", ALICE, "--dry-run", "--service", "pop3"],
    )
    .stdin(format!("{PW}\n").as_bytes())
    .run();
    out.assert_code(1);
    assert_stdout_has(
        &out,
        "the login would answer rejected: service pop3 disabled for this mailbox",
    );
    assert_eq!(snapshot(&env), before);

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
        "would not write Redis (no redis: section, or an invalid rl_frame): RL_VALUE \
         alice@example.org = 20 / 1h",
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

#[test]
fn dry_run_names_the_rate_limit_it_would_write_to_redis_and_leaves_redis_alone() {
    let redis = common::redis::Redis::start();
    let mut env = env();
    env.cfg["redis"] = redis.config();
    let out = login(&env, PW, true);
    out.assert_code(0).assert_never_printed(&redis.password);
    assert_stdout_has(
        &out,
        "dry-run: would write Redis: RL_VALUE alice@example.org = 10 / 1h",
    );
    assert!(
        redis.rate_limits().is_empty(),
        "a dry run must not write Redis"
    );
    login(&env, PW, false).assert_code(0);
    assert_eq!(
        redis.rate_limits(),
        vec![(ALICE.to_owned(), "10 / 1h".to_owned())]
    );
}

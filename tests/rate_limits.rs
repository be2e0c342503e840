//! Template rate limits in mailcow's Redis (`RL_VALUE`), against a real redis-server: written
//! exactly as mailcow writes them when a `redis:` section is configured, logged as skipped
//! without one, and never a reason to fail a login.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::redis::Redis;
use common::*;
use provision_helpers::{golden, insert_template, set_template_text};
use serde_json::json;

const PW: &str = "Alice-Pw-1";
const ALICE: &str = "alice@example.org";

/// The golden Staff template (`rl_value` "10", `rl_frame` "h").
fn staff() -> String {
    golden()["template"]["attributes_text"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// alice (employeeType staff → template Staff) in LDAP, domain example.org, no mailbox yet.
fn env() -> TestEnv {
    let env = TestEnv::new(&[LdapUser::new("alice", ALICE, PW)
        .employee_type("staff")
        .display_name("Alice Example")]);
    env.db.add_domain(&Domain::new("example.org"));
    insert_template(&env.db, "Staff", &staff());
    env
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn creation_and_update_write_rl_value_as_mailcow() {
    let redis = Redis::start();
    let mut env = env();
    env.cfg["redis"] = redis.config();

    let out = env.cp().login(ALICE, PW).run();
    out.assert_code(0)
        .assert_stderr_contains("skipped outside MySQL: memcached flush\"")
        .assert_never_printed(&redis.password);
    assert_eq!(redis.rate_limits(), pairs(&[(ALICE, "10 / 1h")]));

    // The template changes its limit: the next login re-applies it, and Redis follows.
    set_template_text(
        &env.db,
        "Staff",
        &staff()
            .replace(r#""rl_value":"10""#, r#""rl_value":"25""#)
            .replace(r#""rl_frame":"h""#, r#""rl_frame":"d""#),
    );
    env.cp().login(ALICE, PW).run().assert_code(0);
    assert_eq!(redis.rate_limits(), pairs(&[(ALICE, "25 / 1d")]));

    // No limit: mailcow deletes the field.
    set_template_text(
        &env.db,
        "Staff",
        &staff().replace(r#""rl_value":"10""#, r#""rl_value":"""#),
    );
    env.cp().login(ALICE, PW).run().assert_code(0);
    assert!(redis.rate_limits().is_empty());
}

#[test]
fn the_sync_writes_rate_limits_too() {
    let redis = Redis::start();
    let mut env = env();
    env.cfg["redis"] = redis.config();
    env.sync_on();
    let state = sync_state();
    env.forced_sync(&state).run().assert_code(0);
    assert_eq!(redis.rate_limits(), pairs(&[(ALICE, "10 / 1h")]));
}

#[test]
fn without_a_redis_section_the_rate_limit_is_logged_as_skipped() {
    let env = env();
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(0)
        .assert_stderr_contains("Redis rate limit (RL_VALUE alice@example.org = 10 / 1h)");
}

#[test]
fn an_unreachable_or_refusing_redis_does_not_fail_the_login() {
    let redis = Redis::start();
    let mut env = env();
    env.cfg["redis"] = json!({ "host": "127.0.0.1", "port": dead_port(), "timeout_ms": 500 });
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(0)
        .assert_stderr_contains("rate limit (Redis unreachable");

    // Wrong password: the mailbox exists now, so a template change makes the next login write.
    env.cfg["redis"] =
        json!({ "host": "127.0.0.1", "port": redis.port, "password": "not-the-password" });
    set_template_text(
        &env.db,
        "Staff",
        &staff().replace(r#""rl_value":"10""#, r#""rl_value":"11""#),
    );
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(0)
        .assert_stderr_contains("rate limit (Redis unreachable")
        .assert_never_printed("not-the-password");
    assert!(redis.rate_limits().is_empty());
}

#[test]
fn the_redis_password_may_come_from_a_trusted_file() {
    use std::os::unix::fs::PermissionsExt;
    let redis = Redis::start();
    let mut env = env();
    let dir = tempfile::tempdir_in(common::process::scratch()).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = dir.path().join("redis.pass");
    std::fs::write(&file, format!("{}\n", redis.password)).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.cfg["redis"] = json!({ "host": "127.0.0.1", "port": redis.port, "password_file": file });
    env.cp().login(ALICE, PW).run().assert_code(0);
    assert_eq!(redis.rate_limits(), pairs(&[(ALICE, "10 / 1h")]));

    // A file others could rewrite is refused like any other secret file: a configuration error.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o620)).unwrap();
    env.cp()
        .login(ALICE, PW)
        .run()
        .assert_code(111)
        .assert_stderr_contains("redis.password_file")
        .assert_stderr_contains("writable by group/others");
}

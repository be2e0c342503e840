//! Fault and load tests (docs/reliability.md): the real binary against real servers while the
//! database refuses connections, slapd dies mid-login, hundreds of logins run at once, or a
//! provisioning process is killed inside its transaction. Each test prints the figure it
//! measured (`cargo test --test reliability -- --nocapture`); it asserts only outcomes.
mod common;
#[path = "common/provision_helpers.rs"]
mod provision_helpers;

use common::*;
use mysql::prelude::Queryable;
use provision_helpers::*;
use serde_json::json;
use std::time::{Duration, Instant};

const PW: &str = "Rel-Pw-1";

/// `n` LDAP users `u<i>@example.org` without employeeType (so the built-in Default template
/// applies) and the domain; mailboxes are not created.
fn env_with_users(n: usize) -> TestEnv {
    let users: Vec<LdapUser> = (0..n)
        .map(|i| LdapUser::new(&format!("u{i}"), &format!("u{i}@example.org"), PW))
        .collect();
    let env = TestEnv::new(&users);
    env.db.add_domain(&Domain::new("example.org"));
    env
}

/// Time enough for every login to finish however long it queues for the CPU: these tests are
/// about answers, not speed.
fn patient(env: &mut TestEnv) {
    env.cfg["deadline_ms"] = json!(240_000);
    env.cfg["ldap"]["connect_timeout_ms"] = json!(60_000);
    env.cfg["ldap"]["timeout_ms"] = json!(120_000);
}

/// Runs `logins` (user, password) all at once, each in its own process.
fn simultaneous(env: &TestEnv, logins: &[(String, &str)]) -> (Vec<Outcome>, Duration) {
    let start = std::sync::Barrier::new(logins.len());
    let t0 = Instant::now();
    let outs = std::thread::scope(|s| {
        let handles: Vec<_> = logins
            .iter()
            .map(|(user, password)| {
                let start = &start;
                s.spawn(move || {
                    let run = env
                        .cp()
                        .login(user, password)
                        .timeout(Duration::from_secs(300));
                    start.wait();
                    run.run()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (outs, t0.elapsed())
}

fn count(db: &TestDb, sql: &str) -> i64 {
    db.rows(sql)[0][0].as_deref().unwrap().parse().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Servers failing
// ---------------------------------------------------------------------------------------------

#[test]
fn database_too_many_connections_is_tempfail() {
    let env = env_with_users(1);
    env.db.add_mailbox(&Mailbox::new("u0@example.org"));
    for host in ["%", "localhost"] {
        env.db.exec(&format!(
            "ALTER USER '{}'@'{host}' WITH MAX_USER_CONNECTIONS 1",
            env.db.user
        ));
    }
    // The one connection the account may have, held by someone else.
    let held = env.db.user_conn().expect("the account's one connection");
    for lookup in [false, true] {
        let run = if lookup {
            env.cp().lookup("u0@example.org")
        } else {
            env.cp().login("u0@example.org", PW)
        };
        let t0 = Instant::now();
        let out = run.run();
        eprintln!(
            "figure: too many connections, {} → exit {:?} in {} ms",
            if lookup { "lookup" } else { "login" },
            out.code,
            t0.elapsed().as_millis()
        );
        out.assert_code(111)
            .assert_stderr_contains("result=tempfail")
            .assert_stderr_contains("max_user_connections");
    }
    drop(held);
    env.cp().login("u0@example.org", PW).run().assert_code(0);
}

/// Whether a TCP connection to 127.0.0.1:`port` is established (the client's side of it).
fn connected_to(port: u16) -> bool {
    let wanted = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .expect("/proc/net/tcp")
        .lines()
        .skip(1)
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(2) == Some(&wanted.as_str()) && f.get(3) == Some(&"01")
        })
}

#[test]
fn slapd_killed_mid_login_is_tempfail() {
    let own = Slapd::start();
    let mut env = env_with_users(0);
    let alice = LdapUser::new("alice", "alice@example.org", PW);
    env.cfg["ldap"]["base_dn"] = json!(own.subtree(&[alice]).dn);
    env.ldap_at(&["127.0.0.1"], own.port);
    patient(&mut env);
    env.cp().login("alice@example.org", PW).run().assert_code(0);

    // Stopped, slapd still completes TCP handshakes (the kernel does) but answers nothing: the
    // login waits for its bind. Killed then, the kernel resets the connection under it.
    own.pause();
    let running = env.cp().login("alice@example.org", PW).spawn();
    let waited = Instant::now();
    while !connected_to(own.port) {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the login never connected"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    own.kill();
    let out = running.wait();
    eprintln!(
        "figure: slapd killed mid-login → exit {:?} {} ms after the kill",
        out.code,
        killed.elapsed().as_millis()
    );
    out.assert_code(111)
        .assert_stderr_contains("result=tempfail");
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

#[test]
fn five_hundred_simultaneous_logins_are_all_answered_correctly() {
    const USERS: usize = 50;
    let mut env = env_with_users(USERS);
    patient(&mut env);
    for i in 0..USERS {
        env.db
            .add_mailbox(&Mailbox::new(&format!("u{i}@example.org")));
    }
    // Every fifth login with a wrong password.
    let logins: Vec<(String, &str)> = (0..500)
        .map(|i| {
            let password = if i % 5 == 4 { "wrong-pw" } else { PW };
            (format!("u{}@example.org", i % USERS), password)
        })
        .collect();
    let (outs, wall) = simultaneous(&env, &logins);
    let accepted = outs.iter().filter(|o| o.code == Some(0)).count();
    let rejected = outs.iter().filter(|o| o.code == Some(1)).count();
    eprintln!(
        "figure: 500 simultaneous logins answered in {} ms ({accepted} accepted, {rejected} rejected, {} other)",
        wall.as_millis(),
        outs.len() - accepted - rejected
    );
    for ((user, password), out) in logins.iter().zip(&outs) {
        if *password == PW {
            out.assert_code(0);
            assert_eq!(out.env["USER"], *user, "{out}");
        } else {
            out.assert_code(1);
        }
    }
    assert_eq!((accepted, rejected), (400, 100));
    assert_eq!(count(&env.db, "SELECT COUNT(*) FROM mailbox"), USERS as i64);
}

#[test]
fn fifty_parallel_first_logins_over_ten_users_make_ten_complete_mailboxes() {
    const USERS: usize = 10;
    let mut env = env_with_users(USERS);
    patient(&mut env);
    let logins: Vec<(String, &str)> = (0..50)
        .map(|i| (format!("u{}@example.org", i % USERS), PW))
        .collect();
    let (outs, wall) = simultaneous(&env, &logins);
    let created = outs
        .iter()
        .filter(|o| o.stderr.contains("mailbox created from template Default"))
        .count();
    eprintln!(
        "figure: 50 parallel first logins over {USERS} users in {} ms, {created} creations",
        wall.as_millis()
    );
    for out in &outs {
        out.assert_code(0);
    }
    assert_eq!(
        created, USERS,
        "exactly one login per user creates the mailbox"
    );
    assert_eq!(count(&env.db, "SELECT COUNT(*) FROM mailbox"), USERS as i64);
    for i in 0..USERS {
        assert_one_of_each(&env.db, &format!("u{i}@example.org"), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// A provisioning killed inside its transaction
// ---------------------------------------------------------------------------------------------

/// (state, rows modified) of each open transaction of `db`'s own user (the binary's).
fn transactions(db: &TestDb) -> Vec<(String, i64)> {
    db.rows(&format!(
        "SELECT t.trx_state, t.trx_rows_modified FROM information_schema.INNODB_TRX t \
         JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id \
         WHERE p.USER = '{}'",
        db.user
    ))
    .into_iter()
    .map(|row| {
        let state = row[0].clone().unwrap();
        (state, row[1].as_deref().unwrap().parse().unwrap())
    })
    .collect()
}

/// Polls `done`: every 150 ms, since InnoDB refreshes INNODB_TRX only when it was not read
/// for 100 ms.
#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{what}: not after 60 s"
        );
        std::thread::sleep(Duration::from_millis(150));
    }
}

#[test]
fn provisioning_killed_mid_transaction_leaves_nothing_and_the_next_login_completes() {
    let mut env = env_with_users(1);
    patient(&mut env);
    let user = "u0@example.org";
    let before = snapshot(&env.db);
    // An uncommitted quota2 row for the user (a root connection, not the product's account):
    // the provisioning writes the mailbox, its tags, then waits on this row's lock.
    let mut holder = env.db.conn();
    holder.query_drop("START TRANSACTION").unwrap();
    holder
        .exec_drop("INSERT INTO quota2 (username) VALUES (?)", (user,))
        .unwrap();
    let running = env.cp().login(user, PW).spawn();
    let mut written = 0;
    wait_until(
        "the provisioning waits for the row lock",
        || match transactions(&env.db).as_slice() {
            [(state, rows)] if state == "LOCK WAIT" => {
                written = *rows;
                true
            }
            _ => false,
        },
    );
    running.signal(libc::SIGKILL);
    let out = running.wait();
    assert_eq!(out.signal, Some(libc::SIGKILL), "{out}");
    // The server finds the client gone once the statement ends (lock granted or timed out)
    // and rolls the transaction back.
    holder.query_drop("ROLLBACK").unwrap();
    drop(holder);
    let t0 = Instant::now();
    wait_until("the killed login's transaction ends", || {
        transactions(&env.db).is_empty()
    });
    eprintln!(
        "figure: provisioning SIGKILLed with {written} rows written, waiting for a row lock; \
         its transaction was gone {} ms after the lock was released",
        t0.elapsed().as_millis()
    );
    assert!(written > 0, "the transaction had written nothing yet");
    assert_eq!(snapshot(&env.db), before, "half-written rows remain");
    env.cp()
        .login(user, PW)
        .run()
        .assert_code(0)
        .assert_stderr_contains("mailbox created from template Default");
    assert_one_of_each(&env.db, user, 0);
}

//! Integration-test harness: throwaway slapd + MariaDB (one each per test binary), per-test LDAP
//! subtree and database, a runner for the real binary, and network fault helpers.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod cmd;
pub mod lua;
pub mod mailcow_ui;
pub mod mariadb;
pub mod net;
pub mod process;
pub mod redis;
pub mod serve;
pub mod slapd;

pub use certs::certs;
pub use cmd::{CHECKPASSWORD_REPLY, ConfigAt, ENV_REPLY, Outcome, Run, Running};
pub use mailcow_ui::{app_password_vector, config_from_mailcow, save_as_mailcow_ui};
pub use mariadb::{Domain, Mailbox, PROVISIONED, TestDb, mariadb, provisioned};
pub use net::{BlackHole, FirstRequestProxy, Forwarder, Switch, dead_port};
pub use slapd::{LdapUser, SVC_DN, SVC_PW, Slapd, Subtree, slapd};

use serde_json::{Value, json};
use std::time::Instant;

/// Everything one test needs: its own LDAP subtree, its own database, and a config for both.
pub struct TestEnv {
    pub ldap: Subtree,
    pub db: TestDb,
    /// The full contract config (log.stderr all, small timeouts) pointing at this test's subtree
    /// and database; tests edit it freely (`env.cfg["ldap"]["port"] = ...`).
    pub cfg: Value,
}

impl TestEnv {
    /// A subtree holding `users` and a fresh mailcow database.
    pub fn new(users: &[LdapUser]) -> TestEnv {
        TestEnv::on(mariadb(), users)
    }

    /// [`TestEnv::new`] with the database on `server` (one started with other options).
    pub fn on(server: &'static mariadb::Mariadb, users: &[LdapUser]) -> TestEnv {
        let t0 = Instant::now();
        let ldap = slapd().subtree(users);
        let db = server.create_db();
        let cfg = default_config(&ldap, &db);
        eprintln!(
            "harness: test env (subtree {}, db {}) in {:?} (db {:?})",
            ldap.dn,
            db.name,
            t0.elapsed(),
            db.created_in
        );
        TestEnv { ldap, db, cfg }
    }

    /// `checkpassword /usr/bin/env` with this env's config.
    pub fn cp(&self) -> Run {
        Run::checkpassword(&self.cfg)
    }

    /// Turns on both halves of the sync (import and periodic full sync).
    pub fn sync_on(&mut self) {
        self.cfg["sync"] =
            json!({ "import_users": true, "periodic_full_sync": true, "interval_minutes": 15 });
    }

    /// `sync --force` with this env's config and a state directory inside `state`.
    pub fn forced_sync(&self, state: &tempfile::TempDir) -> Run {
        let dir = state.path().join("state");
        Run::subcommand(
            &self.cfg,
            &[
                "sync",
                "--force",
                "--state-dir",
                dir.to_str().expect("utf-8 path"),
            ],
        )
    }

    /// Points the LDAP side at other hosts/port (e.g. a black hole or a dead port).
    pub fn ldap_at(&mut self, hosts: &[&str], port: u16) {
        self.cfg["ldap"]["hosts"] = json!(hosts);
        self.cfg["ldap"]["port"] = json!(port);
    }
}

/// alice@example.org with `password`: LDAP entry (employeeType staff, "Alice Example") +
/// active domain + active LDAP-backed mailbox with a 1 GiB quota.
pub fn alice_env(password: &str) -> TestEnv {
    let env = TestEnv::new(&[LdapUser::new("alice", "alice@example.org", password)
        .employee_type("staff")
        .display_name("Alice Example")]);
    env.db.add_domain(&Domain::new("example.org"));
    env.db
        .add_mailbox(&Mailbox::new("alice@example.org").quota(1 << 30));
    env
}

/// The full YAML of the contract, as a JSON tree.
pub fn default_config(ldap: &Subtree, db: &TestDb) -> Value {
    json!({
        "ldap": {
            "hosts": ["127.0.0.1"],
            "port": slapd().port,
            "use_ssl": false,
            "use_tls": false,
            "ignore_ssl_errors": false,
            "ca_file": certs().ca,
            "base_dn": ldap.dn,
            "username_field": "mail",
            "filter": "(objectClass=inetOrgPerson)",
            "attribute_field": "employeeType",
            "name_field": "displayName",
            "bind_dn": SVC_DN,
            "bind_password": SVC_PW,
            "connect_timeout_ms": 1000,
            "timeout_ms": 2000
        },
        "attribute_mapping": [ { "attribute": "staff", "template": "Staff" } ],
        "default_template": "Default",
        "login_provisioning": true,
        "deadline_ms": 5000,
        "database": {
            "host": "127.0.0.1",
            "port": db.server.port,
            "name": db.name,
            "user": db.user,
            "password": db.password
        },
        "dovecot": {
            "userdb_fields": { "uid": "5000", "gid": "5000", "home": "/var/vmail/{domain}/{local_part}" }
        },
        "log": { "syslog": false, "stderr": "all" },
        "sync": { "import_users": false, "periodic_full_sync": false, "interval_minutes": 15 }
    })
}

/// A scratch directory for one test's sync state (see [`TestEnv::forced_sync`]).
pub fn sync_state() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("state.")
        .tempdir_in(process::scratch())
        .expect("state dir")
}

//! End-to-end harness: the shared slapd + MariaDB of `tests/common`, plus one real Dovecot 2.3
//! (and, on first use, one Postfix) per test binary, configured from the shipped `contrib/`
//! snippets, or a Dovecot 2.4.1 per test inside a trixie root ([`dovecot24`]). Each test is a
//! [`Site`]: its own mail domain, whose config file (selected by Dovecot through `%Ld` in the
//! checkpassword args) points at the test's own LDAP subtree and database.
#![allow(dead_code)]

pub mod clients;
pub mod dovecot;
pub mod dovecot24;
pub mod mailcow_php;
pub mod postfix;

use crate::common::{Domain, LdapUser, PROVISIONED, TestEnv, provisioned};
use dovecot::dovecot;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const GOLDEN: &str = include_str!("../fixtures/golden-provision-bob.json");

/// The `modified` time [`Site::pin_modified`] sets.
pub const PINNED: &str = "2001-02-03 04:05:06";

/// The quota of the `Staff` template (bytes).
pub const STAFF_QUOTA: &str = "1073741824";

/// Waits (up to 10 s: Dovecot's log process writes asynchronously) until the Dovecot log has a
/// line containing every needle; returns that line.
#[track_caller]
pub fn log_line(needles: &[&str]) -> String {
    wait_for_line(|| dovecot().log(), needles)
}

/// Waits up to 10 s until `log()` has a line containing every needle; returns that line.
#[track_caller]
pub fn wait_for_line(log: impl Fn() -> String, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = log();
        if let Some(l) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return l.to_string();
        }
        if Instant::now() > deadline {
            panic!("no Dovecot log line contains all of {needles:?}; log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `doveadm user` exit code, output as (field, value) pairs, and all output.
pub fn doveadm_user(addr: &str) -> (Option<i32>, Vec<(String, String)>, String) {
    user_lookup(dovecot().doveadm(&["user", addr]))
}

/// The value of `key` among `doveadm user` fields; panics (showing `out`) when absent.
pub fn field<'a>(fields: &'a [(String, String)], key: &str, out: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("doveadm user prints no {key}:\n{out}"))
}

/// What a `doveadm user` run printed: exit code, (field, value) pairs, all output.
pub fn user_lookup(out: std::process::Output) -> (Option<i32>, Vec<(String, String)>, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let fields = stdout
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let all = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code(), fields, all)
}

/// The `Staff` template: the attributes text mailcow's UI wrote in the golden capture
/// (quota 1 GiB, tag "staff", POP3 disabled, rate limit 10/h).
pub fn staff_template_text() -> String {
    let v: Value = serde_json::from_str(GOLDEN).expect("golden json");
    v["template"]["attributes_text"]
        .as_str()
        .expect("attributes_text")
        .to_string()
}

pub struct Site {
    pub env: TestEnv,
    pub domain: String,
}

impl Site {
    /// Domain `<tag>.example.org` (active, room for 100 mailboxes), the `Staff` template next to
    /// the built-in `Default`, mapping `staff` → Staff, default template Default, and the config
    /// file the shared Dovecot 2.3 uses for this domain.
    pub fn new(tag: &str) -> Site {
        let d = dovecot();
        let site = Site::for_mail(tag, d.mail_uid, d.mail_gid, &d.mail);
        site.write_config();
        site
    }

    /// The same site for any Dovecot whose mail belongs to `uid`/`gid` and whose homes lie under
    /// `mail` (as the auth process sees the path); writes no config file.
    pub fn for_mail(tag: &str, uid: u32, gid: u32, mail: &Path) -> Site {
        let mut env = TestEnv::new(&[]);
        let domain = format!("{tag}.example.org");
        env.db.add_domain(&Domain::new(&domain));
        add_template(&env, "Staff", &staff_template_text());
        // plain LDAP on loopback: no CA file (the product refuses ca_file without TLS)
        if let Some(ldap) = env.cfg["ldap"].as_object_mut() {
            ldap.remove("ca_file");
        }
        env.cfg["dovecot"]["userdb_fields"] = json!({
            "uid": uid.to_string(),
            "gid": gid.to_string(),
            "home": format!("{}/{{domain}}/{{local_part}}", mail.display()),
        });
        Site { env, domain }
    }

    /// (Re)writes this domain's config file from `env.cfg`.
    pub fn write_config(&self) {
        dovecot().write_config(&self.domain, &self.env.cfg);
    }

    pub fn addr(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }

    /// Adds an LDAP user `local@<domain>` (displayName "<Local> Example") with optional
    /// employeeType; returns the address.
    pub fn user(&self, local: &str, password: &str, employee_type: Option<&str>) -> String {
        let addr = self.addr(local);
        let mut name: Vec<char> = local.chars().collect();
        name[0] = name[0].to_ascii_uppercase();
        let mut u = LdapUser::new(local, &addr, password)
            .display_name(&format!("{} Example", name.into_iter().collect::<String>()));
        if let Some(t) = employee_type {
            u = u.employee_type(t);
        }
        self.env.ldap.add_user(&u);
        addr
    }

    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        self.env.db.rows(sql)
    }

    /// [`TestDb::rows_with`].
    pub fn rows_with(
        &self,
        sql: &str,
        params: impl Into<mysql::Params>,
    ) -> Vec<Vec<Option<String>>> {
        self.env.db.rows_with(sql, params)
    }

    /// Number of rows in the provisioned `table` that belong to `addr`.
    pub fn count(&self, table: &str, addr: &str) -> usize {
        let r = self.rows_with(provisioned(table).count_of_address, (addr,));
        r[0][0].as_deref().unwrap_or("0").parse().expect("count")
    }

    /// Pins `modified` of the mailbox and alias rows of `addr` to [`PINNED`] (an UPDATE that
    /// changes any column moves it to NOW()), then returns its [`Site::snapshot`]: compare it
    /// after later logins to prove they wrote nothing.
    pub fn pin_modified(&self, addr: &str) -> Vec<(String, Vec<Vec<Option<String>>>)> {
        for sql in [
            "UPDATE mailbox SET modified = ? WHERE username = ?",
            "UPDATE alias SET modified = ? WHERE address = ?",
        ] {
            self.env.db.exec_with(sql, (PINNED, addr));
        }
        self.snapshot(addr)
    }

    /// Every row a provisioned mailbox owns, table by table (for "nothing rewritten").
    pub fn snapshot(&self, addr: &str) -> Vec<(String, Vec<Vec<Option<String>>>)> {
        PROVISIONED
            .iter()
            .map(|t| (t.name.to_owned(), self.rows_with(t.of_address, (addr,))))
            .collect()
    }

    /// An app password for `addr` as mailcow's UI adds it (every service allowed), with the
    /// first `{BLF-CRYPT}` hash of tests/fixtures/app_password_hashes.json; returns its id and
    /// its password.
    pub fn add_app_password(&self, addr: &str) -> (String, String) {
        let doc: Value =
            serde_json::from_str(include_str!("../fixtures/app_password_hashes.json")).unwrap();
        let v = &doc["vectors"][0];
        assert!(v["hash"].as_str().unwrap().starts_with("{BLF-CRYPT}"));
        self.env.db.exec_with(
            "INSERT INTO app_passwd (name, mailbox, domain, password) VALUES ('phone', ?, ?, ?)",
            (addr, &self.domain, v["hash"].as_str().unwrap()),
        );
        let id = self.rows_with("SELECT MAX(id) FROM app_passwd WHERE mailbox = ?", (addr,));
        (
            id[0][0].clone().expect("id"),
            v["password"].as_str().unwrap().to_owned(),
        )
    }

    /// `addr`'s `sasl_log` rows as (service, real_rip, app_password), by service.
    pub fn sasl_log(&self, addr: &str) -> Vec<Vec<Option<String>>> {
        self.rows_with(
            "SELECT service, real_rip, app_password FROM sasl_log WHERE username = ? \
             ORDER BY service",
            (addr,),
        )
    }

    /// The Dovecot log lines about `addr` (for failure messages).
    pub fn log(&self, addr: &str) -> String {
        dovecot().log_lines(addr).join("\n")
    }
}

/// A mailbox template (`type='mailbox'`) in the test's database.
pub fn add_template(env: &TestEnv, name: &str, attributes_text: &str) {
    use mysql::prelude::Queryable;
    env.db
        .conn()
        .exec_drop(
            "INSERT INTO templates (template, type, attributes) VALUES (?, 'mailbox', ?)",
            (name, attributes_text),
        )
        .unwrap_or_else(|e| panic!("insert template {name}: {e}"));
}

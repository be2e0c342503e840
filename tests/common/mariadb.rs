//! One throwaway mariadbd per test process (test-servers.md Part 2). Every test gets its own
//! database loaded with the real mailcow schema (tests/fixtures/mailcow-schema.sql) and its own
//! DB user.

use super::process::{fast_scratch, free_port, run_ok, scratch_subdir, spawn_server, stop_server};
use mysql::prelude::Queryable;
use mysql::{Conn, OptsBuilder};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SCHEMA: &str = include_str!("../fixtures/mailcow-schema.sql");

/// A table provisioning writes, with the statements tests read it by (the name is an
/// identifier, so each statement is written out rather than built).
pub struct ProvisionedTable {
    pub name: &'static str,
    /// The column holding the address a row belongs to.
    pub key: &'static str,
    /// Every row, in a fixed order.
    pub all: &'static str,
    /// The rows of one address (`?`), in a fixed order.
    pub of_address: &'static str,
    /// How many rows one address (`?`) has.
    pub count_of_address: &'static str,
}

macro_rules! provisioned_table {
    ($name:literal, $key:literal, $order:literal) => {
        ProvisionedTable {
            name: $name,
            key: $key,
            all: concat!("SELECT * FROM `", $name, "` ORDER BY ", $order),
            of_address: concat!(
                "SELECT * FROM `",
                $name,
                "` WHERE `",
                $key,
                "` = ? ORDER BY ",
                $order
            ),
            count_of_address: concat!("SELECT COUNT(*) FROM `", $name, "` WHERE `", $key, "` = ?"),
        }
    };
}

/// Every table provisioning writes.
pub const PROVISIONED: [ProvisionedTable; 7] = [
    provisioned_table!("mailbox", "username", "username"),
    provisioned_table!("alias", "address", "address"),
    provisioned_table!("quota2", "username", "username"),
    provisioned_table!("quota2replica", "username", "username"),
    provisioned_table!("user_acl", "username", "username"),
    provisioned_table!("tags_mailbox", "username", "username, tag_name"),
    provisioned_table!("_sogo_static_view", "c_uid", "c_uid"),
];

/// The provisioned table called `name`.
pub fn provisioned(name: &str) -> &'static ProvisionedTable {
    PROVISIONED
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} is not a provisioned table"))
}

pub struct Mariadb {
    pub port: u16,
    pub datadir: PathBuf,
    pub socket: PathBuf,
    pub dir: PathBuf,
    child: Mutex<Child>,
    /// Wall time of the first `mariadb()` call (install-db + start + identity check).
    pub startup: Duration,
}

pub fn mariadb() -> &'static Mariadb {
    static M: OnceLock<Mariadb> = OnceLock::new();
    M.get_or_init(|| Mariadb::start_with(&[]))
}

fn common_opts(dir: &Path, datadir: &Path) -> Vec<String> {
    let mut v = vec![
        "--no-defaults".to_string(),
        format!("--datadir={}", datadir.display()),
        format!("--tmpdir={}/tmp", dir.display()),
        "--innodb-log-file-size=8M".into(),
        "--innodb-buffer-pool-size=32M".into(),
        // throwaway data: no fsync anywhere (DDL of the per-test schema load is fsync-bound)
        "--debug-no-sync".into(),
        "--skip-sync-frm".into(),
        "--innodb-flush-method=nosync".into(),
    ];
    // SAFETY: trivial libc call.
    if unsafe { libc::geteuid() } == 0 {
        v.push("--user=root".into());
    }
    v
}

impl Mariadb {
    /// A server with these options added to the harness's own (e.g. `--sql-mode=…`); a test
    /// binary keeps it in its own `OnceLock`, as [`mariadb`] does the default one.
    pub fn start_with(extra_options: &[&str]) -> Mariadb {
        let t0 = Instant::now();
        // several servers in one test process each get their own directories
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let name = match STARTED.fetch_add(1, Ordering::Relaxed) {
            0 => "mariadb".to_owned(),
            n => format!("mariadb{n}"),
        };
        let dir = scratch_subdir(&name);
        std::fs::create_dir_all(dir.join("tmp")).expect("mkdir tmp");
        // datadir on tmpfs when there is room (see fast_scratch); socket, tmpdir, log in /tmp
        let datadir = fast_scratch().join(format!("{name}-data"));
        let opts = common_opts(&dir, &datadir);
        run_ok(
            Command::new("mariadb-install-db")
                .args(&opts)
                .args([
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                    "--force",
                ])
                .stdin(Stdio::null()),
        );
        let socket = dir.join("mysql.sock");
        let log_path = dir.join("error.log");
        let datadir_str = format!("{}/", datadir.display());
        for attempt in 0..20 {
            let port = free_port();
            let mut cmd = Command::new("mariadbd");
            cmd.args(&opts)
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}/mariadbd.pid", dir.display()))
                .arg(format!("--log-error={}", log_path.display()))
                .arg(format!("--port={port}"))
                .args([
                    "--bind-address=127.0.0.1",
                    "--skip-name-resolve",
                    "--skip-log-bin",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--innodb-doublewrite=0",
                    "--innodb-buffer-pool-load-at-startup=0",
                    "--innodb-buffer-pool-dump-at-shutdown=0",
                    "--max-connections=500",
                ])
                .args(extra_options)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = spawn_server(cmd).expect("spawn mariadbd");
            let deadline = Instant::now() + Duration::from_secs(30);
            let ready = loop {
                if let Some(status) = child.try_wait().expect("try_wait mariadbd") {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if !log.contains("Address already in use") || attempt == 19 {
                        panic!("mariadbd exited with {status}:\n{log}");
                    }
                    break false;
                }
                match tcp_root(port)
                    .and_then(|mut c| c.query_first::<String, _>("SELECT @@datadir"))
                {
                    Ok(Some(d)) if d == datadir_str => break true,
                    Ok(other) => {
                        // another instance won the port race
                        eprintln!("harness: port {port} answered with datadir {other:?}; retrying");
                        stop_server(&mut child);
                        break false;
                    }
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => {
                        stop_server(&mut child);
                        panic!(
                            "mariadbd not ready after 30 s: {e}\n{}",
                            std::fs::read_to_string(&log_path).unwrap_or_default()
                        );
                    }
                }
            };
            if ready {
                let m = Mariadb {
                    port,
                    datadir,
                    socket,
                    dir,
                    child: Mutex::new(child),
                    startup: t0.elapsed(),
                };
                eprintln!(
                    "harness: mariadbd pid {} on port {} ready in {:?}",
                    m.pid(),
                    port,
                    m.startup
                );
                return m;
            }
        }
        panic!("mariadbd: could not get a free port");
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// Root connection over the unix socket.
    pub fn root(&self) -> Conn {
        Conn::new(
            OptsBuilder::new()
                .socket(Some(self.socket.to_str().expect("utf-8 socket path")))
                .user(Some("root")),
        )
        .expect("connect mariadb as root")
    }

    /// A fresh database with the mailcow schema and a user `<name>`@'%' that owns it.
    pub fn create_db(&'static self) -> TestDb {
        static N: AtomicU32 = AtomicU32::new(0);
        let t0 = Instant::now();
        let name = format!("mailcow_t{}", N.fetch_add(1, Ordering::Relaxed));
        let user = name.clone();
        let password = format!("pw-{}", &super::process::random_hex()[..12]);
        let mut c = self.root();
        c.query_drop(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
             CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';
             CREATE USER '{user}'@'localhost' IDENTIFIED BY '{password}';
             GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'%';
             GRANT ALL PRIVILEGES ON `{name}`.* TO '{user}'@'localhost';
             USE `{name}`;"
        ))
        .expect("create database");
        c.query_drop(SCHEMA).expect("load mailcow schema");
        TestDb {
            server: self,
            name,
            user,
            password,
            created_in: t0.elapsed(),
        }
    }
}

fn tcp_root(port: u16) -> mysql::Result<Conn> {
    Conn::new(
        OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(port)
            .user(Some("root"))
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(1))),
    )
}

/// A `domain` row.
#[derive(Clone, Debug)]
pub struct Domain {
    pub domain: String,
    pub active: i32,
    pub mailboxes: i32,
    pub quota_mib: i64,
    pub maxquota_mib: i64,
    pub defquota_mib: i64,
}

impl Domain {
    pub fn new(domain: &str) -> Self {
        Domain {
            domain: domain.into(),
            active: 1,
            mailboxes: 100,
            quota_mib: 102400,
            maxquota_mib: 10240,
            defquota_mib: 3072,
        }
    }
    pub fn active(mut self, a: i32) -> Self {
        self.active = a;
        self
    }
}

/// A `mailbox` row (quota in bytes, as mailcow stores it).
#[derive(Clone, Debug)]
pub struct Mailbox {
    pub username: String,
    pub name: String,
    pub quota: i64,
    pub active: i32,
    pub kind: String,
    pub authsource: String,
    pub attributes: serde_json::Value,
}

/// The attributes mailcow writes for a new mailbox (all protocols allowed).
pub fn default_mailbox_attributes() -> serde_json::Value {
    serde_json::json!({
        "force_pw_update": "0",
        "tls_enforce_in": "0",
        "tls_enforce_out": "0",
        "sogo_access": "1",
        "imap_access": "1",
        "pop3_access": "1",
        "smtp_access": "1",
        "sieve_access": "1",
        "eas_access": "1",
        "dav_access": "1",
        "relayhost": "0",
        "passwd_update": "2026-01-01 00:00:00",
        "mailbox_format": "maildir:",
        "quarantine_notification": "hourly",
        "quarantine_category": "reject",
        "recovery_email": ""
    })
}

impl Mailbox {
    /// An active, LDAP-backed mailbox with quota 0 and all protocols allowed.
    pub fn new(username: &str) -> Self {
        Mailbox {
            username: username.into(),
            name: username.split('@').next().unwrap_or("").into(),
            quota: 0,
            active: 1,
            kind: String::new(),
            authsource: "ldap".into(),
            attributes: default_mailbox_attributes(),
        }
    }
    pub fn quota(mut self, bytes: i64) -> Self {
        self.quota = bytes;
        self
    }
    pub fn active(mut self, a: i32) -> Self {
        self.active = a;
        self
    }
    pub fn kind(mut self, k: &str) -> Self {
        self.kind = k.into();
        self
    }
    pub fn authsource(mut self, a: &str) -> Self {
        self.authsource = a.into();
        self
    }
    /// Sets one key of the attributes JSON (e.g. `pop3_access`, "0").
    pub fn attr(mut self, key: &str, value: &str) -> Self {
        self.attributes[key] = serde_json::Value::String(value.into());
        self
    }
    pub fn attributes(mut self, v: serde_json::Value) -> Self {
        self.attributes = v;
        self
    }
}

pub struct TestDb {
    pub server: &'static Mariadb,
    pub name: String,
    pub user: String,
    pub password: String,
    /// How long `create_db` took (CREATE DATABASE + user + schema load).
    pub created_in: Duration,
}

impl TestDb {
    /// Root connection with this database selected.
    pub fn conn(&self) -> Conn {
        let mut c = self.server.root();
        c.query_drop(format!("USE `{}`", self.name))
            .expect("USE db");
        c
    }

    pub fn add_domain(&self, d: &Domain) {
        self.conn()
            .exec_drop(
                "INSERT INTO domain (domain, description, aliases, mailboxes, defquota, maxquota, \
                 quota, relayhost, backupmx, gal, relay_all_recipients, relay_unknown_only, active) \
                 VALUES (?, ?, 400, ?, ?, ?, ?, '0', 0, 1, 0, 0, ?)",
                (
                    &d.domain,
                    format!("test domain {}", d.domain),
                    d.mailboxes,
                    d.defquota_mib,
                    d.maxquota_mib,
                    d.quota_mib,
                    d.active,
                ),
            )
            .unwrap_or_else(|e| panic!("insert domain {}: {e}", d.domain));
    }

    pub fn add_mailbox(&self, m: &Mailbox) {
        let (local, domain) = m
            .username
            .rsplit_once('@')
            .unwrap_or((m.username.as_str(), ""));
        self.conn()
            .exec_drop(
                "INSERT INTO mailbox (username, password, name, description, quota, local_part, \
                 domain, attributes, custom_attributes, kind, multiple_bookings, authsource, active) \
                 VALUES (?, '', ?, '', ?, ?, ?, ?, '{}', ?, -1, ?, ?)",
                (
                    &m.username,
                    &m.name,
                    m.quota,
                    local,
                    domain,
                    m.attributes.to_string(),
                    &m.kind,
                    &m.authsource,
                    m.active,
                ),
            )
            .unwrap_or_else(|e| panic!("insert mailbox {}: {e}", m.username));
    }

    /// Runs a query and returns every row as strings (NULL → None).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let rows: Vec<mysql::Row> = self
            .conn()
            .query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        texts(rows)
    }

    /// [`TestDb::rows`] of a prepared statement with these parameters.
    pub fn rows_with(
        &self,
        sql: &str,
        params: impl Into<mysql::Params>,
    ) -> Vec<Vec<Option<String>>> {
        let rows: Vec<mysql::Row> = self
            .conn()
            .exec(sql, params)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        texts(rows)
    }

    /// Runs a prepared statement with these parameters (root, this database).
    pub fn exec_with(&self, sql: &str, params: impl Into<mysql::Params>) {
        self.conn()
            .exec_drop(sql, params)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs a statement (root, this database).
    pub fn exec(&self, sql: &str) {
        self.conn()
            .query_drop(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A connection as this database's own user over TCP, the way the binary connects.
    pub fn user_conn(&self) -> mysql::Result<Conn> {
        Conn::new(
            OptsBuilder::new()
                .ip_or_hostname(Some("127.0.0.1"))
                .tcp_port(self.server.port)
                .user(Some(&self.user))
                .pass(Some(&self.password))
                .db_name(Some(&self.name))
                .prefer_socket(false),
        )
    }
}

/// Rows as strings, whichever protocol read them: NULL → None, DATETIME as
/// "YYYY-MM-DD HH:MM:SS" (as the text protocol sends it).
fn texts(rows: Vec<mysql::Row>) -> Vec<Vec<Option<String>>> {
    rows.into_iter()
        .map(|r| {
            r.unwrap()
                .into_iter()
                .map(|v| match v {
                    mysql::Value::NULL => None,
                    mysql::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                    mysql::Value::Int(i) => Some(i.to_string()),
                    mysql::Value::UInt(u) => Some(u.to_string()),
                    mysql::Value::Date(y, mo, d, h, mi, s, _) => {
                        Some(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
                    }
                    other => Some(format!("{other:?}")),
                })
                .collect()
        })
        .collect()
}

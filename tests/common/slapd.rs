//! One throwaway OpenLDAP slapd per test process (test-servers.md §1), listening on
//! ldap:// and ldaps:// on random 127.0.0.1 ports, with the test CA's server certificate (so
//! StartTLS works on the plain port). Every test gets its own `ou=<unique>,ou=people,...` subtree.

use super::certs::certs;
use super::process::{
    end_server, free_port, random_hex, run_ok, scratch_subdir, spawn_server, stop_server,
};
use ldap3::{LdapConn, LdapConnSettings};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SUFFIX: &str = "dc=example,dc=org";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
pub const PEOPLE_DN: &str = "ou=people,dc=example,dc=org";
pub const SVC_DN: &str = "cn=svc,ou=services,dc=example,dc=org";
pub const SVC_PW: &str = "svc-Secret-42";

pub struct Slapd {
    /// Plain LDAP (and StartTLS) port.
    pub port: u16,
    /// LDAPS port.
    pub ldaps_port: u16,
    pub dir: PathBuf,
    root_pw: String,
    child: Mutex<Child>,
    /// Wall time of the first `slapd()` call (certs + config + slapadd + start + identity check).
    pub startup: Duration,
}

/// The process-wide slapd, started on first use.
pub fn slapd() -> &'static Slapd {
    static SLAPD: OnceLock<Slapd> = OnceLock::new();
    SLAPD.get_or_init(|| Slapd::start_in("slapd"))
}

/// `{SSHA}` hash as slappasswd makes it: base64(sha1(pw + salt) + salt), 8-byte salt.
pub fn ssha(password: &str) -> String {
    use sha1::{Digest, Sha1};
    let salt = &hex::decode(&random_hex()[..16]).expect("hex")[..];
    let mut h = Sha1::new();
    h.update(password.as_bytes());
    h.update(salt);
    let mut raw = h.finalize().to_vec();
    raw.extend_from_slice(salt);
    format!("{{SSHA}}{}", base64(&raw))
}

fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

impl Slapd {
    /// A slapd of its own (the process-wide one is [`slapd()`]), for a test that stops or kills it.
    pub fn start() -> Slapd {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        Self::start_in(&format!("slapd{}", STARTED.fetch_add(1, Ordering::Relaxed)))
    }

    /// A slapd of the caller's own in the scratch sub-directory `name` (for a test that
    /// restarts it; [`slapd`] is shared).
    pub fn start_in(name: &str) -> Slapd {
        let t0 = Instant::now();
        let certs = certs();
        let dir = scratch_subdir(name);
        let db = dir.join("db");
        std::fs::create_dir_all(&db).expect("mkdir slapd db");
        let root_pw = random_hex();
        let conf = dir.join("slapd.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {ca}
TLSCertificateFile {crt}
TLSCertificateKeyFile {key}
loglevel none
database mdb
maxsize 1073741824
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {root_pw}
directory {d}/db
dbnosync
index objectClass eq
index uid,mail,cn eq
limits users size.prtotal=unlimited
access to attrs=userPassword
        by self write
        by anonymous auth
        by * none
access to *
        by users read
        by * none
",
                ca = certs.ca.display(),
                crt = certs.server_crt.display(),
                key = certs.server_key.display(),
            ),
        )
        .expect("write slapd.conf");
        let ldif = dir.join("base.ldif");
        std::fs::write(
            &ldif,
            format!(
                "dn: {SUFFIX}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n\
                 o: Example Org\ndc: example\n\n\
                 dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people\n\n\
                 dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n\n\
                 dn: {SVC_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\n\
                 cn: svc\nuserPassword: {}\n",
                ssha(SVC_PW)
            ),
        )
        .expect("write base.ldif");
        run_ok(
            Command::new("slapadd")
                .arg("-q")
                .arg("-f")
                .arg(&conf)
                .arg("-l")
                .arg(&ldif),
        );

        for attempt in 0..20 {
            let (port, ldaps_port) = (free_port(), free_port());
            if port == ldaps_port {
                continue;
            }
            if let Some(child) = launch(&dir, port, ldaps_port, &root_pw, attempt == 19) {
                let s = Slapd {
                    port,
                    ldaps_port,
                    dir,
                    root_pw,
                    child: Mutex::new(child),
                    startup: t0.elapsed(),
                };
                eprintln!(
                    "harness: slapd pid {} on ldap {} / ldaps {} ready in {:?} (incl. certs)",
                    s.pid(),
                    port,
                    ldaps_port,
                    s.startup
                );
                return s;
            }
        }
        panic!("slapd: could not get free ports");
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// Stops the server (SIGTERM: its connections are closed) and starts it again on the same
    /// ports and data.
    pub fn restart(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        stop_server(&mut child);
        // The ports were ours a moment ago; another process may take one meanwhile.
        for attempt in 0..50 {
            if let Some(new) = launch(
                &self.dir,
                self.port,
                self.ldaps_port,
                &self.root_pw,
                attempt == 49,
            ) {
                *child = new;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGSTOP: the kernel still accepts connections (listen backlog), nothing answers.
    pub fn pause(&self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGSTOP) };
    }

    /// SIGKILL (also ends a paused slapd); the kernel resets its connections.
    pub fn kill(&self) {
        end_server(
            &mut self.child.lock().unwrap_or_else(|e| e.into_inner()),
            libc::SIGKILL,
        );
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// A connection bound as the rootdn (bypasses ACLs and limits).
    pub fn admin(&self) -> LdapConn {
        let mut c = LdapConn::with_settings(
            LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5)),
            &self.url(),
        )
        .expect("connect slapd as admin");
        c.simple_bind(ROOT_DN, &self.root_pw)
            .and_then(|r| r.success())
            .expect("rootdn bind");
        c
    }

    /// Creates `ou=<unique>,ou=people,dc=example,dc=org` holding `users`.
    pub fn subtree(&self, users: &[LdapUser]) -> Subtree {
        static N: AtomicU32 = AtomicU32::new(0);
        let ou = format!("t{}", N.fetch_add(1, Ordering::Relaxed));
        let dn = format!("ou={ou},{PEOPLE_DN}");
        let mut c = self.admin();
        c.add(
            &dn,
            vec![
                ("objectClass", HashSet::from(["organizationalUnit"])),
                ("ou", HashSet::from([ou.as_str()])),
            ],
        )
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("add {dn}: {e}"));
        let st = Subtree { dn };
        for u in users {
            st.add_user_with(&mut c, u);
        }
        let _ = c.unbind();
        st
    }
}

/// Starts slapd on these ports with the configuration in `dir` and waits until the rootdn can
/// bind; `None` when it lost a port to another process (`last`: panic instead).
fn launch(dir: &Path, port: u16, ldaps_port: u16, root_pw: &str, last: bool) -> Option<Child> {
    let log_path = dir.join("slapd.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("open slapd.log");
    let log_start = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new("slapd");
    cmd.args(["-d", "none", "-h"])
        .arg(format!(
            "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps_port}/"
        ))
        .arg("-f")
        .arg(dir.join("slapd.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let mut child = spawn_server(cmd).expect("spawn slapd");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait slapd") {
            // lost a port race (errno 98) or a real failure: retry, then give up.
            let log = std::fs::read(&log_path).unwrap_or_default();
            let log = String::from_utf8_lossy(&log[log_start as usize..]);
            if !log.contains("Address already in use") || last {
                panic!("slapd exited with {status}:\n{log}");
            }
            return None;
        }
        match bind_as(port, ROOT_DN, root_pw) {
            Ok(0) => return Some(child),
            // Someone else's server answers on our port: ours will fail; retry.
            Ok(_) => {
                stop_server(&mut child);
                return None;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                stop_server(&mut child);
                panic!(
                    "slapd not ready after 20 s: {e}\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
        }
    }
}

/// Simple bind on the plain port; Ok(result code) or Err(transport error).
pub fn bind_as(port: u16, dn: &str, pw: &str) -> Result<u32, ldap3::LdapError> {
    let mut c = LdapConn::with_settings(
        LdapConnSettings::new().set_conn_timeout(Duration::from_secs(1)),
        &format!("ldap://127.0.0.1:{port}"),
    )?;
    let rc = c.simple_bind(dn, pw)?.rc;
    let _ = c.unbind();
    Ok(rc)
}

/// An inetOrgPerson to create in a test subtree.
#[derive(Clone, Debug)]
pub struct LdapUser {
    pub uid: String,
    pub mails: Vec<String>,
    pub display_name: Option<String>,
    pub employee_types: Vec<String>,
    /// Stored as `{SSHA}`; `None` = no userPassword attribute.
    pub password: Option<String>,
}

impl LdapUser {
    pub fn new(uid: &str, mail: &str, password: &str) -> Self {
        LdapUser {
            uid: uid.into(),
            mails: vec![mail.into()],
            display_name: Some(format!("{uid} Test")),
            employee_types: Vec::new(),
            password: Some(password.into()),
        }
    }
    pub fn mail(mut self, mail: &str) -> Self {
        self.mails.push(mail.into());
        self
    }
    pub fn display_name(mut self, name: &str) -> Self {
        self.display_name = Some(name.into());
        self
    }
    pub fn employee_type(mut self, t: &str) -> Self {
        self.employee_types.push(t.into());
        self
    }
}

/// A per-test subtree; use `dn` as the product's `ldap.base_dn`.
pub struct Subtree {
    pub dn: String,
}

impl Subtree {
    pub fn user_dn(&self, uid: &str) -> String {
        format!("uid={uid},{}", self.dn)
    }

    pub fn add_user(&self, u: &LdapUser) {
        let mut c = slapd().admin();
        self.add_user_with(&mut c, u);
        let _ = c.unbind();
    }

    fn add_user_with(&self, c: &mut LdapConn, u: &LdapUser) {
        let dn = self.user_dn(&u.uid);
        let cn = u.display_name.clone().unwrap_or_else(|| u.uid.clone());
        let mut attrs: Vec<(String, HashSet<String>)> = vec![
            (
                "objectClass".into(),
                HashSet::from(["inetOrgPerson".into()]),
            ),
            ("uid".into(), HashSet::from([u.uid.clone()])),
            ("cn".into(), HashSet::from([cn])),
            ("sn".into(), HashSet::from([u.uid.clone()])),
        ];
        if !u.mails.is_empty() {
            attrs.push(("mail".into(), u.mails.iter().cloned().collect()));
        }
        if let Some(n) = &u.display_name {
            attrs.push(("displayName".into(), HashSet::from([n.clone()])));
        }
        if !u.employee_types.is_empty() {
            attrs.push((
                "employeeType".into(),
                u.employee_types.iter().cloned().collect(),
            ));
        }
        if let Some(p) = &u.password {
            attrs.push(("userPassword".into(), HashSet::from([ssha(p)])));
        }
        c.add(&dn, attrs)
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("add {dn}: {e}"));
    }
}

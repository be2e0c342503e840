//! A real Dovecot 2.4.1 per test, inside the cached trixie root of `scripts/dovecot24-root.sh`
//! (Debian 12 ships 2.3 only). The host runs `chroot ROOT env -i … dovecot -F -c …`; the chroot
//! shares the host's loopback, so Dovecot's listeners and the binary's LDAP and MariaDB
//! connections work both ways, while files must live inside the root.
//!
//! Layout: one directory per test process in the root (`/srv/mla-test.<pid>.XXXXXX`, removed at
//! exit, stale ones of dead processes removed on start) with the binary under test and the
//! shipped Lua script; under it one directory per instance. Each instance's passdb/userdb are
//! exactly the shipped `contrib/dovecot/2.4/10-auth-mailcow-ldap.conf` with only the paths of
//! the binary, its config and the Lua script replaced (a snippet that drifts from what the tests
//! rely on fails them), or another auth configuration given whole (`Dovecot24::start_auth`:
//! mailcow's own chain); the surrounding `dovecot.conf` holds only test settings (listeners on
//! random loopback ports, no failure delays, the quota plugin, a log file, extra passdbs).
//!
//! One config file per instance (the snippet names one), so each test starts its own Dovecot:
//! it is ready in well under a second. Stopped by PID (its whole process group) on drop.

use crate::common::process::{free_port, random_hex, run_ok, scratch_dir_in, stop_server};
use crate::e2e::dovecot::{INSTALLED_BIN, INSTALLED_CONFIG, id_from, kill_group, run_master};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const SNIPPET: &str = include_str!("../../contrib/dovecot/2.4/10-auth-mailcow-ldap.conf");
pub const LUA_SCRIPT: &str = include_str!("../../contrib/dovecot/lua/mailcow-ldap-auth.lua");
const PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

/// The root and this test process's directory in it (host paths).
struct Shared {
    root: PathBuf,
    /// `<root>/srv/mla-test.<pid>.XXXXXX`
    dir: PathBuf,
    bin: PathBuf,
    script: PathBuf,
    mail_uid: u32,
    mail_gid: u32,
    dovecot_gid: u32,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let t0 = Instant::now();
        let root = cached_root();
        let dir = scratch_dir_in(&root.join("srv")).expect("per-process dir in the root");
        let bin = dir.join("mailcow-ldap-auth");
        std::fs::copy(crate::common::cmd::BIN, &bin).expect("copy binary into the root");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let script = dir.join("mailcow-ldap-auth.lua");
        std::fs::write(&script, LUA_SCRIPT).expect("write Lua script");
        let passwd = root.join("etc/passwd");
        let group = root.join("etc/group");
        let s = Shared {
            mail_uid: id_from(&passwd, "mail", 2),
            mail_gid: id_from(&group, "mail", 2),
            dovecot_gid: id_from(&group, "dovecot", 2),
            root,
            dir,
            bin,
            script,
        };
        eprintln!(
            "e2e24: root {} ready in {:?}",
            s.root.display(),
            t0.elapsed()
        );
        s
    })
}

/// The trixie root, built by the script on first use (a lock there serialises test binaries).
fn cached_root() -> PathBuf {
    // SAFETY: trivial libc call.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the Dovecot 2.4 tests need root (chroot; Dovecot switches users); run them via scripts/test.sh"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dovecot24-root.sh");
    let out = run_ok(Command::new("bash").arg(script).stderr(Stdio::inherit()));
    PathBuf::from(String::from_utf8(out.stdout).expect("utf-8 path").trim())
}

/// A path inside the root as the chrooted processes see it.
fn inner(root: &Path, host: &Path) -> String {
    let p = host.strip_prefix(root).expect("path inside the root");
    format!("/{}", p.display())
}

/// Every `lua_file = …` value of the snippet (the installed script path, once per block).
fn lua_file_lines() -> Vec<&'static str> {
    SNIPPET
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("lua_file = "))
        .collect()
}

/// The shipped 2.4 snippet with the installed paths replaced. Panics when the snippet no longer
/// has what the tests (and the README) rely on.
pub fn generated_snippet(bin: &str, config: &str, script: &str) -> String {
    let active = |line: &str| SNIPPET.lines().any(|l| l.trim() == line);
    for block in ["passdb lua {", "userdb prefetch {", "userdb lua {"] {
        assert!(active(block), "the 2.4 snippet lacks an active `{block}`");
    }
    for setting in [
        format!("binary = {INSTALLED_BIN}"),
        format!("config = {INSTALLED_CONFIG}"),
    ] {
        assert!(
            active(&setting),
            "the 2.4 snippet lacks `{setting}` (lua_settings)"
        );
    }
    let scripts = lua_file_lines();
    assert!(
        scripts.len() == 2 && scripts[0] == scripts[1],
        "the 2.4 snippet must name one Lua script in the passdb and the userdb: {scripts:?}"
    );
    SNIPPET
        .replace(scripts[0], script)
        .replace(INSTALLED_BIN, bin)
        .replace(INSTALLED_CONFIG, config)
}

/// How the shipped script reaches the program.
pub enum Transport<'a> {
    /// One process per request (the snippet's active `lua_settings`).
    Process,
    /// `serve` at `url`: the snippet's commented url-mode `lua_settings` instead, with a token
    /// file holding `token` in the instance directory.
    Url { url: &'a str, token: &'a str },
}

/// The snippet in url mode, as its comment says: the active `lua_settings` block out, the
/// commented one (url, token_file) in.
fn url_mode(snippet: &str, url: &str, token_file: &str) -> String {
    let mut out = Vec::new();
    let mut in_active = false;
    let mut in_commented = false;
    for line in snippet.lines() {
        if line == "lua_settings {" {
            in_active = true;
        } else if in_active {
            in_active = line != "}";
        } else if line == "#lua_settings {" || in_commented {
            in_commented = line != "#}";
            let line = &line[1..];
            out.push(if line.trim_start().starts_with("url = ") {
                format!("  url = {url}")
            } else if line.trim_start().starts_with("token_file = ") {
                format!("  token_file = {token_file}")
            } else {
                line.to_owned()
            });
        } else {
            out.push(line.to_owned());
        }
    }
    let text = out.join("\n");
    assert!(
        text.contains(&format!("url = {url}")),
        "no url-mode lua_settings in the 2.4 snippet"
    );
    text
}

pub struct Dovecot24 {
    root: PathBuf,
    /// This instance's directory (host path).
    pub dir: PathBuf,
    /// The same inside the root.
    pub inner: String,
    /// Parent of the mail homes as the auth process sees it (`<inner>/mail`).
    pub mail: String,
    pub mail_uid: u32,
    pub mail_gid: u32,
    pub imap_port: u16,
    pub pop3_port: u16,
    child: Child,
    pgid: i32,
    pub startup: Duration,
}

impl Dovecot24 {
    /// Starts an instance named `tag` whose passdb chain is the snippet followed by `extra`
    /// (config text with `{dir}` standing for the instance directory inside the root), with
    /// `files` (name, text) in that directory. The binary's config file is written later
    /// ([`Dovecot24::write_config`]).
    pub fn start(tag: &str, extra: &str, files: &[(&str, &str)]) -> Dovecot24 {
        Self::start_with(tag, extra, files, Transport::Process)
    }

    /// [`Dovecot24::start`] with the script on `transport`.
    pub fn start_with(
        tag: &str,
        extra: &str,
        files: &[(&str, &str)],
        transport: Transport,
    ) -> Dovecot24 {
        let t0 = Instant::now();
        let s = shared();
        let (dir, inner) = instance_dir(tag, files);
        let snippet = generated_snippet(
            &inner_of(&s.bin),
            &format!("{inner}/etc/config.yml"),
            &inner_of(&s.script),
        );
        let snippet = match transport {
            Transport::Process => snippet,
            Transport::Url { url, token } => {
                url_mode(&snippet, url, &write_token(&dir, &inner, token))
            }
        };
        Self::launch(tag, t0, dir, inner, &snippet, extra)
    }

    /// An instance whose auth configuration is `auth` instead of the shipped snippet (e.g.
    /// mailcow's own passdb chain), with `files` in its directory. In both, `{dir}` stands for
    /// that directory inside the root, `{script}` for the shipped Lua script there and
    /// `{token}` for a file holding `token` (root:dovecot 0640, as serve's token in production).
    pub fn start_auth(tag: &str, auth: &str, files: &[(&str, &str)], token: &str) -> Dovecot24 {
        let t0 = Instant::now();
        let (dir, inner) = instance_dir(tag, &[]);
        let token = write_token(&dir, &inner, token);
        let script = inner_of(&shared().script);
        let fill = |text: &str| {
            text.replace("{token}", &token)
                .replace("{script}", &script)
                .replace("{dir}", &inner)
        };
        for (name, text) in files {
            std::fs::write(dir.join(name), fill(text)).expect("write instance file");
        }
        let auth = fill(auth);
        Self::launch(tag, t0, dir, inner, &auth, "")
    }

    /// Dovecot on the instance directory, with `auth` as its auth configuration (what
    /// tests/fixtures/dovecot24.conf includes) and `extra` after it.
    fn launch(
        tag: &str,
        t0: Instant,
        dir: PathBuf,
        inner: String,
        auth: &str,
        extra: &str,
    ) -> Dovecot24 {
        let s = shared();
        std::fs::write(dir.join("conf.d/10-auth-mailcow-ldap.conf"), auth).expect("write auth");

        for attempt in 0..20 {
            let (imap_port, pop3_port) = (free_port(), free_port());
            if imap_port == pop3_port {
                continue;
            }
            let greeting = format!("mla-e2e24-{}", &random_hex()[..12]);
            std::fs::write(
                dir.join("dovecot.conf"),
                config(
                    &inner,
                    &format!("mla-e2e24-{}-{tag}-{attempt}", std::process::id()),
                    imap_port,
                    pop3_port,
                    &greeting,
                ) + &extra.replace("{dir}", &inner),
            )
            .expect("write dovecot.conf");
            let mut cmd = Command::new("chroot");
            cmd.arg(&s.root)
                .args(["/usr/bin/env", "-i", PATH, "/usr/sbin/dovecot", "-F", "-c"])
                .arg(format!("{inner}/dovecot.conf"));
            let log = dir.join("dovecot.log");
            let ready = run_master(cmd, &dir, &log, imap_port, &greeting, attempt == 19);
            if let Some((child, pgid)) = ready {
                let d = Dovecot24 {
                    root: s.root.clone(),
                    mail: format!("{inner}/mail"),
                    dir,
                    inner,
                    mail_uid: s.mail_uid,
                    mail_gid: s.mail_gid,
                    imap_port,
                    pop3_port,
                    child,
                    pgid,
                    startup: t0.elapsed(),
                };
                eprintln!(
                    "e2e24: {tag}: dovecot 2.4 pid {pgid} imap {imap_port} pop3 {pop3_port} ready in {:?}",
                    d.startup
                );
                return d;
            }
        }
        panic!("dovecot 2.4: could not get free ports");
    }

    /// Writes the binary's config (YAML), root:dovecot 0640 like a production install.
    pub fn write_config(&self, cfg: &serde_json::Value) {
        let path = self.dir.join("etc/config.yml");
        let tmp = path.with_extension("yml.tmp");
        std::fs::write(&tmp, serde_norway::to_string(cfg).expect("config to YAML"))
            .expect("write config");
        std::os::unix::fs::chown(&tmp, Some(0), Some(shared().dovecot_gid)).expect("chown");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        std::fs::rename(&tmp, &path).expect("rename config");
    }

    /// The whole Dovecot log so far.
    pub fn log(&self) -> String {
        read(&self.dir.join("dovecot.log"))
    }

    /// Waits (up to 10 s: Dovecot's log process writes asynchronously) for a log line holding
    /// every needle; returns it.
    #[track_caller]
    pub fn log_line(&self, needles: &[&str]) -> String {
        crate::e2e::wait_for_line(|| self.log(), needles)
    }

    /// `doveadm user ADDR`: exit code, (field, value) pairs, all output.
    pub fn user(&self, addr: &str) -> (Option<i32>, Vec<(String, String)>, String) {
        crate::e2e::user_lookup(self.doveadm(&["user", addr]))
    }

    /// `doveadm -c <conf> ARGS` inside the root.
    pub fn doveadm(&self, args: &[&str]) -> Output {
        Command::new("chroot")
            .arg(&self.root)
            .args(["/usr/bin/env", "-i", PATH, "/usr/bin/doveadm", "-c"])
            .arg(format!("{}/dovecot.conf", self.inner))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run doveadm")
    }

    /// A path inside the root, as the host sees it.
    pub fn root_path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `dovecot --version` inside the root.
    pub fn version(&self) -> String {
        let out = run_ok(
            Command::new("chroot")
                .arg(&self.root)
                .args(["/usr/sbin/dovecot", "--version"]),
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Dovecot24 {
    fn drop(&mut self) {
        kill_group(self.pgid);
        stop_server(&mut self.child);
    }
}

/// The directory of instance `tag` with `files` (name, text) in it, and its path inside the
/// root.
fn instance_dir(tag: &str, files: &[(&str, &str)]) -> (PathBuf, String) {
    let s = shared();
    let dir = s.dir.join(tag);
    for sub in ["run", "state", "conf.d", "etc", "mail"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir instance dir");
    }
    for d in [&dir, &dir.join("run"), &dir.join("etc"), &dir.join("mail")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    std::os::unix::fs::chown(dir.join("mail"), Some(s.mail_uid), Some(s.mail_gid))
        .expect("chown mail");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write instance file");
    }
    let inner = inner(&s.root, &dir);
    (dir, inner)
}

/// serve's token in `etc/token` of the instance, root:dovecot 0640; its path inside the root.
fn write_token(dir: &Path, inner: &str, token: &str) -> String {
    let path = dir.join("etc/token");
    std::fs::write(&path, format!("{token}\n")).expect("write token");
    std::os::unix::fs::chown(&path, Some(0), Some(shared().dovecot_gid)).expect("chown");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    format!("{inner}/etc/token")
}

fn inner_of(host: &Path) -> String {
    inner(&shared().root, host)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The test-only settings around the snippet (`tests/fixtures/dovecot24.conf`, shared with the
/// demo and the benchmark).
fn config(dir: &str, instance: &str, imap_port: u16, pop3_port: u16, greeting: &str) -> String {
    include_str!("../fixtures/dovecot24.conf")
        .replace("@DIR@", dir)
        .replace("@INSTANCE@", instance)
        .replace("@MAIL_UID@", &shared().mail_uid.to_string())
        .replace("@GREETING@", greeting)
        .replace("@IMAP_PORT@", &imap_port.to_string())
        .replace("@POP3_PORT@", &pop3_port.to_string())
}

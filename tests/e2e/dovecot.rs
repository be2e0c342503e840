//! One throwaway Dovecot 2.3 per test binary (dovecot-checkpassword.md Part B): IMAP, POP3 and
//! ManageSieve on random loopback ports (delivery is tested with `dovecot-lda`: dovecot-lmtpd
//! is not among the test dependencies), an auth listener inside the Postfix queue
//! directory, and as passdb/userdb exactly the blocks of a shipped snippet — the test binary
//! picks which through its `E2E_AUTH` constant ([`Auth`]) — with only paths replaced:
//!
//! * `/usr/local/bin/mailcow-ldap-auth` → a copy of the binary under test inside the instance
//!   directory (mode 0755 all the way up, so the auth process, user `dovecot`, can run it);
//! * `/etc/mailcow-ldap-auth/config.yml` → `<dir>/etc/%Ld.yml`: one config file per mail domain.
//!   Every test uses its own domain, so it gets its own config, LDAP subtree and database while
//!   all tests share this one Dovecot;
//! * (Lua) `/usr/local/share/mailcow-ldap-auth/mailcow-ldap-auth.lua` → a copy of the script.
//!
//! The Lua instance also has a passwd-file passdb after the snippet's (for mailboxes whose
//! authsource is `mailcow`, which the Lua passdb hands on with NEXT): `<dir>/passwd`.
//!
//! Stopping: the master runs in its own process group; an atexit hook (registered after the
//! shared harness's, so it runs before it) stops Postfix and SIGTERMs the whole group, because an
//! auth process with SASL clients attached outlives its master.

use crate::common::process::{
    free_port, random_hex, scratch, scratch_subdir, spawn_server, stop_server,
};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Which shipped snippet drives a test binary's Dovecot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `contrib/dovecot/2.3/10-auth-mailcow-ldap.conf`
    Checkpassword,
    /// `contrib/dovecot/2.3/10-auth-mailcow-ldap-lua.conf` + `contrib/dovecot/lua/`
    Lua,
    /// The same, in url mode (its commented `MAILCOW_LDAP_AUTH_URL` line instead of the
    /// binary's): the script asks the `serve` named in [`URL_TRANSPORT`].
    LuaUrl,
    /// mailcow-dockerized's own passdb chain (`tests/fixtures/mailcow/dovecot-passdb.conf`)
    /// with `contrib/mailcow/passwd-verify.lua` as its script: [`URL_TRANSPORT`]'s serve
    /// first, then mailcow's endpoint at [`MAILCOW_URL`]; a static userdb stands in for
    /// mailcow's SQL one.
    Mailcow,
}

/// Where `serve` listens and its token file, for [`Auth::LuaUrl`]: set before [`dovecot`].
pub static URL_TRANSPORT: OnceLock<(String, PathBuf)> = OnceLock::new();
/// mailcow's PHP endpoint (its stand-in), for [`Auth::Mailcow`]: set before [`dovecot`].
pub static MAILCOW_URL: OnceLock<String> = OnceLock::new();
/// The snippet's url-mode line (commented) and the names in it.
const URL_LINE: &str = "#import_environment = $import_environment MAILCOW_LDAP_AUTH_URL=";
const INSTALLED_URL: &str = "http://127.0.0.1:9077/";
const INSTALLED_TOKEN: &str = "/etc/mailcow-ldap-auth/token";

pub const SNIPPET: &str = include_str!("../../contrib/dovecot/2.3/10-auth-mailcow-ldap.conf");
pub const LUA_SNIPPET: &str =
    include_str!("../../contrib/dovecot/2.3/10-auth-mailcow-ldap-lua.conf");
pub const LUA_SCRIPT: &str = include_str!("../../contrib/dovecot/lua/mailcow-ldap-auth.lua");
pub const MAILCOW_PASSDB: &str = include_str!("../fixtures/mailcow/dovecot-passdb.conf");
pub const MAILCOW_WRAPPER: &str = include_str!("../../contrib/mailcow/passwd-verify.lua");
/// Paths and addresses inside mailcow's dovecot-mailcow container.
pub const MAILCOW_SCRIPT: &str = "/etc/dovecot/auth/passwd-verify.lua";
pub const MAILCOW_MASTER_PASSWD: &str = "/etc/dovecot/dovecot-master.passwd";
const MAILCOW_SERVE_URL: &str = "http://mailcow-ldap-auth:9077/";
const MAILCOW_PHP_URL: &str = "https://nginx:9082";
pub const INSTALLED_BIN: &str = "/usr/local/bin/mailcow-ldap-auth";
pub const INSTALLED_CONFIG: &str = "/etc/mailcow-ldap-auth/config.yml";
pub const INSTALLED_SCRIPT: &str = "/usr/local/share/mailcow-ldap-auth/mailcow-ldap-auth.lua";
/// The `args` line the snippet must contain (twice: passdb and userdb).
pub const SNIPPET_ARGS: &str = "args = /usr/local/bin/mailcow-ldap-auth checkpassword --config /etc/mailcow-ldap-auth/config.yml";

impl Auth {
    pub fn snippet(self) -> &'static str {
        match self {
            Auth::Checkpassword => SNIPPET,
            Auth::Lua | Auth::LuaUrl => LUA_SNIPPET,
            Auth::Mailcow => MAILCOW_PASSDB,
        }
    }

    /// The file name under conf.d, as the install notes name it.
    pub fn snippet_name(self) -> &'static str {
        match self {
            Auth::Checkpassword => "10-auth-mailcow-ldap.conf",
            Auth::Lua | Auth::LuaUrl => "10-auth-mailcow-ldap-lua.conf",
            Auth::Mailcow => "10-mailcow-passdb.conf",
        }
    }
}

pub struct Dovecot {
    pub dir: PathBuf,
    pub conf: PathBuf,
    /// The copy of the binary Dovecot runs.
    pub bin: PathBuf,
    pub auth: Auth,
    /// `<domain>.yml` config files.
    pub etc: PathBuf,
    /// The passwd-file of the passdb after the Lua snippet's (`Auth::Lua` only).
    pub passwd: PathBuf,
    /// Parent of every mail home (`<mail>/<domain>/<local part>`), owned by `mail`.
    pub mail: PathBuf,
    pub imap_port: u16,
    pub pop3_port: u16,
    pub sieve_port: u16,
    /// Postfix instance directory; Dovecot's SASL socket is `<postfix>/queue/private/auth`.
    pub postfix_dir: PathBuf,
    pub mail_uid: u32,
    pub mail_gid: u32,
    pub dovecot_gid: u32,
    child: Mutex<Child>,
    pub pgid: i32,
    pub startup: Duration,
}

pub fn dovecot() -> &'static Dovecot {
    static D: OnceLock<Dovecot> = OnceLock::new();
    D.get_or_init(|| Dovecot::start(crate::E2E_AUTH))
}

/// serve's token file made readable for Dovecot's auth processes (root:dovecot 0640, as the
/// snippets say); returns its path.
pub fn share_token_with_dovecot(serve: &crate::common::serve::Serve) -> PathBuf {
    let token = serve.dir.join("token");
    std::os::unix::fs::chown(&token, Some(0), Some(gid_of("dovecot"))).expect("chown token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::fs::set_permissions(&serve.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    token
}

/// The config of a `serve` that this binary's Dovecot asks (url mode): plain LDAP, log lines
/// on stderr, mail homes in a scratch directory `mail_dir` owned by `mail`.
pub fn serve_config_for_dovecot(env: &crate::common::TestEnv, mail_dir: &str) -> serde_json::Value {
    let mail = crate::common::process::scratch_subdir(mail_dir);
    std::os::unix::fs::chown(&mail, Some(uid_of("mail")), Some(gid_of("mail"))).expect("chown");
    let mut cfg = env.cfg.clone();
    cfg["ldap"].as_object_mut().expect("ldap").remove("ca_file");
    cfg["log"] = serde_json::json!({"syslog": false, "stderr": "all"});
    cfg["dovecot"]["userdb_fields"] = serde_json::json!({
        "uid": uid_of("mail").to_string(),
        "gid": gid_of("mail").to_string(),
        "home": format!("{}/{{domain}}/{{local_part}}", mail.display()),
    });
    cfg
}

/// uid of a user from /etc/passwd.
pub fn uid_of(user: &str) -> u32 {
    id_from("/etc/passwd", user, 2)
}

/// gid of a group from /etc/group.
pub fn gid_of(group: &str) -> u32 {
    id_from("/etc/group", group, 2)
}

/// Field `field` of the line for `name` in a passwd/group style file.
pub fn id_from(file: impl AsRef<Path>, name: &str, field: usize) -> u32 {
    let file = file.as_ref();
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(field).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| {
            panic!(
                "{name} not found in {} (are dovecot/postfix installed?)",
                file.display()
            )
        })
}

fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The shipped conf.d snippet with the installed paths replaced (see the module docs).
/// Panics when the snippet no longer has the blocks the tests (and the README) rely on.
pub fn generated_snippet(auth: Auth, dir: &Path) -> String {
    if auth == Auth::Mailcow {
        return mailcow_chain(dir);
    }
    let snippet = auth.snippet();
    let count = |needle: &str| snippet.matches(needle).count();
    match auth {
        Auth::Checkpassword => {
            assert_eq!(
                count(SNIPPET_ARGS),
                2,
                "the checkpassword snippet must contain `{SNIPPET_ARGS}` in the passdb and the userdb block"
            );
            for block in ["driver = checkpassword", "driver = prefetch"] {
                assert!(
                    snippet.lines().any(|l| l.trim() == block),
                    "the checkpassword snippet lacks an active `{block}`"
                );
            }
        }
        Auth::Mailcow => unreachable!("mailcow_chain"),
        Auth::Lua | Auth::LuaUrl => {
            // binary and config named once; the script by the passdb and the userdb
            assert_eq!(
                count(INSTALLED_BIN),
                1,
                "the Lua snippet must name the binary once"
            );
            assert_eq!(
                count(INSTALLED_CONFIG),
                1,
                "the Lua snippet must name the config once"
            );
            let args = format!("args = file={INSTALLED_SCRIPT} blocking=yes");
            assert_eq!(
                count(&args),
                2,
                "the Lua snippet must contain `{args}` twice"
            );
        }
    }
    let snippet = match auth {
        Auth::LuaUrl => url_mode(snippet),
        _ => snippet.to_owned(),
    };
    snippet
        .replace(
            INSTALLED_BIN,
            dir.join("bin/mailcow-ldap-auth")
                .to_str()
                .expect("utf-8 path"),
        )
        .replace(
            INSTALLED_CONFIG,
            dir.join("etc/%Ld.yml").to_str().expect("utf-8 path"),
        )
        .replace(
            INSTALLED_SCRIPT,
            dir.join("share/mailcow-ldap-auth.lua")
                .to_str()
                .expect("utf-8 path"),
        )
}

/// mailcow's passdb blocks with their paths in `dir`, mailcow's auth cache settings (the TTL
/// shortened so that an entry expires between two steps of a test), and a static userdb.
fn mailcow_chain(dir: &Path) -> String {
    assert_eq!(MAILCOW_PASSDB.matches(MAILCOW_SCRIPT).count(), 2);
    assert_eq!(MAILCOW_PASSDB.matches(MAILCOW_MASTER_PASSWD).count(), 1);
    let path = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_owned();
    format!(
        "{}
auth_cache_verify_password_with_worker = yes
auth_cache_negative_ttl = 60s
# mailcow: 300s
auth_cache_ttl = 1s
auth_cache_size = 10M
userdb {{
  driver = static
  args = uid=mail gid=mail home={}/%d/%n
}}
",
        MAILCOW_PASSDB
            .replace(MAILCOW_SCRIPT, &path("share/passwd-verify.lua"))
            .replace(MAILCOW_MASTER_PASSWD, &path("master.passwd")),
        path("mail"),
    )
}

/// contrib/mailcow/passwd-verify.lua with this test's serve, token, endpoint and script path.
fn mailcow_wrapper(dir: &Path) -> String {
    let (url, token) = URL_TRANSPORT
        .get()
        .expect("URL_TRANSPORT set before dovecot()");
    let php = MAILCOW_URL.get().expect("MAILCOW_URL set before dovecot()");
    let script = dir.join("share/mailcow-ldap-auth.lua");
    mailcow_wrapper_with(
        url,
        token.to_str().expect("utf-8 path"),
        php,
        script.to_str().expect("utf-8 path"),
        false,
    )
}

/// contrib/mailcow/passwd-verify.lua with serve at `serve_url`, its token in `token`, mailcow's
/// endpoint at `php_url` and the project's script at `script`; for Dovecot 2.4 (mailcow's
/// `feat/dovecot-2.4` images) switched as its comments say: `dovecot = "2.4"` and mailcow's
/// 2.4 cache key.
pub fn mailcow_wrapper_with(
    serve_url: &str,
    token: &str,
    php_url: &str,
    script: &str,
    dovecot_2_4: bool,
) -> String {
    for installed in [
        MAILCOW_SERVE_URL,
        INSTALLED_TOKEN,
        MAILCOW_PHP_URL,
        INSTALLED_SCRIPT,
        "dovecot = \"2.3\"",
        "  -- cache_key = ",
    ] {
        assert_eq!(MAILCOW_WRAPPER.matches(installed).count(), 1, "{installed}");
    }
    let wrapper = MAILCOW_WRAPPER
        .replace(MAILCOW_SERVE_URL, serve_url)
        .replace(INSTALLED_TOKEN, token)
        .replace(MAILCOW_PHP_URL, php_url)
        .replace(INSTALLED_SCRIPT, script);
    if !dovecot_2_4 {
        return wrapper;
    }
    wrapper
        .replace("dovecot = \"2.3\"", "dovecot = \"2.4\"")
        .replace("  -- cache_key = ", "  cache_key = ")
}

/// The Lua snippet switched to url mode as its comment says: the binary's
/// `import_environment` line commented out, the url line (naming this test's serve) in.
fn url_mode(snippet: &str) -> String {
    let (url, token) = URL_TRANSPORT
        .get()
        .expect("URL_TRANSPORT set before dovecot()");
    assert_eq!(
        snippet.matches(URL_LINE).count(),
        1,
        "the Lua snippet must have one `{URL_LINE}` line"
    );
    snippet
        .lines()
        .map(|line| {
            if line.starts_with("import_environment = ") {
                format!("#{line}")
            } else if let Some(rest) = line
                .strip_prefix('#')
                .filter(|_| line.starts_with(URL_LINE))
            {
                assert!(
                    rest.contains(INSTALLED_URL) && rest.contains(INSTALLED_TOKEN),
                    "{line}"
                );
                rest.replace(INSTALLED_URL, url)
                    .replace(INSTALLED_TOKEN, token.to_str().expect("utf-8 path"))
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Dovecot {
    fn start(auth: Auth) -> Dovecot {
        let t0 = Instant::now();
        // SAFETY: trivial libc call.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the Dovecot/Postfix end-to-end tests need root (Dovecot switches to the dovecot, \
             dovenull and mail users); run them as root, e.g. in CI or via scripts/test.sh"
        );
        let dir = scratch_subdir("dovecot");
        for sub in ["run", "state", "conf.d", "bin", "etc", "share"] {
            mkdir(&dir.join(sub), 0o755);
        }
        let mail_uid = uid_of("mail");
        let mail_gid = gid_of("mail");
        let dovecot_gid = gid_of("dovecot");
        let mail = dir.join("mail");
        mkdir(&mail, 0o755);
        std::os::unix::fs::chown(&mail, Some(mail_uid), Some(mail_gid)).expect("chown mail");

        // The binary under test, copied where the `dovecot` user can execute it.
        let bin = dir.join("bin/mailcow-ldap-auth");
        std::fs::copy(crate::common::cmd::BIN, &bin).expect("copy binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");

        // Postfix's queue directory: its `private` dir belongs to postfix (Postfix creates its
        // own sockets there as that user); Dovecot's master (root) puts the auth socket there.
        let postfix_dir = scratch_subdir("postfix");
        let private = postfix_dir.join("queue/private");
        mkdir(&postfix_dir.join("queue"), 0o755);
        mkdir(&private, 0o700);
        std::os::unix::fs::chown(&private, Some(uid_of("postfix")), None).expect("chown private");

        let etc = dir.join("etc");
        std::fs::write(
            dir.join("conf.d").join(auth.snippet_name()),
            generated_snippet(auth, &dir),
        )
        .expect("write snippet");
        let script = dir.join("share/mailcow-ldap-auth.lua");
        std::fs::write(&script, LUA_SCRIPT).expect("write Lua script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        if auth == Auth::Mailcow {
            std::fs::write(dir.join("share/passwd-verify.lua"), mailcow_wrapper(&dir))
                .expect("write passwd-verify.lua");
            std::fs::write(dir.join("master.passwd"), "").expect("write master passwd-file");
        }
        // after the snippet's passdb: mailboxes it answers NEXT for (authsource mailcow)
        let passwd = dir.join("passwd");
        std::fs::write(&passwd, "").expect("write passwd-file");
        let next_passdb = match auth {
            Auth::Checkpassword | Auth::Mailcow => String::new(),
            Auth::Lua | Auth::LuaUrl => format!(
                "passdb {{\n  driver = passwd-file\n  args = {}\n}}\n",
                passwd.display()
            ),
        };

        let conf = dir.join("dovecot.conf");
        let log_path = dir.join("dovecot.log");
        for attempt in 0..20 {
            let ports = [free_port(), free_port(), free_port()];
            let mut uniq = ports.to_vec();
            uniq.sort();
            uniq.dedup();
            if uniq.len() != ports.len() {
                continue;
            }
            let [imap_port, pop3_port, sieve_port] = ports;
            let greeting = format!("mla-e2e-{}", &random_hex()[..12]);
            let d = dir.display();
            std::fs::write(
                &conf,
                format!(
                    "# generated by tests/e2e/dovecot.rs
instance_name = mla-e2e-{pid}-{attempt}
base_dir = {d}/run
state_dir = {d}/state
protocols = imap pop3 sieve
listen = 127.0.0.1
log_path = {log}
info_log_path = {log}
auth_verbose = yes
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# tests: no 2 s delay per failed login (production keeps the default)
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
mail_location = maildir:~/Maildir
login_greeting = {greeting}
postmaster_address = postmaster@example.org
hostname = localhost

# passdb + userdb: the shipped snippet (paths replaced)
!include conf.d/{snippet_name}
{next_passdb}
# IMAP GETQUOTAROOT shows the quota the userdb sets
mail_plugins = $mail_plugins quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}

service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service managesieve-login {{
  inet_listener sieve {{
    port = {sieve_port}
  }}
}}
# Postfix SASL (contrib/postfix/main.cf.snippet: smtpd_sasl_path = private/auth)
service auth {{
  unix_listener {private}/auth {{
    mode = 0666
  }}
}}
# tests: no per-IP penalty after failed logins
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  quota = count:User quota
  quota_vsizes = yes
}}
",
                    pid = std::process::id(),
                    snippet_name = auth.snippet_name(),
                    log = log_path.display(),
                    private = private.display(),
                ),
            )
            .expect("write dovecot.conf");

            let mut cmd = Command::new("dovecot");
            cmd.arg("-c").arg(&conf).arg("-F");
            let ready = run_master(cmd, &dir, &log_path, imap_port, &greeting, attempt == 19);
            if let Some((child, pgid)) = ready {
                install_atexit();
                let d = Dovecot {
                    dir,
                    conf,
                    bin,
                    auth,
                    etc,
                    passwd: passwd.clone(),
                    mail,
                    imap_port,
                    pop3_port,
                    sieve_port,
                    postfix_dir,
                    mail_uid,
                    mail_gid,
                    dovecot_gid,
                    child: Mutex::new(child),
                    pgid,
                    startup: t0.elapsed(),
                };
                *DOVECOT_PGID.lock().unwrap_or_else(|e| e.into_inner()) = Some(pgid);
                eprintln!(
                    "e2e: dovecot pid {pgid} imap {imap_port} pop3 {pop3_port} sieve {sieve_port} \
                     ready in {:?}",
                    d.startup
                );
                return d;
            }
        }
        panic!("dovecot: could not get free ports");
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// The config file Dovecot's `%Ld.yml` resolves to for `domain`.
    pub fn config_path(&self, domain: &str) -> PathBuf {
        self.etc.join(format!("{}.yml", domain.to_lowercase()))
    }

    /// Writes a domain's config (YAML), root:dovecot 0640 like a production install.
    pub fn write_config(&self, domain: &str, cfg: &serde_json::Value) {
        let path = self.config_path(domain);
        let tmp = path.with_extension("yml.tmp");
        std::fs::write(&tmp, serde_norway::to_string(cfg).expect("config to YAML"))
            .expect("write config");
        std::os::unix::fs::chown(&tmp, Some(0), Some(self.dovecot_gid)).expect("chown config");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        // atomic: a login running right now sees the old or the new file, never half of one
        std::fs::rename(&tmp, &path).expect("rename config");
    }

    /// Adds a passwd-file entry (`{PLAIN}` password, userdb fields as `userdb_*`).
    pub fn add_passwd(&self, user: &str, password: &str, userdb_fields: &[(&str, String)]) {
        use std::io::Write;
        static LOCK: Mutex<()> = Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let extra = userdb_fields
            .iter()
            .map(|(k, v)| format!("userdb_{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.passwd)
            .expect("open passwd-file");
        writeln!(file, "{user}:{{PLAIN}}{password}::::::{extra}").expect("write passwd-file");
    }

    /// The whole Dovecot log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// Log lines mentioning `needle` (e.g. a user address), for assertions and failure messages.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        let needle = needle.to_lowercase();
        self.log()
            .lines()
            .filter(|l| l.to_lowercase().contains(&needle))
            .map(String::from)
            .collect()
    }

    /// `doveadm -c <conf> ARGS`.
    pub fn doveadm(&self, args: &[&str]) -> Output {
        Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run doveadm")
    }

    /// `dovecot-lda -c <conf> -d RCPT -f sender@example.net` with a message on stdin: local
    /// delivery as Postfix's `mailbox_command` or a pipe transport runs it (userdb lookup
    /// through the auth service, then it writes the mail as the user's uid).
    pub fn lda(&self, rcpt: &str, subject: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("/usr/lib/dovecot/dovecot-lda")
            .arg("-c")
            .arg(&self.conf)
            .args(["-d", rcpt, "-f", "sender@example.net"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dovecot-lda");
        let msg = format!(
            "From: sender@example.net\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\n\
             Delivered by the mailcow-ldap-auth end-to-end test.\r\n"
        );
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(msg.as_bytes())
            .expect("write message");
        child.wait_with_output().expect("wait dovecot-lda")
    }

    /// Asserts that `doveconf -n` holds `expected` in this order.
    #[track_caller]
    pub fn assert_doveconf_in_order(&self, expected: &[&str]) -> String {
        let conf = self.doveconf();
        let mut rest = conf.as_str();
        for e in expected {
            let i = rest
                .find(e)
                .unwrap_or_else(|| panic!("doveconf -n lacks {e:?} (in order):\n{conf}"));
            rest = &rest[i + e.len()..];
        }
        conf
    }

    /// Asserts that the conf.d file Dovecot reads is the shipped snippet with only the
    /// installed paths replaced, and the script it runs the shipped one.
    #[track_caller]
    pub fn assert_snippet_is_shipped(&self) {
        let generated =
            std::fs::read_to_string(self.dir.join("conf.d").join(self.auth.snippet_name()))
                .expect("read the generated snippet");
        let script = self.dir.join("share/mailcow-ldap-auth.lua");
        assert_eq!(
            generated
                .replace(self.bin.to_str().unwrap(), INSTALLED_BIN)
                .replace(self.etc.join("%Ld.yml").to_str().unwrap(), INSTALLED_CONFIG)
                .replace(script.to_str().unwrap(), INSTALLED_SCRIPT),
            self.auth.snippet()
        );
        assert_eq!(std::fs::read_to_string(script).unwrap(), LUA_SCRIPT);
    }

    /// `doveconf -c <conf> -n` (the effective non-default settings).
    pub fn doveconf(&self) -> String {
        let out = Command::new("doveconf")
            .arg("-c")
            .arg(&self.conf)
            .arg("-n")
            .output()
            .expect("run doveconf");
        assert!(
            out.status.success(),
            "doveconf failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Runs a Dovecot master (`cmd`, in the foreground) in its own process group, its output in
/// `<dir>/master.out`, and waits until the IMAP listener on `imap_port` greets with `greeting`:
/// the master and its pgid. None when a port was taken (the caller retries with others, unless
/// `last_try`, which panics instead). `log` is Dovecot's log file (shown when it fails).
pub fn run_master(
    mut cmd: Command,
    dir: &Path,
    log: &Path,
    imap_port: u16,
    greeting: &str,
    last_try: bool,
) -> Option<(Child, i32)> {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("master.out"))
        .expect("open master.out");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone"))
        .stderr(out)
        // own process group: stragglers are stopped with kill(-pgid)
        .process_group(0);
    let mut child = spawn_server(cmd).expect("spawn dovecot");
    let pgid = child.id() as i32;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait dovecot") {
            let text = read(log) + &read(&dir.join("master.out"));
            if !text.contains("Address already in use") || last_try {
                panic!("dovecot exited with {status}:\n{text}");
            }
            return None;
        }
        match imap_greeting(imap_port) {
            Some(g) if g.contains(greeting) => return Some((child, pgid)),
            Some(g) => {
                // another test process's server on "our" port: ours cannot bind.
                eprintln!("e2e: port {imap_port} answered {g:?}; retrying");
                kill_group(pgid);
                stop_server(&mut child);
                return None;
            }
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => panic!("dovecot not ready after 20 s:\n{}", read(log)),
        }
    }
}

/// The first line an IMAP server on `port` sends, if any within 2 s.
pub fn imap_greeting(port: u16) -> Option<String> {
    use std::io::{BufRead, BufReader};
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut l = String::new();
    BufReader::new(s).read_line(&mut l).ok()?;
    (!l.is_empty()).then_some(l)
}

static DOVECOT_PGID: Mutex<Option<i32>> = Mutex::new(None);

/// Set by the Postfix module once it started an instance (its config directory).
pub static POSTFIX_STARTED: Mutex<Option<PathBuf>> = Mutex::new(None);

fn install_atexit() {
    extern "C" fn on_exit() {
        // Postfix first: its smtpd processes keep Dovecot's auth process alive.
        if let Ok(mut g) = POSTFIX_STARTED.try_lock() {
            if let Some(dir) = g.take() {
                let _ = Command::new("postfix")
                    .arg("-c")
                    .arg(dir)
                    .arg("stop")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if let Ok(mut g) = DOVECOT_PGID.try_lock() {
            if let Some(pgid) = g.take() {
                kill_group(pgid);
            }
        }
    }
    // Registered after the shared harness's hook (scratch() ran before), so it runs first.
    let _ = scratch();
    // SAFETY: registering a plain extern "C" function.
    let rc = unsafe { libc::atexit(on_exit) };
    assert_eq!(rc, 0, "atexit failed");
}

/// `/proc/<pid>/stat` fields after "(comm) ": state, ppid, pgrp, ... (comm may contain spaces).
fn stat_fields(pid_dir: &Path) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(pid_dir.join("stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    Some(rest.split(' ').map(String::from).collect())
}

/// True while process `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    stat_fields(Path::new(&format!("/proc/{pid}"))).is_some_and(|f| f[0] != "Z")
}

/// True while a live (non-zombie) process is in process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    let pgid = pgid.to_string();
    rd.flatten()
        .filter_map(|e| stat_fields(&e.path()))
        .any(|f| f.len() > 2 && f[0] != "Z" && f[2] == pgid)
}

fn wait_while(cond: impl Fn() -> bool, limit: Duration) {
    let deadline = Instant::now() + limit;
    while cond() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to the master (it stops its children), then to the whole group; SIGKILL what is
/// left after 5 s. Does not reap the master (the shared harness's atexit hook does).
pub fn kill_group(pgid: i32) {
    // SAFETY: signals to the process group we created for the server.
    unsafe { libc::kill(pgid, libc::SIGTERM) };
    wait_while(|| pid_alive(pgid), Duration::from_millis(1500));
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    wait_while(|| group_alive(pgid), Duration::from_millis(3500));
    if group_alive(pgid) {
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

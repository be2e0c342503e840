//! Runs the REAL binary the way Dovecot does: `user\0password\0\0` on fd 3, an optional pipe on
//! fd 4 (for /usr/lib/dovecot/checkpassword-reply), a cleaned environment, and a reply program
//! (`/usr/bin/env` by default, so stdout shows the exported environment).

use super::process::scratch;
use command_fds::{CommandFdExt, FdMapping};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_mailcow-ldap-auth");
pub const ENV_REPLY: &str = "/usr/bin/env";
pub const CHECKPASSWORD_REPLY: &str = "/usr/lib/dovecot/checkpassword-reply";

/// Where the `--config PATH` option goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigAt {
    /// `BIN --config PATH checkpassword REPLY`
    BeforeSubcommand,
    /// `BIN checkpassword --config PATH REPLY` (what a Dovecot `args =` line produces)
    AfterSubcommand,
    /// `MAILCOW_LDAP_AUTH_CONFIG=PATH BIN checkpassword REPLY`
    Env,
}

/// A pipe whose buffer is already full: writes to the write end block.
fn full_pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = pipe();
    let fd = w.as_raw_fd();
    // SAFETY: fcntl/write on a pipe fd we own; O_NONBLOCK is set only while filling and
    // cleared before the child inherits the (shared) file description.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        // Writes up to PIPE_BUF are all-or-nothing: finish with single bytes.
        let chunk = [b'x'; 4096];
        while libc::write(fd, chunk.as_ptr().cast(), chunk.len()) > 0 {}
        while libc::write(fd, chunk.as_ptr().cast(), 1) > 0 {}
        libc::fcntl(fd, libc::F_SETFL, flags);
    }
    (r, w)
}

pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array; pipe2 returns two fresh fds we then own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[derive(Clone, Debug)]
enum ConfigSrc {
    /// Written to a fresh 0600 file.
    Yaml(String),
    /// Passed as is (e.g. a missing file).
    Path(std::path::PathBuf),
    /// No `--config` at all.
    None,
}

#[derive(Clone, Debug)]
pub struct Run {
    /// The program run: the binary under test unless `.binary()` says otherwise.
    binary: std::path::PathBuf,
    config: ConfigSrc,
    config_at: ConfigAt,
    subcommand: Vec<OsString>,
    reply: Vec<OsString>,
    env: BTreeMap<String, String>,
    fd3: Option<Vec<u8>>,
    /// fd 3 is a pipe whose write end stays open, unwritten, until the child is gone.
    fd3_never_closed: bool,
    fd4: bool,
    stdin: Option<Vec<u8>>,
    /// The child's stderr is a pipe that is full and never read (a stalled log reader).
    stderr_full: bool,
    timeout: Duration,
}

impl Run {
    /// `checkpassword /usr/bin/env` with the given config, SERVICE=imap, TCPREMOTEIP, ORIG_UID,
    /// PROTO=TCP (as Dovecot sets them), and nothing on fd 3 until `.login()`/`.lookup()`/`.input()`.
    pub fn checkpassword(config: &serde_json::Value) -> Run {
        let mut env = BTreeMap::new();
        env.insert("SERVICE".into(), "imap".into());
        env.insert("TCPREMOTEIP".into(), "192.0.2.10".into());
        env.insert("PROTO".into(), "TCP".into());
        // SAFETY: trivial libc call.
        env.insert("ORIG_UID".into(), unsafe { libc::getuid() }.to_string());
        Run {
            binary: BIN.into(),
            config: ConfigSrc::Yaml(serde_norway::to_string(config).expect("config to YAML")),
            config_at: ConfigAt::BeforeSubcommand,
            subcommand: vec!["checkpassword".into()],
            reply: vec![ENV_REPLY.into()],
            env,
            fd3: None,
            fd3_never_closed: false,
            fd4: false,
            stdin: None,
            stderr_full: false,
            timeout: Duration::from_secs(60),
        }
    }

    /// Any subcommand (`login`, `test-connection`, ...), no fd 3, empty environment.
    pub fn subcommand(config: &serde_json::Value, args: &[&str]) -> Run {
        Run {
            binary: BIN.into(),
            config: ConfigSrc::Yaml(serde_norway::to_string(config).expect("config to YAML")),
            config_at: ConfigAt::BeforeSubcommand,
            subcommand: args.iter().map(OsString::from).collect(),
            reply: Vec::new(),
            env: BTreeMap::new(),
            fd3: None,
            fd3_never_closed: false,
            fd4: false,
            stdin: None,
            stderr_full: false,
            timeout: Duration::from_secs(60),
        }
    }

    /// One more argument after the subcommand's.
    pub fn arg(mut self, arg: &str) -> Self {
        self.subcommand.push(arg.into());
        self
    }

    /// Run this program instead of the binary under test (e.g. the one a package installed).
    pub fn binary(mut self, path: &str) -> Self {
        self.binary = path.into();
        self
    }

    /// Replace the config with raw YAML text (for broken configs).
    pub fn config_yaml(mut self, yaml: &str) -> Self {
        self.config = ConfigSrc::Yaml(yaml.into());
        self
    }
    pub fn config(mut self, cfg: &serde_json::Value) -> Self {
        self.config = ConfigSrc::Yaml(serde_norway::to_string(cfg).expect("config to YAML"));
        self
    }
    /// Use this path as the config file (nothing is written).
    pub fn config_file(mut self, path: &str) -> Self {
        self.config = ConfigSrc::Path(path.into());
        self
    }
    /// No `--config` option and no MAILCOW_LDAP_AUTH_CONFIG (the built-in default path).
    pub fn no_config(mut self) -> Self {
        self.config = ConfigSrc::None;
        self
    }
    pub fn config_at(mut self, at: ConfigAt) -> Self {
        self.config_at = at;
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }
    pub fn env_remove(mut self, k: &str) -> Self {
        self.env.remove(k);
        self
    }
    pub fn service(self, s: &str) -> Self {
        self.env("SERVICE", s)
    }
    /// Auth mode: `user\0pass\0\0` on fd 3.
    pub fn login(mut self, user: &str, pass: &str) -> Self {
        let mut b = Vec::new();
        b.extend_from_slice(user.as_bytes());
        b.push(0);
        b.extend_from_slice(pass.as_bytes());
        b.extend_from_slice(b"\0\0");
        self.fd3 = Some(b);
        self
    }
    /// Lookup mode: AUTHORIZED=1 and `user\0\0\0` on fd 3.
    pub fn lookup(mut self, user: &str) -> Self {
        let mut b = user.as_bytes().to_vec();
        b.extend_from_slice(b"\0\0\0");
        self.fd3 = Some(b);
        self.env("AUTHORIZED", "1")
    }
    /// Raw bytes on fd 3.
    pub fn input(mut self, bytes: &[u8]) -> Self {
        self.fd3 = Some(bytes.to_vec());
        self
    }
    /// A writer that never writes to fd 3 nor closes it.
    pub fn fd3_never_closed(mut self) -> Self {
        self.fd3_never_closed = true;
        self
    }
    /// Do not open fd 3 at all.
    pub fn no_fd3(mut self) -> Self {
        self.fd3 = None;
        self
    }
    /// Reply program and its arguments.
    pub fn reply(mut self, program: &str, args: &[&str]) -> Self {
        self.reply = std::iter::once(program)
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        self
    }
    /// Pass a pipe as fd 4 and capture what is written to it (`Outcome::fd4`).
    pub fn fd4(mut self) -> Self {
        self.fd4 = true;
        self
    }
    pub fn stdin(mut self, data: &[u8]) -> Self {
        self.stdin = Some(data.to_vec());
        self
    }

    /// Runs the binary (killing it after a generous safety timeout) and collects the outcome.
    /// Hands the child a stderr pipe that is already full and never read: every write to
    /// stderr blocks (Dovecot not draining the pipe). The outcome's stderr is then empty.
    pub fn stderr_full(mut self) -> Self {
        self.stderr_full = true;
        self
    }

    /// Overrides the safety timeout (60 s) after which `wait` kills the binary and panics.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn run(self) -> Outcome {
        self.spawn().wait()
    }

    /// Starts the binary; [`Running::wait`] collects the outcome.
    pub fn spawn(self) -> Running {
        let dir = tempfile::Builder::new()
            .prefix("run.")
            .tempdir_in(scratch())
            .expect("run temp dir");
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear();
        let path = match &self.config {
            ConfigSrc::Yaml(cfg) => {
                let path = dir.path().join("config.yml");
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut f| f.write_all(cfg.as_bytes()))
                    .expect("write config");
                Some(path)
            }
            ConfigSrc::Path(p) => Some(p.clone()),
            ConfigSrc::None => None,
        };
        if let Some(path) = path {
            match self.config_at {
                ConfigAt::BeforeSubcommand => {
                    cmd.arg("--config").arg(&path).args(&self.subcommand);
                }
                ConfigAt::AfterSubcommand => {
                    cmd.args(&self.subcommand).arg("--config").arg(&path);
                }
                ConfigAt::Env => {
                    cmd.args(&self.subcommand)
                        .env("MAILCOW_LDAP_AUTH_CONFIG", &path);
                }
            }
        } else {
            cmd.args(&self.subcommand);
        }
        cmd.args(&self.reply);
        cmd.envs(&self.env);
        let mut maps = Vec::new();
        if let Some(bytes) = &self.fd3 {
            let (r, w) = pipe();
            let mut w = std::fs::File::from(w);
            w.write_all(bytes).expect("write fd 3 input");
            drop(w);
            maps.push(FdMapping {
                parent_fd: r,
                child_fd: 3,
            });
        }
        // Pipe ends kept open (never read or written) until the child is gone.
        let mut held_open = Vec::new();
        if self.fd3_never_closed {
            let (r, w) = pipe();
            maps.push(FdMapping {
                parent_fd: r,
                child_fd: 3,
            });
            held_open.push(w);
        }
        let fd4_reader = if self.fd4 {
            let (r, w) = pipe();
            maps.push(FdMapping {
                parent_fd: w,
                child_fd: 4,
            });
            Some(std::fs::File::from(r))
        } else {
            None
        };
        cmd.fd_mappings(maps).expect("fd mappings");
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped());
        if self.stderr_full {
            let (r, w) = full_pipe();
            cmd.stderr(Stdio::from(w));
            // the child's writes block instead of failing
            held_open.push(r);
        } else {
            cmd.stderr(Stdio::piped());
        }
        let argv = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        drop(cmd); // closes our copies of the fds handed to the child
        let pid = child.id() as libc::pid_t;
        let stdin = child.stdin.take();
        let data = self.stdin.clone();
        let writer = std::thread::spawn(move || {
            if let (Some(mut s), Some(d)) = (stdin, data) {
                let _ = s.write_all(&d);
            }
        });
        let reader = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut v);
                }
                v
            })
        };
        let out_t = reader(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err_t = reader(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let fd4_t = reader(fd4_reader.map(|f| Box::new(f) as Box<dyn Read + Send>));
        let (tx, exit) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        Running {
            pid,
            argv,
            input_env: self.env,
            fd4: self.fd4,
            timeout: self.timeout,
            exit,
            writer,
            out_t,
            err_t,
            fd4_t,
            _held_open: held_open,
            _dir: dir,
        }
    }
}

/// A started run of the binary.
pub struct Running {
    pid: libc::pid_t,
    argv: String,
    input_env: BTreeMap<String, String>,
    fd4: bool,
    timeout: Duration,
    exit: std::sync::mpsc::Receiver<std::io::Result<std::process::ExitStatus>>,
    writer: JoinHandle<()>,
    out_t: JoinHandle<Vec<u8>>,
    err_t: JoinHandle<Vec<u8>>,
    fd4_t: JoinHandle<Vec<u8>>,
    /// Pipe ends held open until the child is gone (`Run::stderr_full`, `Run::fd3_never_closed`).
    _held_open: Vec<OwnedFd>,
    /// Holds the config file.
    _dir: tempfile::TempDir,
}

impl Running {
    /// Sends `signal` to the binary (not reaped before `wait`, so the pid is still its own).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own unreaped child.
        assert_eq!(
            unsafe { libc::kill(self.pid, signal) },
            0,
            "kill {}",
            self.pid
        );
    }

    /// Waits for the binary (killing it after the safety timeout) and collects the outcome.
    pub fn wait(self) -> Outcome {
        let Running {
            pid,
            argv,
            input_env,
            fd4,
            timeout,
            exit,
            writer,
            out_t,
            err_t,
            fd4_t,
            ..
        } = self;
        let status = match exit.recv_timeout(timeout) {
            Ok(s) => s.expect("wait"),
            Err(_) => {
                // SAFETY: our own child, not reaped yet (the waiter thread is still blocked).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let s = exit.recv().expect("waiter").expect("wait");
                let err = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
                panic!("{argv} did not finish within {timeout:?} ({s});\nstderr:\n{err}");
            }
        };
        let _ = writer.join();
        let stdout = String::from_utf8_lossy(&out_t.join().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
        let fd4 = fd4.then(|| String::from_utf8_lossy(&fd4_t.join().unwrap()).into_owned());
        let env = stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let outcome = Outcome {
            argv,
            input_env,
            code: status.code(),
            signal: status.signal(),
            stdout,
            stderr,
            env,
            fd4,
        };
        // MLA_TEST_SHOW=1 cargo test -- --nocapture: print every run (debugging aid)
        if std::env::var_os("MLA_TEST_SHOW").is_some() {
            eprintln!("{outcome}");
        }
        outcome
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub argv: String,
    /// The environment the binary was started with.
    pub input_env: BTreeMap<String, String>,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// stdout parsed as `KEY=VALUE` lines (the reply program `/usr/bin/env` prints these).
    pub env: BTreeMap<String, String>,
    /// What was written to fd 4 (only with `.fd4()`).
    pub fd4: Option<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n  exit code: {:?} signal: {:?}\n  --- stdout:\n{}\n  --- stderr:\n{}\n  --- fd 4: {:?}",
            self.argv, self.code, self.signal, self.stdout, self.stderr, self.fd4
        )
    }
}

impl Outcome {
    #[track_caller]
    pub fn assert_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(expected),
            "expected exit code {expected}, got:\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr does not contain {needle:?}:\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_lacks(&self, needle: &str) -> &Self {
        assert!(
            !self.stderr.contains(needle),
            "stderr unexpectedly contains {needle:?}:\n{self}"
        );
        self
    }

    /// Asserts that `secret` appears nowhere in stdout, stderr, or fd 4.
    #[track_caller]
    pub fn assert_never_printed(&self, secret: &str) -> &Self {
        assert!(
            !self.stdout.contains(secret)
                && !self.stderr.contains(secret)
                && !self.fd4.as_deref().unwrap_or("").contains(secret),
            "secret {secret:?} leaked into the output:\n{self}"
        );
        self
    }

    /// The one `mailcow-ldap-auth: login ...` / `lookup ...` log line, if any.
    pub fn log_line(&self) -> Option<&str> {
        self.stderr.lines().find(|l| {
            l.starts_with("mailcow-ldap-auth: login ")
                || l.starts_with("mailcow-ldap-auth: lookup ")
        })
    }

    /// Variables the binary added to (or changed in) its environment before exec'ing the reply
    /// program: every entry of `env` that differs from `input_env`.
    pub fn exported(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .filter(|(k, v)| self.input_env.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The `userdb_*` variables exported.
    pub fn userdb(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .filter(|(k, _)| k.starts_with("userdb_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `EXTRA` split on spaces.
    pub fn extra(&self) -> BTreeSet<String> {
        self.env
            .get("EXTRA")
            .map(|e| {
                e.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// fd 4 content parsed as checkpassword-reply writes it: TAB-separated `key=value`.
    pub fn fd4_fields(&self) -> BTreeMap<String, String> {
        self.fd4
            .as_deref()
            .unwrap_or("")
            .split('\t')
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

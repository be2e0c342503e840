//! The real `serve` process on a random loopback port, and a minimal HTTP/1.1 client for it
//! (one request per connection, `Connection: close`).

use super::cmd::BIN;
use super::process::{free_port, random_hex, scratch, spawn_server, stop_server};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Serve {
    pub addr: String,
    pub token: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub child: Child,
}

/// A file of mode 0600 holding `text`.
pub fn private_file(path: &std::path::Path, text: &str) {
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// An HTTP answer: status and body (JSON parsed when it is JSON, else a string).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Serve {
    /// `cfg` with a `serve:` section (listen on a free port, a fresh token file) added unless
    /// it has one; waits until `/health` answers.
    pub fn start(cfg: &Value) -> Serve {
        let dir = tempfile::Builder::new()
            .prefix("serve.")
            .tempdir_in(scratch())
            .expect("serve dir")
            .keep();
        let token = random_hex();
        private_file(&dir.join("token"), &format!("{token}\n"));
        let mut cfg = cfg.clone();
        let port = free_port();
        let serve = cfg
            .as_object_mut()
            .unwrap()
            .entry("serve")
            .or_insert_with(|| json!({}));
        if serve.get("listen").is_none() {
            serve["listen"] = json!(format!("127.0.0.1:{port}"));
        }
        if serve.get("token_file").is_none() {
            serve["token_file"] = json!(dir.join("token"));
        }
        let addr = serve["listen"].as_str().unwrap().to_owned();
        let config_path = dir.join("config.yml");
        private_file(&config_path, &serde_norway::to_string(&cfg).unwrap());
        let child = Self::spawn(&config_path, &dir);
        let mut serve = Serve {
            addr,
            token,
            dir,
            config_path,
            child,
        };
        serve.wait_ready();
        serve
    }

    fn spawn(config_path: &std::path::Path, dir: &std::path::Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .expect("serve.log");
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .arg("--config")
            .arg(config_path)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        spawn_server(cmd).expect("spawn serve")
    }

    /// Starts the process again on the same configuration (after [`Serve::kill`]).
    pub fn restart(&mut self) {
        self.child = Self::spawn(&self.config_path, &self.dir);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited with {status}:\n{}", self.log());
            }
            if self.try_request("GET", "/health", None, &[]).is_ok() {
                return;
            }
            assert!(Instant::now() < until, "serve not ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// Waits (up to 20 s) until the log holds `needle`.
    #[track_caller]
    pub fn wait_for_log(&self, needle: &str) {
        let until = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(needle) {
            assert!(Instant::now() < until, "no {needle:?} in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGHUP, then waits (up to 20 s) until serve logged that it reloaded.
    #[track_caller]
    pub fn reload(&self) {
        let reloads = |log: String| log.matches("serve: configuration reloaded").count();
        let before = reloads(self.log());
        self.signal(libc::SIGHUP);
        let until = Instant::now() + Duration::from_secs(20);
        while reloads(self.log()) == before {
            assert!(Instant::now() < until, "no reload:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A plain TCP connection to serve (for clients that misbehave).
    pub fn raw_client(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// SIGKILL, as a crash would end it.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// `POST /auth` with this instance's token.
    pub fn auth(&self, user: &str, password: &str, service: &str) -> Reply {
        let body = json!({"username": user, "password": password, "service": service,
                          "real_rip": "192.0.2.10"});
        self.request(
            "POST",
            "/auth",
            Some(&self.token),
            body.to_string().as_bytes(),
        )
    }

    /// `GET path` with this instance's token.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, Some(&self.token), b"")
    }

    pub fn request(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Reply {
        self.try_request(method, path, token, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> std::io::Result<Reply> {
        let mut stream: Box<dyn ReadWrite> = if self.addr.starts_with('/') {
            let stream = std::os::unix::net::UnixStream::connect(&self.addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            Box::new(stream)
        } else {
            let stream = TcpStream::connect(&self.addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            Box::new(stream)
        };
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| std::io::Error::other(format!("no HTTP answer: {text:?}")))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status: {head:?}")))?;
        let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()));
        Ok(Reply { status, body })
    }
}

/// A 200 answer whose `result` is `want`.
#[track_caller]
pub fn assert_result(reply: &Reply, want: &str) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["result"], want, "{reply:?}");
}

/// A TCP or Unix stream.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            stop_server(&mut self.child);
        }
    }
}

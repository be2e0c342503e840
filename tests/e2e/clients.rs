//! Minimal real-protocol clients over TCP (IMAP, POP3, ManageSieve, SMTP): just enough to
//! log in and return the server's answer line, so tests assert on exactly what a
//! mail client sees.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One line-oriented TCP session; every line read is kept for failure messages.
pub struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    pub transcript: Vec<String>,
}

impl Session {
    pub fn connect(port: u16) -> Session {
        let s = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
        // Generous: a checkpassword login normally answers in milliseconds (failures ~0.5 s).
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("set_read_timeout");
        s.set_nodelay(true).expect("nodelay");
        let writer = s.try_clone().expect("clone stream");
        Session {
            reader: BufReader::new(s),
            writer,
            transcript: Vec::new(),
        }
    }

    /// Next line without CRLF; panics on EOF or timeout (with the transcript so far).
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => panic!(
                "connection closed; transcript:\n{}",
                self.transcript.join("\n")
            ),
            Ok(_) => {}
            Err(e) => panic!("read: {e}; transcript:\n{}", self.transcript.join("\n")),
        }
        let l = l.trim_end_matches(['\r', '\n']).to_string();
        self.transcript.push(format!("S: {l}"));
        l
    }

    /// Reads lines until one satisfies `last`; returns that line.
    pub fn until(&mut self, last: impl Fn(&str) -> bool) -> String {
        loop {
            let l = self.line();
            if last(&l) {
                return l;
            }
        }
    }

    /// Sends one line (CRLF added). `shown` replaces the line in the transcript (secrets).
    pub fn send(&mut self, line: &str, shown: Option<&str>) {
        self.transcript
            .push(format!("C: {}", shown.unwrap_or(line)));
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("write");
    }

    /// Reads an SMTP reply (continuation lines `250-...`), returns the last line.
    pub fn smtp_reply(&mut self) -> String {
        self.until(|l| l.len() < 4 || l.as_bytes()[3] != b'-')
    }
}

pub fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// SASL PLAIN initial response: base64("\0user\0password").
pub fn sasl_plain(user: &str, pass: &str) -> String {
    base64(format!("\0{user}\0{pass}").as_bytes())
}

fn imap_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// What an IMAP client saw.
#[derive(Debug)]
pub struct ImapLogin {
    /// The tagged LOGIN response without the tag, e.g. `OK [CAPABILITY ...] Logged in` or
    /// `NO [AUTHENTICATIONFAILED] Authentication failed.`
    pub login: String,
    /// When the login was OK: the tagged `SELECT INBOX` response (proves the mail process
    /// runs with the userdb's uid/gid/home).
    pub select: Option<String>,
    pub transcript: Vec<String>,
}

impl ImapLogin {
    pub fn ok(&self) -> bool {
        self.login.starts_with("OK ")
    }
}

/// Connects and sends `a1 LOGIN user pass`; returns the session and the tagged answer
/// without the tag.
fn imap_session(port: u16, user: &str, pass: &str) -> (Session, String) {
    let mut s = Session::connect(port);
    let greeting = s.line();
    assert!(greeting.starts_with("* OK"), "IMAP greeting: {greeting}");
    s.send(
        &format!("a1 LOGIN {} {}", imap_quote(user), imap_quote(pass)),
        Some(&format!("a1 LOGIN {} ***", imap_quote(user))),
    );
    let login = s.until(|l| l.starts_with("a1 "))[3..].to_string();
    (s, login)
}

/// IMAP `LOGIN user pass`, then `SELECT INBOX` and `LOGOUT` when it succeeded.
pub fn imap_login(port: u16, user: &str, pass: &str) -> ImapLogin {
    let (mut s, login) = imap_session(port, user, pass);
    let mut select = None;
    if login.starts_with("OK ") {
        s.send("a2 SELECT INBOX", None);
        select = Some(s.until(|l| l.starts_with("a2 "))[3..].to_string());
        s.send("a3 LOGOUT", None);
        s.until(|l| l.starts_with("a3 "));
    }
    ImapLogin {
        login,
        select,
        transcript: s.transcript,
    }
}

/// IMAP `LOGIN`, then `command` (tag a2); returns the lines it answered, tagged line last.
/// Panics when the login fails.
pub fn imap_command(port: u16, user: &str, pass: &str, command: &str) -> Vec<String> {
    let (mut s, login) = imap_session(port, user, pass);
    assert!(login.starts_with("OK "), "{}", s.transcript.join("\n"));
    let start = s.transcript.len();
    s.send(&format!("a2 {command}"), None);
    s.until(|l| l.starts_with("a2 "));
    let lines = s.transcript[start..].to_vec();
    s.send("a3 LOGOUT", None);
    s.until(|l| l.starts_with("a3 "));
    lines
}

/// POP3 `USER`/`PASS`; returns the answer to PASS (`+OK Logged in.` / `-ERR [AUTH] ...`).
/// After a successful login it also runs `STAT` (must be `+OK`) and `QUIT`.
pub fn pop3_login(port: u16, user: &str, pass: &str) -> String {
    let mut s = Session::connect(port);
    let greeting = s.line();
    assert!(greeting.starts_with("+OK"), "POP3 greeting: {greeting}");
    s.send(&format!("USER {user}"), None);
    let r = s.line();
    assert!(r.starts_with("+OK"), "POP3 USER: {r}");
    s.send(&format!("PASS {pass}"), Some("PASS ***"));
    let r = s.line();
    if r.starts_with("+OK") {
        s.send("STAT", None);
        let stat = s.line();
        assert!(
            stat.starts_with("+OK"),
            "POP3 STAT after login: {stat}\n{}",
            s.transcript.join("\n")
        );
        s.send("QUIT", None);
        let _ = s.line();
    }
    r
}

/// ManageSieve `AUTHENTICATE "PLAIN"`; returns the answer (`OK "Logged in."`, `NO "..."`,
/// `NO (TRYLATER) "..."`).
pub fn sieve_login(port: u16, user: &str, pass: &str) -> String {
    let mut s = Session::connect(port);
    // capability lines, then OK "..."
    s.until(|l| l.starts_with("OK"));
    s.send(
        &format!("AUTHENTICATE \"PLAIN\" \"{}\"", sasl_plain(user, pass)),
        Some("AUTHENTICATE \"PLAIN\" ***"),
    );
    let r = s.until(|l| l.starts_with("OK") || l.starts_with("NO") || l.starts_with("BYE"));
    if r.starts_with("OK") {
        s.send("LISTSCRIPTS", None);
        let l = s.until(|l| l.starts_with("OK") || l.starts_with("NO") || l.starts_with("BYE"));
        assert!(
            l.starts_with("OK"),
            "LISTSCRIPTS after login: {l}\n{}",
            s.transcript.join("\n")
        );
        s.send("LOGOUT", None);
    }
    r
}

/// SMTP `EHLO` + `AUTH PLAIN`; returns the AUTH reply line (`235 ...` / `535 ...`).
pub fn smtp_auth(port: u16, user: &str, pass: &str) -> String {
    let mut s = Session::connect(port);
    let greeting = s.smtp_reply();
    assert!(greeting.starts_with("220"), "SMTP greeting: {greeting}");
    s.send("EHLO client.example.net", None);
    let ehlo = s.smtp_reply();
    assert!(ehlo.starts_with("250"), "EHLO: {ehlo}");
    assert!(
        s.transcript
            .iter()
            .any(|l| l.contains("AUTH") && l.contains("PLAIN")),
        "EHLO does not offer AUTH PLAIN:\n{}",
        s.transcript.join("\n")
    );
    s.send(
        &format!("AUTH PLAIN {}", sasl_plain(user, pass)),
        Some("AUTH PLAIN ***"),
    );
    let r = s.smtp_reply();
    s.send("QUIT", None);
    r
}

#[test]
fn sasl_plain_is_base64_of_nul_user_nul_password() {
    assert_eq!(sasl_plain("u", "p"), "AHUAcA==");
}

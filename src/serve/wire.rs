//! HTTP/1.1 on plain sockets (TCP or Unix): one thread per client connection, requests parsed
//! by `httparse` (hyper's parser), every read and write bounded by `serve.client_timeout_ms`
//! — the whole request head and body together, not each read, so that a client trickling
//! bytes is dropped as surely as a silent one. Keep-alive is supported; chunked bodies are not
//! (the Lua clients send `Content-Length`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// A request head larger than this is refused (431).
const MAX_HEAD: usize = 8 * 1024;
/// Headers per request.
const MAX_HEADERS: usize = 32;

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A client connection, with the timeout last set on its socket: most reads and writes want
/// the same one again, and setting it costs two syscalls.
pub struct Stream {
    socket: Socket,
    timeout: Option<Duration>,
}

enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                // Answers are one small write: no Nagle delay.
                let _ = s.set_nodelay(true);
                Socket::Tcp(s)
            }),
            Listener::Unix(l) => l.accept().map(|(s, _)| Socket::Unix(s)),
        }
        .map(|socket| Stream {
            socket,
            timeout: None,
        })
    }

    /// Wakes a thread blocked in [`Listener::accept`] (it then fails) so that it can stop.
    pub fn shut(&self) {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        };
        // SAFETY: shutdown on a socket we own; accept() then returns EINVAL.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

impl Stream {
    fn set_timeouts(&mut self, timeout: Duration) -> io::Result<()> {
        if self.timeout == Some(timeout) {
            return Ok(());
        }
        // Unknown until both are set.
        self.timeout = None;
        match &self.socket {
            Socket::Tcp(s) => s
                .set_read_timeout(Some(timeout))
                .and(s.set_write_timeout(Some(timeout))),
            Socket::Unix(s) => s
                .set_read_timeout(Some(timeout))
                .and(s.set_write_timeout(Some(timeout))),
        }?;
        self.timeout = Some(timeout);
        Ok(())
    }

    pub fn peer(&self) -> String {
        match &self.socket {
            Socket::Tcp(s) => s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|_| "-".into()),
            Socket::Unix(_) => "local".into(),
        }
    }

    fn close(&self) {
        let _ = match &self.socket {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.socket {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.socket {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.socket {
            Socket::Tcp(s) => s.flush(),
            Socket::Unix(s) => s.flush(),
        }
    }
}

/// One parsed request. The body may hold a password: it is wiped when dropped.
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    pub query: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<Zeroizing<String>>,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
    pub body: Zeroizing<Vec<u8>>,
    pub peer: String,
}

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Why a request could not be read: answered with `status` (if the client still listens),
/// then the connection is closed. `reason` is logged; it never holds request bytes.
pub struct Malformed {
    pub status: u16,
    pub reason: String,
}

enum Next {
    Request(Request, bool),
    /// The client closed the connection or stayed silent between requests.
    Gone,
    Malformed(Malformed),
}

/// Serves the requests of one connection with `handle` until the client closes it, stays silent
/// for `timeout`, asks to close, or `stopping` says so. `malformed` sees the requests that
/// could not be read.
pub fn serve_connection(
    mut stream: Stream,
    timeout: Duration,
    max_body: usize,
    handle: &dyn Fn(Request) -> Response,
    malformed: &dyn Fn(&Malformed, &str),
    stopping: &dyn Fn() -> bool,
) {
    let peer = stream.peer();
    loop {
        match read_request(&mut stream, timeout, max_body, &peer) {
            Next::Request(request, keep_alive) => {
                let response = handle(request);
                let keep_alive = keep_alive && !stopping();
                if write_response(&mut stream, &response, keep_alive, timeout).is_err()
                    || !keep_alive
                {
                    break;
                }
            }
            Next::Gone => break,
            Next::Malformed(bad) => {
                malformed(&bad, &peer);
                let response = Response {
                    status: bad.status,
                    content_type: "application/json",
                    body: serde_json::json!({"error": bad.reason}).to_string(),
                };
                let _ = write_response(&mut stream, &response, false, timeout);
                break;
            }
        }
    }
    stream.close();
}

fn malformed(status: u16, reason: impl Into<String>) -> Next {
    Next::Malformed(Malformed {
        status,
        reason: reason.into(),
    })
}

fn read_request(stream: &mut Stream, timeout: Duration, max_body: usize, peer: &str) -> Next {
    let mut buf = Zeroizing::new(Vec::with_capacity(1024));
    let mut chunk = [0u8; 2048];
    // Set once the first byte arrived: from then on the whole request must come in `timeout`.
    let mut started: Option<Instant> = None;
    let head_len = loop {
        let left = match started {
            None => timeout,
            Some(t) => match timeout.checked_sub(t.elapsed()) {
                Some(left) if !left.is_zero() => left,
                _ => return malformed(408, "request not complete within the client timeout"),
            },
        };
        if stream.set_timeouts(left).is_err() {
            return Next::Gone;
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                return match started {
                    None => Next::Gone,
                    Some(_) => malformed(400, "connection closed inside the request head"),
                };
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) if started.is_none() => return Next::Gone,
            Err(_) => return malformed(408, "request not complete within the client timeout"),
        };
        started.get_or_insert_with(Instant::now);
        buf.extend_from_slice(&chunk[..n]);
        chunk.iter_mut().for_each(|b| *b = 0);
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return malformed(431, format!("request head larger than {MAX_HEAD} bytes"));
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) | Err(_) => return malformed(400, "malformed request head"),
    }
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut keep_alive = parsed.version == Some(1);
    let mut length = 0usize;
    let mut authorization = None;
    let mut accept = None;
    let mut expect_continue = false;
    for header in parsed.headers.iter() {
        let value = || String::from_utf8_lossy(header.value).trim().to_owned();
        if header.name.eq_ignore_ascii_case("content-length") {
            match value().parse() {
                Ok(n) => length = n,
                Err(_) => return malformed(400, "bad Content-Length"),
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return malformed(411, "chunked bodies are not accepted: send Content-Length");
        } else if header.name.eq_ignore_ascii_case("connection") {
            let value = value().to_ascii_lowercase();
            keep_alive = if keep_alive {
                value != "close"
            } else {
                value == "keep-alive"
            };
        } else if header.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(Zeroizing::new(value()));
        } else if header.name.eq_ignore_ascii_case("accept") {
            accept = Some(value());
        } else if header.name.eq_ignore_ascii_case("expect") {
            expect_continue = value().eq_ignore_ascii_case("100-continue");
        }
    }
    if length > max_body {
        return malformed(413, format!("body larger than {max_body} bytes"));
    }
    let (method, path, query) = (method, path.to_owned(), query.to_owned());
    let mut body = Zeroizing::new(buf[head_len..].to_vec());
    if body.len() > length {
        return malformed(400, "pipelined requests are not accepted");
    }
    let started = started.unwrap_or_else(Instant::now);
    // HTTP clients (curl, Dovecot's own) ask so before a body, and wait for it (Dovecot 2 s).
    if expect_continue && body.len() < length {
        let sent = stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .and_then(|()| stream.flush());
        if sent.is_err() {
            return Next::Gone;
        }
    }
    while body.len() < length {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() || stream.set_timeouts(left).is_err() {
            return malformed(408, "body not complete within the client timeout");
        }
        let want = (length - body.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => return malformed(400, "connection closed inside the body"),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return malformed(408, "body not complete within the client timeout"),
        }
    }
    chunk.iter_mut().for_each(|b| *b = 0);
    Next::Request(
        Request {
            method,
            path,
            query,
            authorization,
            accept,
            body,
            peer: peer.to_owned(),
        },
        keep_alive,
    )
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn write_response(
    stream: &mut Stream,
    response: &Response,
    keep_alive: bool,
    timeout: Duration,
) -> io::Result<()> {
    stream.set_timeouts(timeout)?;
    // Keep-alive is HTTP/1.1's default: only a close is said (one header line less for the Lua
    // script to read on every login).
    let text = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n{}",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        },
        response.body
    );
    stream.write_all(text.as_bytes())?;
    stream.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Counts open connections; past the limit a new one is answered 503 and closed.
pub struct ConnectionCount {
    open: AtomicUsize,
    limit: usize,
}

/// Held while a connection is open.
pub struct Open(Arc<ConnectionCount>);

impl ConnectionCount {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(ConnectionCount {
            open: AtomicUsize::new(0),
            limit,
        })
    }

    pub fn enter(self: &Arc<Self>) -> Option<Open> {
        let before = self.open.fetch_add(1, Ordering::SeqCst);
        let open = Open(self.clone());
        (before < self.limit).then_some(open)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Tells a client over the connection limit to come back later.
pub fn turn_away(mut stream: Stream, timeout: Duration) {
    let response = Response {
        status: 503,
        content_type: "application/json",
        body: r#"{"error":"too many connections"}"#.into(),
    };
    let _ = write_response(&mut stream, &response, false, timeout);
    stream.close();
}

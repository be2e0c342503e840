//! Network fault helpers: a "black hole" TCP listener that accepts connections and never answers
//! (counting them), and dead ports (connection refused).

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Seen {
    /// Peer addresses of every accepted connection, in accept order.
    peers: Vec<SocketAddr>,
    /// Accepted streams, kept open (never read, never written) until the black hole is dropped.
    streams: Vec<TcpStream>,
}

/// Accepts TCP connections and never sends a byte.
pub struct BlackHole {
    pub addr: SocketAddr,
    seen: Arc<(Mutex<Seen>, Condvar)>,
    /// Local addresses of our own sync probes (excluded from `connections()`).
    probes: Mutex<HashSet<SocketAddr>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BlackHole {
    /// On 127.0.0.1, random port.
    pub fn new() -> BlackHole {
        Self::bind("127.0.0.1:0").expect("bind black hole")
    }

    /// On a given address, e.g. "127.0.0.3:<port of slapd>" (same port, other loopback IP).
    pub fn bind(addr: &str) -> std::io::Result<BlackHole> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let seen: Arc<(Mutex<Seen>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for s in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                let (m, cv) = &*seen2;
                let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
                if let Ok(p) = s.peer_addr() {
                    g.peers.push(p);
                }
                g.streams.push(s);
                cv.notify_all();
            }
        });
        Ok(BlackHole {
            addr,
            seen,
            probes: Mutex::default(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Number of connections accepted so far, excluding our own probes. Exact: it first opens a
    /// probe connection and waits until it has been accepted; the accept queue is FIFO, so every
    /// connection made before this call has been accepted by then.
    pub fn connections(&self) -> usize {
        let probe = TcpStream::connect(self.addr).expect("connect probe to black hole");
        let me = probe.local_addr().expect("probe local addr");
        let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        probes.insert(me);
        let (m, cv) = &*self.seen;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        while !g.peers.contains(&me) {
            assert!(Instant::now() < deadline, "black hole did not accept probe");
            g = cv
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        g.peers.iter().filter(|p| !probes.contains(p)).count()
    }
}

impl Default for BlackHole {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake accept()
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A port on 127.0.0.1 that was just free (bound, then closed): connecting gives ECONNREFUSED.
pub fn dead_port() -> u16 {
    super::process::free_port()
}

/// A TCP proxy that passes the first request of each connection (the service bind) to
/// `target` and swallows everything after it, while passing every answer back: a directory
/// server that accepts binds but never answers a search. Runs until the test process ends.
pub struct FirstRequestProxy {
    pub addr: SocketAddr,
}

impl FirstRequestProxy {
    pub fn start(listen: &str, target: SocketAddr) -> std::io::Result<FirstRequestProxy> {
        let addr = proxy(listen, target, false, Arc::default())?;
        Ok(FirstRequestProxy { addr })
    }
}

/// A TCP proxy that passes everything both ways: the server answers on another address
/// (and so under another name than its certificate's), and the connections can be counted.
/// Runs until the test process ends.
pub struct Forwarder {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl Forwarder {
    pub fn start(listen: &str, target: SocketAddr) -> std::io::Result<Forwarder> {
        let accepted = Arc::<AtomicUsize>::default();
        let addr = proxy(listen, target, true, accepted.clone())?;
        Ok(Forwarder { addr, accepted })
    }

    /// Connections accepted so far. Exact once a client got an answer over each of its
    /// connections (a connection is counted before it is passed on).
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn proxy(
    listen: &str,
    target: SocketAddr,
    pass_all: bool,
    accepted: Arc<AtomicUsize>,
) -> std::io::Result<SocketAddr> {
    use std::io::{Read, Write};
    let listener = TcpListener::bind(listen)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            accepted.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            let (mut from_client, mut to_server) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut from_server, mut to_client) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_server, &mut to_client);
            });
            std::thread::spawn(move || {
                if pass_all {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(std::net::Shutdown::Write);
                    return;
                }
                let mut buf = [0u8; 4096];
                if let Ok(n @ 1..) = from_client.read(&mut buf) {
                    let _ = to_server.write_all(&buf[..n]);
                }
                // everything else goes nowhere
                while matches!(from_client.read(&mut buf), Ok(1..)) {}
            });
        }
    });
    Ok(addr)
}

/// A TCP proxy that can be switched off: [`Switch::down`] cuts every connection it carries and
/// drops new ones at once (a server that died, or restarted while it is brought
/// [`Switch::up`] again).
pub struct Switch {
    pub addr: SocketAddr,
    up: Arc<std::sync::atomic::AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Switch {
    pub fn start(listen: &str, target: SocketAddr) -> std::io::Result<Switch> {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_server);
                    let _ = to_server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Ok(Switch { addr, up, open })
    }

    pub fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

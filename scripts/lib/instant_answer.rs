// A stand-in for serve that does no work: it answers every HTTP/1.1 request on a keep-alive
// connection at once with the same `POST /auth` answer, so that scripts/bench-serve.sh can
// measure what the Lua route through Dovecot costs by itself (no LDAP, no database, no
// login flow). Built by the benchmark with `rustc -O`; std only, a thread per connection.
//   instant_answer PORT BODY   (BODY: the answer's body, e.g. "OK\nuserdb_uid=8\n")
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn answer_all(stream: TcpStream, answer: &[u8]) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        let mut length = 0;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
        writer.write_all(answer)?;
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (port, body) = (&args[1], &args[2]);
    let answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer: &'static [u8] = Box::leak(answer.into_bytes().into_boxed_slice());
    let listener = TcpListener::bind(("127.0.0.1", port.parse().expect("a port")))?;
    for stream in listener.incoming() {
        let stream = stream?;
        std::thread::spawn(move || answer_all(stream, answer));
    }
    Ok(())
}

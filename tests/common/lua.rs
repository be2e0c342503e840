//! Pieces of the Lua drivers that run the shipped script under a plain `lua5.4`.

/// Prints what `auth_*` returned (`result`, `extra`): `result=WORD`, then `field=key=value`
/// lines for a table or `message=…` for a string.
pub const PRINT_RESULT: &str = r#"print("result=" .. tostring(result))
if type(extra) == "table" then
  for key, value in pairs(extra) do print("field=" .. key .. "=" .. value) end
else
  print("message=" .. tostring(extra))
end"#;

/// A stand-in for `serve` on a free loopback port: takes one connection, reads one request
/// (head and `Content-Length` body), then writes its answer in `pieces`, each after its pause.
/// Not joined: a test whose script never asks leaves the thread waiting.
pub fn stand_in_serve(pieces: Vec<(std::time::Duration, String)>) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        reader.read_exact(&mut vec![0; length]).unwrap();
        for (pause, piece) in pieces {
            std::thread::sleep(pause);
            // The script may have given up already.
            if reader.get_mut().write_all(piece.as_bytes()).is_err() {
                break;
            }
        }
    });
    addr
}

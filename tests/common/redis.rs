//! A throwaway `redis-server` per test, on a random loopback port, with a password (as
//! mailcow's `REDISPASS`) and no persistence.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{free_port, random_hex, scratch_subdir, spawn_server, stop_server};

pub struct Redis {
    pub port: u16,
    pub password: String,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        let dir = scratch_subdir(&format!("redis.{}", random_hex()));
        let password = random_hex();
        for _attempt in 0..20 {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--requirepass",
                    &password,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child =
                spawn_server(cmd).expect("spawn redis-server (apt-get install redis-server)");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().expect("try_wait redis").is_some() {
                    break; // lost a port race: next attempt
                }
                match connect(port, &password) {
                    Ok(_) => {
                        return Redis {
                            port,
                            password,
                            child,
                        };
                    }
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => {
                        stop_server(&mut child);
                        panic!("redis-server not ready after 20 s: {e}");
                    }
                }
            }
        }
        panic!("redis-server: no free port after 20 attempts");
    }

    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        connect(self.port, &self.password)
    }

    /// `HGETALL RL_VALUE`, sorted.
    pub fn rate_limits(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg("RL_VALUE")
            .query(&mut self.connection().expect("redis connection"))
            .expect("HGETALL RL_VALUE");
        pairs.sort();
        pairs
    }

    /// The `redis:` section pointing at this server.
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({ "host": "127.0.0.1", "port": self.port, "password": self.password })
    }
}

fn connect(port: u16, password: &str) -> redis::RedisResult<redis::Connection> {
    let url = format!("redis://:{password}@127.0.0.1:{port}/");
    redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop_server(&mut self.child);
    }
}

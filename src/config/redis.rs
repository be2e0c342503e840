//! The optional `redis:` section: mailcow's Redis, where the template rate limits live
//! (`RL_VALUE`). Without it, provisioning logs the rate limit as skipped.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::{inline_secret, secret};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    host: Option<String>,
    port: Option<u16>,
    socket: Option<PathBuf>,
    #[serde(default, deserialize_with = "inline_secret")]
    password: Option<SecretString>,
    password_file: Option<PathBuf>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

impl RawRedis {
    pub(super) fn has_inline_password(&self) -> bool {
        self.password.is_some()
    }
}

fn default_timeout_ms() -> u64 {
    2_000
}

#[derive(Debug, Clone)]
pub enum RedisAddress {
    Tcp { host: String, port: u16 },
    Socket(PathBuf),
}

#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub address: RedisAddress,
    /// `AUTH` password (mailcow-dockerized: `REDISPASS` from mailcow.conf); none: no AUTH.
    pub password: Option<SecretString>,
    /// Connect, and each command.
    pub timeout: Duration,
}

pub(super) fn validate(raw: RawRedis, warnings: &mut Vec<String>) -> Result<RedisConfig, String> {
    let address = match (raw.socket, raw.host) {
        (Some(_), Some(_)) => return Err("redis.socket and redis.host: set only one".into()),
        (Some(socket), None) => {
            if raw.port.is_some() {
                return Err("redis.port: only with redis.host".into());
            }
            RedisAddress::Socket(socket)
        }
        (None, Some(host)) if !host.trim().is_empty() => RedisAddress::Tcp {
            host: host.trim().to_owned(),
            port: raw.port.unwrap_or(6379),
        },
        _ => return Err("redis: set host or socket".into()),
    };
    if raw.timeout_ms == 0 {
        return Err("redis.timeout_ms: must be greater than 0".into());
    }
    let password = match (&raw.password, &raw.password_file) {
        (None, None) => None,
        _ => Some(secret(
            raw.password,
            raw.password_file,
            "redis.password",
            warnings,
        )?),
    };
    Ok(RedisConfig {
        address,
        password,
        timeout: Duration::from_millis(raw.timeout_ms),
    })
}

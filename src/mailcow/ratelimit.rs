//! A template's rate limit, written to mailcow's Redis as mailcow's `ratelimit('edit',
//! 'mailbox')` does: hash `RL_VALUE`, field = the mailbox, value `"<rl_value> / 1<rl_frame>"`;
//! the field is deleted when the value is 0 or empty.

use redis::{ConnectionAddr, ConnectionInfo, RedisConnectionInfo};
use secrecy::ExposeSecret;

use super::template::{Template, php_intval};
use crate::config::{RedisAddress, RedisConfig};

/// The Redis hash mailcow's rspamd reads the per-mailbox rate limits from.
const RL_VALUE: &str = "RL_VALUE";

/// What applying a template does to the mailbox's rate limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimit {
    /// `HSET RL_VALUE <mailbox> <value>`.
    Set(String),
    /// `HDEL RL_VALUE <mailbox>`.
    Delete,
    /// Nothing is written: mailcow refuses a time frame other than s, m, h, d (`rl_timeframe`).
    InvalidFrame,
}

impl RateLimit {
    /// A mailbox created from `template`: mailcow's defaults (`rl_frame` "s", `rl_value` "")
    /// fill in absent keys.
    pub fn on_creation(template: &Template) -> RateLimit {
        let frame = template
            .string("rl_frame")
            .filter(|_| !is_null(template, "rl_frame"));
        let value = template.attributes.get("rl_value");
        RateLimit::of(frame.as_deref().unwrap_or("s"), value.map_or(0, php_intval))
    }

    /// A template re-applied to a mailbox: only the template's own `rl_*` keys count, so a
    /// template without `rl_frame` writes nothing and one without `rl_value` deletes.
    pub fn on_update(template: &Template) -> RateLimit {
        let Some(frame) = template
            .string("rl_frame")
            .filter(|_| !is_null(template, "rl_frame"))
        else {
            return RateLimit::InvalidFrame;
        };
        let value = template.attributes.get("rl_value");
        RateLimit::of(&frame, value.map_or(0, php_intval))
    }

    fn of(frame: &str, value: i64) -> RateLimit {
        if !matches!(frame, "s" | "m" | "h" | "d") {
            RateLimit::InvalidFrame
        } else if value == 0 {
            RateLimit::Delete
        } else {
            RateLimit::Set(format!("{value} / 1{frame}"))
        }
    }

    /// The Redis command, for log lines.
    pub fn describe(&self, mailbox: &str) -> String {
        match self {
            RateLimit::Set(value) => format!("RL_VALUE {mailbox} = {value}"),
            RateLimit::Delete => format!("HDEL RL_VALUE {mailbox}"),
            RateLimit::InvalidFrame => format!("RL_VALUE {mailbox}: rl_frame not s, m, h or d"),
        }
    }

    /// Writes the change to Redis (nothing for [`RateLimit::InvalidFrame`]). One connection
    /// per call: a login provisions at most one mailbox.
    pub fn write(&self, config: &RedisConfig, mailbox: &str) -> Result<(), String> {
        let command = match self {
            RateLimit::Set(value) => {
                let mut c = redis::cmd("HSET");
                c.arg(RL_VALUE).arg(mailbox).arg(value);
                c
            }
            RateLimit::Delete => {
                let mut c = redis::cmd("HDEL");
                c.arg(RL_VALUE).arg(mailbox);
                c
            }
            RateLimit::InvalidFrame => return Ok(()),
        };
        let mut connection = connect(config).map_err(|e| format!("Redis unreachable: {e}"))?;
        command
            .query::<()>(&mut connection)
            .map_err(|e| format!("Redis {}: {e}", self.describe(mailbox)))
    }
}

fn is_null(template: &Template, key: &str) -> bool {
    template
        .attributes
        .get(key)
        .is_some_and(serde_json::Value::is_null)
}

fn connect(config: &RedisConfig) -> redis::RedisResult<redis::Connection> {
    let addr = match &config.address {
        RedisAddress::Tcp { host, port } => ConnectionAddr::Tcp(host.clone(), *port),
        RedisAddress::Socket(path) => ConnectionAddr::Unix(path.clone()),
    };
    let info = ConnectionInfo {
        addr,
        redis: RedisConnectionInfo {
            password: config
                .password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
            ..RedisConnectionInfo::default()
        },
    };
    let connection = redis::Client::open(info)?.get_connection_with_timeout(config.timeout)?;
    connection.set_read_timeout(Some(config.timeout))?;
    connection.set_write_timeout(Some(config.timeout))?;
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(text: &str) -> (RateLimit, RateLimit) {
        let t = Template::from_text(text);
        (RateLimit::on_creation(&t), RateLimit::on_update(&t))
    }

    #[test]
    fn as_mailcow_writes_them() {
        let set = |v: &str| RateLimit::Set(v.into());
        assert_eq!(
            limits(r#"{"rl_frame":"h","rl_value":"10"}"#),
            (set("10 / 1h"), set("10 / 1h"))
        );
        // intval(): "12abc" is 12, "" and "0" delete
        assert_eq!(
            limits(r#"{"rl_frame":"d","rl_value":"12abc"}"#).0,
            set("12 / 1d")
        );
        assert_eq!(
            limits(r#"{"rl_frame":"s","rl_value":""}"#),
            (RateLimit::Delete, RateLimit::Delete)
        );
        assert_eq!(
            limits(r#"{"rl_frame":"m","rl_value":0}"#).1,
            RateLimit::Delete
        );
        // absent keys: creation takes mailcow's defaults, an update only the template's keys
        assert_eq!(
            limits(r#"{"rl_value":"5"}"#),
            (set("5 / 1s"), RateLimit::InvalidFrame)
        );
        assert_eq!(
            limits(r#"{"rl_frame":"h"}"#),
            (RateLimit::Delete, RateLimit::Delete)
        );
        assert_eq!(
            limits(r#"{"rl_frame":"w","rl_value":"5"}"#),
            (RateLimit::InvalidFrame, RateLimit::InvalidFrame)
        );
    }
}

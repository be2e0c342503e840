//! The stand-in for mailcow's PHP endpoint (`mailcow_php_standin.py`): HTTPS on a loopback
//! port with the test CA's server certificate, answers from a fixed table, records every
//! request.

use crate::common::certs;
use crate::common::process::{free_port, scratch, spawn_server};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const SCRIPT: &str = include_str!("mailcow_php_standin.py");

pub struct MailcowPhp {
    pub url: String,
    record: PathBuf,
    _child: Child,
}

impl MailcowPhp {
    /// `table`: the username → password pairs it accepts.
    pub fn start(table: &[(&str, &str)]) -> MailcowPhp {
        let dir = tempfile::Builder::new()
            .prefix("mailcow-php.")
            .tempdir_in(scratch())
            .expect("stand-in dir")
            .keep();
        let script = dir.join("standin.py");
        std::fs::write(&script, SCRIPT).expect("write stand-in");
        let table: serde_json::Map<String, Value> = table
            .iter()
            .map(|(user, pw)| ((*user).to_owned(), Value::from(*pw)))
            .collect();
        let table_path = dir.join("table.json");
        std::fs::write(&table_path, Value::Object(table).to_string()).expect("write table");
        let record = dir.join("requests.jsonl");
        let port = free_port();
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg(port.to_string())
            .arg(&certs().server_crt)
            .arg(&certs().server_key)
            .arg(&table_path)
            .arg(&record)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = spawn_server(cmd).expect("spawn the PHP stand-in");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut ready)
            .expect("read the stand-in's first line");
        assert_eq!(ready.trim(), "ready", "the PHP stand-in did not start");
        MailcowPhp {
            url: format!("https://127.0.0.1:{port}"),
            record,
            _child: child,
        }
    }

    /// The JSON bodies of every request so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("record line")["body"].clone())
            .collect()
    }
}

//! The HTTP/1.1 + JSON protocol of `serve`: routes, the token, bodies, answers.
//!
//! `POST /auth` `{username, password, service, real_rip, dovecot}` and `GET /lookup?user=…`
//! answer `{result, user, fields, reason}`, `result` being one of `ok`, `mismatch`, `unknown`,
//! `disabled`, `next`, `tempfail` ([`LuaResult::json_word`]). Every route but `/health` needs
//! `Authorization: Bearer <token>`. A refused request is logged without its body.

use std::io::Read;
use std::time::Instant;

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tiny_http::{Header, Method, Request as HttpRequest, Response};
use zeroize::Zeroizing;

use super::Generation;
use super::connections::Pooled;
use crate::deadline::Deadline;
use crate::exit::LuaResult;
use crate::log::{Severity, printable};
use crate::request::{self, Answer, Report, Request};
use crate::userdb::{self, DovecotVersion};

/// Bodies larger than this are refused (413): a login name and a password fit many times.
pub const MAX_BODY: usize = 8 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthBody {
    username: String,
    password: Zeroizing<String>,
    #[serde(default = "unknown")]
    service: String,
    #[serde(default)]
    real_rip: Option<String>,
    #[serde(default)]
    dovecot: Option<String>,
}

fn unknown() -> String {
    "unknown".into()
}

/// A request turned away before the login flow: status and the reason logged (never the body).
struct Refused(u16, String);

/// Answers one HTTP request.
pub fn handle(mut http: HttpRequest, generation: &Generation, server: &super::Shared) {
    let started = Instant::now();
    let url = http.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = http.method().clone();
    let result = match (&method, path) {
        (Method::Get, "/health") => Ok((200, json!({"status": "ok"}).to_string(), JSON)),
        (_, "/auth" | "/lookup" | "/metrics") if !authorized(&http, generation) => Err(Refused(
            401,
            "missing or wrong token (Authorization: Bearer …)".into(),
        )),
        (Method::Post, "/auth") => read_body(&mut http)
            .and_then(|body| parse_auth(&body))
            .map(|(auth, version)| {
                let answer = authenticate(generation, server, auth, version, started);
                (200, answer, JSON)
            }),
        (Method::Get, "/lookup") => parse_lookup(query)
            .map(|(user, version)| (200, lookup(generation, server, &user, version, started), JSON)),
        (Method::Get, "/metrics") => Ok((
            200,
            server
                .metrics
                .render(&generation.pools, server.in_flight()),
            "text/plain; version=0.0.4",
        )),
        (_, "/auth" | "/lookup" | "/metrics" | "/health") => {
            Err(Refused(405, format!("method {method} not allowed")))
        }
        _ => Err(Refused(404, "no such path".into())),
    };
    let (status, body, content_type) = match result {
        Ok(answer) => answer,
        Err(Refused(status, reason)) => {
            server.metrics.refused(status);
            generation.logger.log(
                Severity::Warning,
                &format!(
                    "http status={status} method={method} path=\"{}\" peer={} reason=\"{}\"",
                    printable(path),
                    peer(&http),
                    printable(&reason)
                ),
            );
            (status, json!({"error": reason}).to_string(), JSON)
        }
    };
    let header = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
        .expect("a constant header is valid");
    // A client that went away before its answer changes nothing here.
    let _ = http.respond(
        Response::from_string(body)
            .with_status_code(status)
            .with_header(header),
    );
}

const JSON: &str = "application/json";

fn peer(http: &HttpRequest) -> String {
    http.remote_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "local".into())
}

/// `Authorization: Bearer <token>`, compared in constant time.
fn authorized(http: &HttpRequest, generation: &Generation) -> bool {
    let expected = generation.token.expose_secret().as_bytes();
    http.headers()
        .iter()
        .filter(|h| h.field.equiv("Authorization"))
        .any(|h| {
            h.value
                .as_str()
                .strip_prefix("Bearer ")
                .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(expected)))
        })
}

/// The body, at most [`MAX_BODY`] bytes, in a buffer wiped afterwards (it holds the password).
fn read_body(http: &mut HttpRequest) -> Result<Zeroizing<Vec<u8>>, Refused> {
    let too_large = || Refused(413, format!("body larger than {MAX_BODY} bytes"));
    if http.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Zeroizing::new(Vec::with_capacity(1024));
    http.as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| Refused(400, format!("cannot read the body: {}", e.kind())))?;
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    Ok(body)
}

/// The error names where the JSON broke, never what it held (it may be the password).
fn parse_auth(body: &[u8]) -> Result<(AuthBody, DovecotVersion), Refused> {
    let auth: AuthBody = serde_json::from_slice(body).map_err(|e| {
        Refused(
            400,
            format!(
                "bad JSON body ({:?} error at line {} column {}; fields: username, password, \
                 service, real_rip, dovecot)",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })?;
    let version = parse_version(auth.dovecot.as_deref())?;
    Ok((auth, version))
}

fn parse_version(word: Option<&str>) -> Result<DovecotVersion, Refused> {
    match word {
        None | Some("2.3") => Ok(DovecotVersion::V2_3),
        Some("2.4") => Ok(DovecotVersion::V2_4),
        Some(_) => Err(Refused(400, "dovecot: 2.3 or 2.4".into())),
    }
}

fn parse_lookup(query: &str) -> Result<(String, DovecotVersion), Refused> {
    let mut user = None;
    let mut version = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "user" => user = Some(value.into_owned()),
            "dovecot" => version = Some(value.into_owned()),
            _ => return Err(Refused(400, format!("unknown parameter {}", printable(&key)))),
        }
    }
    let user = user.ok_or_else(|| Refused(400, "missing parameter user".into()))?;
    Ok((user, parse_version(version.as_deref())?))
}

fn authenticate(
    generation: &Generation,
    server: &super::Shared,
    auth: AuthBody,
    version: DovecotVersion,
    started: Instant,
) -> String {
    let request = Request {
        user: auth.username.as_bytes(),
        password: auth.password.as_bytes(),
        service: auth.service,
        remote_ip: auth.real_rip.unwrap_or_else(|| "-".into()),
        lookup: false,
    };
    run(generation, server, &request, version, started)
}

fn lookup(
    generation: &Generation,
    server: &super::Shared,
    user: &str,
    version: DovecotVersion,
    started: Instant,
) -> String {
    let request = Request {
        user: user.as_bytes(),
        password: b"",
        service: "lookup".into(),
        remote_ip: "-".into(),
        lookup: true,
    };
    run(generation, server, &request, version, started)
}

/// The login flow on pooled connections, its log line, its metrics and its JSON answer.
fn run(
    generation: &Generation,
    server: &super::Shared,
    request: &Request,
    version: DovecotVersion,
    started: Instant,
) -> String {
    let config = generation.config;
    let deadline = Deadline::starting_at(started, config.deadline);
    let mut connections = Pooled::new(&generation.pools);
    let (answer, reason) = request::answer_logged(
        config,
        &mut connections,
        &generation.logger,
        request,
        &Report::new(request, started),
        &deadline,
    );
    connections.finish(matches!(answer, Answer::Fault));
    let word = LuaResult::of(&answer).json_word();
    let kind = if request.lookup { "lookup" } else { "auth" };
    server
        .metrics
        .answered(kind, &request.service, word, started.elapsed());
    match &answer {
        Answer::Found { mailbox, userdb } => {
            let prefix = if request.lookup { "" } else { "userdb_" };
            let fields = userdb::fields(mailbox, userdb, version)
                .into_iter()
                .map(|(name, value)| (format!("{prefix}{name}"), Value::String(value)))
                .collect();
            answer_json(word, Some(&mailbox.username), fields, "ok")
        }
        _ => answer_json(word, None, Map::new(), &printable(&reason)),
    }
}

fn answer_json(word: &str, user: Option<&str>, fields: Map<String, Value>, reason: &str) -> String {
    json!({"result": word, "user": user, "fields": fields, "reason": reason}).to_string()
}

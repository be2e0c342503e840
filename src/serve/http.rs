//! The HTTP/1.1 + JSON protocol of `serve`: routes, the token, bodies, answers.
//!
//! `POST /auth` `{username, password, service, real_rip, dovecot}` and `GET /lookup?user=…`
//! answer `{result, user, fields, reason}`, `result` being one of `ok`, `mismatch`, `unknown`,
//! `disabled`, `next`, `tempfail` ([`LuaResult::json_word`]) — or, for a client that sends
//! `Accept: text/plain` (the Lua script, which has no JSON parser), the reply `dovecot-lua`
//! writes ([`crate::dovecot_lua::reply`]). Every route but `/health` needs
//! `Authorization: Bearer <token>`. A refused request is logged without its body.

use std::time::Instant;

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::Generation;
use super::connections::Pooled;
use super::wire::{Malformed, Request as HttpRequest, Response};
use crate::deadline::Deadline;
use crate::exit::LuaResult;
use crate::log::{Severity, printable};
use crate::request::{self, Answer, Request, RequestLog};
use crate::userdb::{self, DovecotVersion};

/// Bodies larger than this are refused (413): a login name and a password fit many times.
pub const MAX_BODY: usize = 8 * 1024;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// How an answer is written.
#[derive(Clone, Copy)]
enum Format {
    Json,
    /// The `dovecot-lua` reply: a result word, then `key=value` lines.
    Lines,
}

/// What the client wants the answer in.
#[derive(Clone, Copy)]
struct Reply {
    version: DovecotVersion,
    format: Format,
}

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
struct TurnedAway(u16, String);

/// Answers one HTTP request.
pub fn handle(http: HttpRequest, generation: &Generation, server: &super::Shared) -> Response {
    let started = Instant::now();
    let format = if http
        .accept
        .as_deref()
        .is_some_and(|a| a.contains("text/plain"))
    {
        Format::Lines
    } else {
        Format::Json
    };
    let path = http.path.as_str();
    let method = http.method.as_str();
    let result = match (method, path) {
        ("GET", "/health") => Ok((json!({"status": "ok"}).to_string(), JSON)),
        (_, "/auth" | "/lookup" | "/metrics") if !authorized(&http, generation) => Err(TurnedAway(
            401,
            "missing or wrong token (Authorization: Bearer …)".into(),
        )),
        ("POST", "/auth") => parse_auth(&http.body).map(|(auth, version)| {
            let reply = Reply { version, format };
            authenticate(generation, server, auth, reply, started)
        }),
        ("GET", "/lookup") => parse_lookup(&http.query).map(|(user, version)| {
            let reply = Reply { version, format };
            lookup(generation, server, &user, reply, started)
        }),
        ("GET", "/metrics") => Ok((
            server.metrics.render(
                &generation.pools,
                server.in_flight(),
                generation.mailcow.as_ref().map(|_| &server.settings),
            ),
            "text/plain; version=0.0.4",
        )),
        (_, "/auth" | "/lookup" | "/metrics" | "/health") => Err(TurnedAway(
            405,
            format!("method {} not allowed", printable(method)),
        )),
        _ => Err(TurnedAway(404, "no such path".into())),
    };
    match result {
        Ok((body, content_type)) => Response {
            status: 200,
            content_type,
            body,
        },
        Err(TurnedAway(status, reason)) => {
            refused(
                generation, server, status, method, path, &http.peer, &reason,
            );
            Response {
                status,
                content_type: JSON,
                body: json!({"error": reason}).to_string(),
            }
        }
    }
}

/// A request that could not even be read (see [`super::wire`]).
pub fn malformed(generation: &Generation, server: &super::Shared, bad: &Malformed, peer: &str) {
    refused(generation, server, bad.status, "-", "-", peer, &bad.reason);
}

/// Counts and logs a refused request: what was asked and why, never the body.
fn refused(
    generation: &Generation,
    server: &super::Shared,
    status: u16,
    method: &str,
    path: &str,
    peer: &str,
    reason: &str,
) {
    server.metrics.refused(status);
    generation.logger.log(
        Severity::Warning,
        &format!(
            "http status={status} method={} path=\"{}\" peer={} reason=\"{}\"",
            printable(method),
            printable(path),
            printable(peer),
            printable(reason)
        ),
    );
}

/// `Authorization: Bearer <token>`, compared in constant time.
fn authorized(http: &HttpRequest, generation: &Generation) -> bool {
    let expected = generation.token.expose_secret().as_bytes();
    http.authorization
        .as_deref()
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(expected)))
}

/// The error names the kind of fault only: neither what the JSON held nor where it broke
/// (a position inside the password tells its length or where an odd byte sits).
fn parse_auth(body: &[u8]) -> Result<(AuthBody, DovecotVersion), TurnedAway> {
    let auth: AuthBody = serde_json::from_slice(body).map_err(|e| {
        TurnedAway(
            400,
            format!(
                "bad JSON body ({:?} error; fields: username, password, service, real_rip, \
                 dovecot)",
                e.classify()
            ),
        )
    })?;
    let version = parse_version(auth.dovecot.as_deref())?;
    Ok((auth, version))
}

fn parse_version(word: Option<&str>) -> Result<DovecotVersion, TurnedAway> {
    match word {
        None | Some("2.3") => Ok(DovecotVersion::V2_3),
        Some("2.4") => Ok(DovecotVersion::V2_4),
        Some(_) => Err(TurnedAway(400, "dovecot: 2.3 or 2.4".into())),
    }
}

fn parse_lookup(query: &str) -> Result<(String, DovecotVersion), TurnedAway> {
    let mut user = None;
    let mut version = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "user" => user = Some(value.into_owned()),
            "dovecot" => version = Some(value.into_owned()),
            _ => {
                return Err(TurnedAway(
                    400,
                    format!("unknown parameter {}", printable(&key)),
                ));
            }
        }
    }
    let user = user.ok_or_else(|| TurnedAway(400, "missing parameter user".into()))?;
    Ok((user, parse_version(version.as_deref())?))
}

fn authenticate(
    generation: &Generation,
    server: &super::Shared,
    auth: AuthBody,
    reply: Reply,
    started: Instant,
) -> (String, &'static str) {
    let request = Request {
        user: auth.username.as_bytes(),
        password: auth.password.as_bytes(),
        service: auth.service,
        remote_ip: auth.real_rip.unwrap_or_else(|| "-".into()),
        lookup: false,
    };
    run(generation, server, &request, reply, started)
}

fn lookup(
    generation: &Generation,
    server: &super::Shared,
    user: &str,
    reply: Reply,
    started: Instant,
) -> (String, &'static str) {
    let request = Request {
        user: user.as_bytes(),
        password: b"",
        service: "lookup".into(),
        remote_ip: "-".into(),
        lookup: true,
    };
    run(generation, server, &request, reply, started)
}

/// The login flow on pooled connections, its log line, its metrics and its JSON answer.
fn run(
    generation: &Generation,
    server: &super::Shared,
    request: &Request,
    reply: Reply,
    started: Instant,
) -> (String, &'static str) {
    let config = generation.config;
    let deadline = Deadline::starting_at(started, config.deadline);
    let report = RequestLog::new(request, started);
    let (answer, reason) = match generation.pools.workers.lease(&deadline) {
        Ok(_place) => {
            let mut connections = Pooled::new(&generation.pools);
            let (answer, reason) = request::answer_logged(
                config,
                &mut connections,
                &generation.logger,
                request,
                &report,
                &deadline,
            );
            connections.finish(matches!(answer, Answer::Fault));
            (answer, reason)
        }
        Err(busy) => {
            let reason = busy.to_string();
            request::log_answer(
                &generation.logger,
                request,
                &report,
                &Answer::Fault,
                &reason,
            );
            (Answer::Fault, reason)
        }
    };
    let word = LuaResult::of(&answer).json_word();
    let kind = if request.lookup { "lookup" } else { "auth" };
    server
        .metrics
        .answered(kind, &request.service, word, started.elapsed());
    if let Format::Lines = reply.format {
        let text =
            crate::dovecot_lua::reply::render(&answer, &reason, reply.version, request.lookup)
                .unwrap_or_else(|e| {
                    format!("INTERNAL_FAILURE\nreason={}\n", printable(&e.to_string()))
                });
        return (text, TEXT);
    }
    let text = match &answer {
        Answer::Found { mailbox, userdb } => {
            let prefix = if request.lookup { "" } else { "userdb_" };
            let fields = userdb::fields(mailbox, userdb, reply.version)
                .into_iter()
                .map(|(name, value)| (format!("{prefix}{name}"), Value::String(value)))
                .collect();
            answer_json(word, Some(&mailbox.username), fields, "ok")
        }
        _ => answer_json(word, None, Map::new(), &printable(&reason)),
    };
    (text, JSON)
}

fn answer_json(word: &str, user: Option<&str>, fields: Map<String, Value>, reason: &str) -> String {
    json!({"result": word, "user": user, "fields": fields, "reason": reason}).to_string()
}

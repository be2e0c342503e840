//! `/metrics` in Prometheus' text format: requests by result and service, a latency histogram,
//! the pools' use and, with `ldap.from_mailcow`, how the last reading of mailcow's settings went. Labels only ever hold fixed words, never a user name or a password.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use super::connections::Pools;
use super::mailcow_settings::SettingsStatus;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Services counted under their own name; any other is counted as `other`, so that clients
/// cannot grow the label set.
const SERVICES: [&str; 10] = [
    "imap",
    "pop3",
    "smtp",
    "submission",
    "sieve",
    "managesieve",
    "lmtp",
    "doveadm",
    "lookup",
    "unknown",
];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    /// (kind, service, result) → requests.
    requests: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// Requests refused before the login flow, by HTTP status.
    refused: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One answered `/auth` (`kind` = "auth") or `/lookup` request.
    pub fn answered(
        &self,
        kind: &'static str,
        service: &str,
        result: &'static str,
        took: Duration,
    ) {
        let service = SERVICES
            .iter()
            .find(|s| s.eq_ignore_ascii_case(service))
            .copied()
            .unwrap_or("other");
        let seconds = took.as_secs_f64();
        let mut counts = self.counts();
        *counts.requests.entry((kind, service, result)).or_default() += 1;
        for (bucket, bound) in counts.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        counts.count += 1;
        counts.sum += seconds;
    }

    /// A request turned away with a 4xx/5xx status before the flow ran.
    pub fn refused(&self, status: u16) {
        *self.counts().refused.entry(status).or_default() += 1;
    }

    pub fn render(
        &self,
        pools: &Pools,
        in_flight: usize,
        settings: Option<&SettingsStatus>,
    ) -> String {
        let counts = self.counts();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP mailcow_ldap_auth_requests_total Answered requests by kind, service and result.\n\
             # TYPE mailcow_ldap_auth_requests_total counter"
        );
        for ((kind, service, result), n) in &counts.requests {
            let _ = writeln!(
                out,
                "mailcow_ldap_auth_requests_total{{kind=\"{kind}\",service=\"{service}\",result=\"{result}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP mailcow_ldap_auth_refused_total Requests refused before the login flow, by HTTP status.\n\
             # TYPE mailcow_ldap_auth_refused_total counter"
        );
        for (status, n) in &counts.refused {
            let _ = writeln!(
                out,
                "mailcow_ldap_auth_refused_total{{status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP mailcow_ldap_auth_request_seconds Time to answer /auth and /lookup.\n\
             # TYPE mailcow_ldap_auth_request_seconds histogram"
        );
        for (n, bound) in counts.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "mailcow_ldap_auth_request_seconds_bucket{{le=\"{bound}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "mailcow_ldap_auth_request_seconds_bucket{{le=\"+Inf\"}} {}\n\
             mailcow_ldap_auth_request_seconds_sum {}\n\
             mailcow_ldap_auth_request_seconds_count {}",
            counts.count, counts.sum, counts.count
        );
        let _ = writeln!(
            out,
            "# HELP mailcow_ldap_auth_pool_connections Pooled connections by pool and state.\n\
             # TYPE mailcow_ldap_auth_pool_connections gauge"
        );
        for (pool, usage) in pools.usage() {
            for (state, n) in [
                ("in_use", usage.lent),
                ("idle", usage.idle),
                ("max", usage.size),
            ] {
                let _ = writeln!(
                    out,
                    "mailcow_ldap_auth_pool_connections{{pool=\"{pool}\",state=\"{state}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP mailcow_ldap_auth_mailbox_reads_total Mailbox reads of logins, before LDAP \
             (before_ldap) and after the bind (after_bind), made in the database or taken from \
             a login moments ago (remembered), this configuration.\n\
             # TYPE mailcow_ldap_auth_mailbox_reads_total counter"
        );
        for (read, counts) in [
            ("before_ldap", &pools.remembered.counts),
            ("after_bind", &pools.unchanged.counts),
        ] {
            let (remembered, database) = counts.get();
            for (source, n) in [("database", database), ("remembered", remembered)] {
                let _ = writeln!(
                    out,
                    "mailcow_ldap_auth_mailbox_reads_total{{read=\"{read}\",source=\"{source}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP mailcow_ldap_auth_after_bind_reuse 1 while reads after the bind are reused \
             (polls of the database see mailcow's tables unchanged).\n\
             # TYPE mailcow_ldap_auth_after_bind_reuse gauge\n\
             mailcow_ldap_auth_after_bind_reuse {}\n\
             # HELP mailcow_ldap_auth_after_bind_reuse_ends_total Polls of the database that \
             ended the reuse of earlier reads (a change seen, a failure, a late poll).\n\
             # TYPE mailcow_ldap_auth_after_bind_reuse_ends_total counter\n\
             mailcow_ldap_auth_after_bind_reuse_ends_total {}",
            u8::from(pools.unchanged.reusing()),
            pools.unchanged.epoch()
        );
        let _ = writeln!(
            out,
            "# HELP mailcow_ldap_auth_requests_in_flight Requests being answered.\n\
             # TYPE mailcow_ldap_auth_requests_in_flight gauge\n\
             mailcow_ldap_auth_requests_in_flight {in_flight}"
        );
        if let Some(settings) = settings {
            let loaded = settings
                .loaded_at()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |t| t.as_secs());
            let _ = writeln!(
                out,
                "# HELP mailcow_ldap_auth_mailcow_settings_loaded_timestamp_seconds When mailcow's \
                 LDAP settings were last read and usable (0: never).\n\
                 # TYPE mailcow_ldap_auth_mailcow_settings_loaded_timestamp_seconds gauge\n\
                 mailcow_ldap_auth_mailcow_settings_loaded_timestamp_seconds {loaded}\n\
                 # HELP mailcow_ldap_auth_mailcow_settings_refresh_failed 1 when the last reading \
                 of mailcow's LDAP settings failed or gave unusable settings.\n\
                 # TYPE mailcow_ldap_auth_mailcow_settings_refresh_failed gauge\n\
                 mailcow_ldap_auth_mailcow_settings_refresh_failed {}",
                u8::from(settings.failing())
            );
        }
        out
    }
}

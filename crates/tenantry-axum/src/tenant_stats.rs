//! Per-tenant traffic of the busiest tenants: requests by status class and p95 latency per period, in a table of bounded size (the idea of Citus's `citus_stat_tenants`), rendered as Prometheus series whose count does not grow with the number of tenants.
//!
//! Every request a tenant made is counted in the current period of its entry.
//! The table holds at most [`TenantStatsConfig::capacity`] tenants: a tenant
//! not in a full table replaces the entry with the least traffic in the
//! current and the last period, so busy tenants stay and a stream of quiet
//! ones only churns among themselves. Periods roll over every
//! [`TenantStatsConfig::period`]; the last complete period is kept next to the
//! current one. Rendering and [`TenantStats::snapshot`] report the
//! [`TenantStatsConfig::top`] tenants with the most requests in the two
//! periods and the rest of the traffic as one `other` row, so `/metrics`
//! exposes at most `(top + 1) × 2 periods × 4` tenant series, whether 10 or
//! 100 000 tenants are active.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sketches_ddsketch::{Config as SketchConfig, DDSketch};
use tenantry_db::TenantId;

/// How many tenants [`TenantStats`] reports and tracks, and its period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantStatsConfig {
    /// Tenants reported by name; the rest are summed as `other`.
    pub top: usize,
    /// Tenants tracked at once (at least `top`); the quietest is replaced when full.
    pub capacity: usize,
    /// Length of a period.
    pub period: Duration,
}

impl TenantStatsConfig {
    /// `top` tenants reported, ten times as many tracked (at least 100), periods of `period`.
    pub fn new(top: usize, period: Duration) -> Self {
        Self {
            top,
            capacity: (top * 10).max(100),
            period,
        }
    }
}

impl Default for TenantStatsConfig {
    /// The top 10 tenants, 100 tracked, one-minute periods.
    fn default() -> Self {
        Self::new(10, Duration::from_secs(60))
    }
}

/// Counts of one tenant (or of `other`) in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeriodCounts {
    /// Requests answered.
    pub requests: u64,
    /// Of which answered 4xx.
    pub client_errors: u64,
    /// Of which answered 5xx.
    pub server_errors: u64,
    /// 95th percentile of the latency in milliseconds (about 1 % relative
    /// error); absent without requests.
    pub p95_ms: Option<f64>,
}

/// One reported row: a tenant, or the sum of all others (`tenant_id` absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantTraffic {
    /// The tenant; absent on the `other` row.
    pub tenant_id: Option<TenantId>,
    /// The period under way.
    pub current: PeriodCounts,
    /// The last complete period.
    pub last: PeriodCounts,
}

/// What [`TenantStats::snapshot`] returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantStatsSnapshot {
    /// Length of a period in seconds.
    pub period_secs: f64,
    /// Seconds elapsed in the current period (rates: requests / this).
    pub current_elapsed_secs: f64,
    /// Tenants in the table now.
    pub tracked: usize,
    /// The busiest tenants, busiest first (by requests in both periods).
    pub tenants: Vec<TenantTraffic>,
    /// All other tenants' traffic, including tenants no longer tracked.
    pub other: TenantTraffic,
}

/// Counts of one period, with the latency sketch behind the p95.
#[derive(Clone)]
struct Counts {
    requests: u64,
    client_errors: u64,
    server_errors: u64,
    latency_ms: DDSketch,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            requests: 0,
            client_errors: 0,
            server_errors: 0,
            latency_ms: DDSketch::new(SketchConfig::defaults()),
        }
    }
}

impl Counts {
    fn add(&mut self, status: u16, latency: Duration) {
        self.requests += 1;
        match status {
            400..=499 => self.client_errors += 1,
            500..=599 => self.server_errors += 1,
            _ => {}
        }
        self.latency_ms.add(latency.as_secs_f64() * 1000.0);
    }

    fn public(&self) -> PeriodCounts {
        PeriodCounts {
            requests: self.requests,
            client_errors: self.client_errors,
            server_errors: self.server_errors,
            p95_ms: self.latency_ms.quantile(0.95).ok().flatten(),
        }
    }
}

/// `total` minus the named rows: the `other` row's counts. Its p95 is the
/// total's (the sketch of the rest alone is not kept; with many tenants the
/// rest is most of the traffic).
fn rest(total: &Counts, named: impl Iterator<Item = PeriodCounts>) -> PeriodCounts {
    let mut out = total.public();
    for n in named {
        out.requests = out.requests.saturating_sub(n.requests);
        out.client_errors = out.client_errors.saturating_sub(n.client_errors);
        out.server_errors = out.server_errors.saturating_sub(n.server_errors);
    }
    if out.requests == 0 {
        out.p95_ms = None;
    }
    out
}

#[derive(Default)]
struct Entry {
    current: Counts,
    last: Counts,
}

impl Entry {
    fn score(&self) -> u64 {
        self.current.requests + self.last.requests
    }
}

struct State {
    config: TenantStatsConfig,
    period_started: Instant,
    entries: HashMap<TenantId, Entry>,
    total_current: Counts,
    total_last: Counts,
}

impl State {
    /// Starts as many new periods as have passed: after one, current becomes
    /// last; after two or more, both are empty.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.period_started);
        if elapsed < self.config.period {
            return;
        }
        let periods = (elapsed.as_nanos() / self.config.period.as_nanos().max(1)) as u32;
        self.period_started += self.config.period * periods;
        let keep_current = periods == 1;
        let roll = |current: &mut Counts, last: &mut Counts| {
            *last = if keep_current {
                std::mem::take(current)
            } else {
                Counts::default()
            };
            *current = Counts::default();
        };
        roll(&mut self.total_current, &mut self.total_last);
        for entry in self.entries.values_mut() {
            roll(&mut entry.current, &mut entry.last);
        }
        self.entries.retain(|_, e| e.score() > 0);
    }
}

/// The per-tenant traffic table; cheap to clone (shared).
#[derive(Clone)]
pub struct TenantStats(Arc<Mutex<State>>);

impl TenantStats {
    /// An empty table.
    pub fn new(config: TenantStatsConfig) -> Self {
        let config = TenantStatsConfig {
            capacity: config.capacity.max(config.top).max(1),
            period: config.period.max(Duration::from_millis(1)),
            ..config
        };
        Self(Arc::new(Mutex::new(State {
            config,
            period_started: Instant::now(),
            entries: HashMap::new(),
            total_current: Counts::default(),
            total_last: Counts::default(),
        })))
    }

    /// The configuration in force.
    pub fn config(&self) -> TenantStatsConfig {
        self.lock().config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while counting leaves counts, not broken invariants.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one answered request of `tenant`.
    pub fn record(&self, tenant: TenantId, status: u16, latency: Duration) {
        self.record_at(tenant, status, latency, Instant::now());
    }

    fn record_at(&self, tenant: TenantId, status: u16, latency: Duration, now: Instant) {
        let mut state = self.lock();
        state.roll(now);
        state.total_current.add(status, latency);
        if !state.entries.contains_key(&tenant) && state.entries.len() >= state.config.capacity {
            let quietest = state
                .entries
                .iter()
                .min_by_key(|(_, e)| e.score())
                .map(|(id, _)| *id);
            if let Some(id) = quietest {
                state.entries.remove(&id);
            }
        }
        state
            .entries
            .entry(tenant)
            .or_default()
            .current
            .add(status, latency);
    }

    /// The busiest tenants and the rest, as of now.
    pub fn snapshot(&self) -> TenantStatsSnapshot {
        self.snapshot_at(Instant::now())
    }

    fn snapshot_at(&self, now: Instant) -> TenantStatsSnapshot {
        let mut state = self.lock();
        state.roll(now);
        let mut busiest: Vec<(&TenantId, &Entry)> = state.entries.iter().collect();
        busiest.sort_by(|a, b| b.1.score().cmp(&a.1.score()).then(a.0.cmp(b.0)));
        busiest.truncate(state.config.top);
        let tenants: Vec<TenantTraffic> = busiest
            .into_iter()
            .map(|(id, e)| TenantTraffic {
                tenant_id: Some(*id),
                current: e.current.public(),
                last: e.last.public(),
            })
            .collect();
        let other = TenantTraffic {
            tenant_id: None,
            current: rest(&state.total_current, tenants.iter().map(|t| t.current)),
            last: rest(&state.total_last, tenants.iter().map(|t| t.last)),
        };
        TenantStatsSnapshot {
            period_secs: state.config.period.as_secs_f64(),
            current_elapsed_secs: now
                .saturating_duration_since(state.period_started)
                .as_secs_f64(),
            tracked: state.entries.len(),
            tenants,
            other,
        }
    }

    /// The snapshot in the Prometheus text format: gauges
    /// `tenantry_tenant_requests{tenant, period, class}` and
    /// `tenantry_tenant_request_duration_p95_seconds{tenant, period}` for the
    /// top tenants and `tenant="other"`, plus the period's length and the
    /// number of tenants tracked.
    pub fn render_prometheus(&self) -> String {
        let snap = self.snapshot();
        let mut out = String::new();
        out.push_str("# HELP tenantry_tenant_requests Requests per tenant in a stats period (current or last complete), for the top tenants by traffic; tenant=\"other\" sums the rest.\n");
        out.push_str("# TYPE tenantry_tenant_requests gauge\n");
        let rows: Vec<(String, &TenantTraffic)> = snap
            .tenants
            .iter()
            .map(|t| (t.tenant_id.map(|id| id.to_string()).unwrap_or_default(), t))
            .chain(std::iter::once(("other".to_owned(), &snap.other)))
            .collect();
        for (tenant, t) in &rows {
            for (period, c) in [("current", &t.current), ("last", &t.last)] {
                let ok = c.requests.saturating_sub(c.client_errors + c.server_errors);
                for (class, n) in [
                    ("ok", ok),
                    ("4xx", c.client_errors),
                    ("5xx", c.server_errors),
                ] {
                    let _ = writeln!(
                        out,
                        "tenantry_tenant_requests{{tenant=\"{tenant}\",period=\"{period}\",class=\"{class}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP tenantry_tenant_request_duration_p95_seconds 95th percentile of request latency per tenant in a stats period (NaN without requests).\n");
        out.push_str("# TYPE tenantry_tenant_request_duration_p95_seconds gauge\n");
        for (tenant, t) in &rows {
            for (period, c) in [("current", &t.current), ("last", &t.last)] {
                let v = c
                    .p95_ms
                    .map(|ms| format!("{}", ms / 1000.0))
                    .unwrap_or_else(|| "NaN".into());
                let _ = writeln!(
                    out,
                    "tenantry_tenant_request_duration_p95_seconds{{tenant=\"{tenant}\",period=\"{period}\"}} {v}"
                );
            }
        }
        out.push_str(
            "# HELP tenantry_tenant_stats_period_seconds Length of a per-tenant stats period.\n",
        );
        out.push_str("# TYPE tenantry_tenant_stats_period_seconds gauge\n");
        let _ = writeln!(
            out,
            "tenantry_tenant_stats_period_seconds {}",
            snap.period_secs
        );
        out.push_str(
            "# HELP tenantry_tenant_stats_tracked Tenants in the per-tenant stats table.\n",
        );
        out.push_str("# TYPE tenantry_tenant_stats_tracked gauge\n");
        let _ = writeln!(out, "tenantry_tenant_stats_tracked {}", snap.tracked);
        out
    }
}

impl std::fmt::Debug for TenantStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantStats")
            .field("config", &self.config())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u128) -> TenantId {
        TenantId::from_uuid(uuid::Uuid::from_u128(n + 1))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_busiest_tenants_are_named_and_the_rest_summed_as_other() {
        let stats = TenantStats::new(TenantStatsConfig::new(2, Duration::from_secs(60)));
        for (t, n) in [(1, 5), (2, 3), (3, 1), (4, 1)] {
            for _ in 0..n {
                stats.record(tenant(t), 200, ms(2));
            }
        }
        stats.record(tenant(2), 404, ms(1));
        stats.record(tenant(3), 503, ms(1));
        let snap = stats.snapshot();
        let named: Vec<_> = snap.tenants.iter().map(|t| t.tenant_id).collect();
        assert_eq!(named, vec![Some(tenant(1)), Some(tenant(2))]);
        assert_eq!(snap.tenants[1].current.requests, 4);
        assert_eq!(snap.tenants[1].current.client_errors, 1);
        assert_eq!(snap.other.current.requests, 3);
        assert_eq!(snap.other.current.server_errors, 1);
        assert_eq!(snap.other.current.client_errors, 0);
        assert_eq!(snap.tracked, 4);
    }

    #[test]
    fn a_top_of_zero_names_no_tenant_and_sums_every_one_as_other() {
        let stats = TenantStats::new(TenantStatsConfig::new(0, Duration::from_secs(60)));
        for t in [1, 2, 2] {
            stats.record(tenant(t), 200, ms(2));
        }
        let snap = stats.snapshot();
        assert!(snap.tenants.is_empty(), "{:?}", snap.tenants);
        assert_eq!(snap.other.current.requests, 3);
        let text = stats.render_prometheus();
        assert!(!text.contains(&tenant(1).to_string()), "{text}");
        assert!(text.contains("tenant=\"other\""), "{text}");
    }

    #[test]
    fn ten_thousand_active_tenants_keep_the_table_and_the_series_bounded() {
        let stats = TenantStats::new(TenantStatsConfig::new(10, Duration::from_secs(60)));
        // Ten busy tenants, then 10 000 tenants with one request each.
        for t in 0..10 {
            for _ in 0..50 {
                stats.record(tenant(t), 200, ms(3));
            }
        }
        for t in 100..10_100 {
            stats.record(tenant(t), 200, ms(1));
        }
        let snap = stats.snapshot();
        assert_eq!(snap.tracked, 100, "capacity bounds the table");
        let named: Vec<_> = snap.tenants.iter().map(|t| t.tenant_id).collect();
        let busy: Vec<_> = (0..10).map(|t| Some(tenant(t))).collect();
        let mut named_sorted = named.clone();
        named_sorted.sort();
        assert_eq!(named_sorted, busy, "the busy tenants survive the churn");
        assert_eq!(snap.other.current.requests, 10_000);
        let text = stats.render_prometheus();
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        // (10 + other) × 2 periods × (3 classes + p95) + period + tracked.
        assert_eq!(series, 11 * 2 * 4 + 2, "{text}");
    }

    #[test]
    fn a_period_rolls_into_last_and_two_periods_clear_both() {
        let stats = TenantStats::new(TenantStatsConfig::new(5, Duration::from_secs(10)));
        let start = Instant::now();
        stats.record_at(tenant(1), 200, ms(4), start);
        stats.record_at(tenant(1), 200, ms(4), start);
        let snap = stats.snapshot_at(start + Duration::from_secs(11));
        assert_eq!(snap.tenants[0].current.requests, 0);
        assert_eq!(snap.tenants[0].last.requests, 2);
        assert!(snap.tenants[0].last.p95_ms.unwrap() > 3.9);
        let snap = stats.snapshot_at(start + Duration::from_secs(31));
        assert!(snap.tenants.is_empty(), "idle tenants leave the table");
        assert_eq!(snap.other.last.requests, 0);
    }

    #[test]
    fn p95_follows_the_slow_tail() {
        let stats = TenantStats::new(TenantStatsConfig::default());
        for i in 0..100 {
            stats.record(tenant(1), 200, ms(if i < 90 { 1 } else { 100 }));
        }
        let p95 = stats.snapshot().tenants[0].current.p95_ms.unwrap();
        assert!((95.0..=105.0).contains(&p95), "p95 {p95}");
    }
}

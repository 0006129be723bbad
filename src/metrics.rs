//! Counters, gauges and histograms, exposed in Prometheus text format on the admin
//! listener. The hit path uses handles resolved once at start-up (a labelled lookup per
//! request costs several times more).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::activity::EndReason;
use crate::cache_status::CacheStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DurationLabels {
    pub route: &'static str,
    pub cache: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    pub outcome: &'static str,
}

/// How a render ended (`bucketfront_variant_renders_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenderOutcome {
    Rendered,
    /// The source could not be decoded or is too large (or the render panicked).
    Unprocessable,
    /// The queue was full.
    Overloaded,
    /// `render_timeout` passed, the wait included.
    TimedOut,
}

impl RenderOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RenderOutcome::Rendered => "rendered",
            RenderOutcome::Unprocessable => "unprocessable",
            RenderOutcome::Overloaded => "overloaded",
            RenderOutcome::TimedOut => "timed_out",
        }
    }
}

/// What a presign lookup found (`bucketfront_presign_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresignOutcome {
    /// A cached URL with enough life left.
    Hit,
    /// A cached URL too close to its end: signed again.
    Refresh,
    Miss,
}

impl PresignOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PresignOutcome::Hit => "hit",
            PresignOutcome::Refresh => "refresh",
            PresignOutcome::Miss => "miss",
        }
    }
}

/// How an origin call ended (`bucketfront_upstream_requests_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    Ok,
    NotModified,
    /// Failed, as the origin error names its kind (`OriginError::as_str`).
    Failed(&'static str),
}

impl UpstreamOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::NotModified => "not_modified",
            UpstreamOutcome::Failed(kind) => kind,
        }
    }
}

/// A tenant's name: as many label values as the config has tenants.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TenantLabel {
    pub tenant: String,
}

/// Per-tenant counters: requests and bytes answered, origin requests and bytes fetched.
#[derive(Default)]
struct PerTenant {
    requests: Family<TenantLabel, Counter>,
    bytes: Family<TenantLabel, Counter>,
    origin_requests: Family<TenantLabel, Counter>,
    origin_bytes: Family<TenantLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: &'static str,
}

/// One listener's connection gauges: open connections, and connections the server
/// ended, by reason. `Default` gives handles that are not exported (the demo page).
#[derive(Clone, Default)]
pub struct ConnMetrics {
    pub connections: Gauge,
    ended: [Counter; EndReason::ALL.len()],
}

impl ConnMetrics {
    /// Open connections counted in `connections`; ends by reason not exported.
    pub fn counting(connections: Gauge) -> ConnMetrics {
        ConnMetrics {
            connections,
            ..ConnMetrics::default()
        }
    }

    pub fn ended(&self, reason: EndReason) {
        self.ended[reason as usize].inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TierLabel {
    pub tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OpLabel {
    pub op: &'static str,
}

/// Hits by tier and the disk tier's state (`[cache.disk]`).
#[derive(Clone, Default)]
pub struct TierMetrics {
    pub memory_hits: Counter,
    pub disk_hits: Counter,
    /// Bytes of files the disk tier holds (each rounded up to whole 4 KiB blocks).
    pub disk_bytes: Gauge,
    pub disk_entries: Gauge,
    pub disk_writes: Counter,
    /// Objects not written because the write queue's byte budget was full or the disk
    /// was failing.
    pub disk_writes_skipped: Counter,
    /// Files whose checksum or length did not match: served from the origin, rewritten.
    pub disk_corrupt: Counter,
    pub disk_read_errors: Counter,
    pub disk_write_errors: Counter,
    /// 1 while the disk tier works, 0 while it is off or failing (memory only).
    pub disk_up: Gauge,
}

impl TierMetrics {
    fn register(registry: &mut Registry) -> TierMetrics {
        let hits = Family::<TierLabel, Counter>::default();
        registry.register(
            "cache_tier_hits",
            "Cache hits by the tier that held the object (memory, disk)",
            hits.clone(),
        );
        let errors = Family::<OpLabel, Counter>::default();
        registry.register(
            "disk_errors",
            "Disk tier I/O errors by operation (read, write)",
            errors.clone(),
        );
        // One statement each: a family's guard lives to the end of its statement.
        let memory_hits = hits.get_or_create(&TierLabel { tier: "memory" }).clone();
        let disk_hits = hits.get_or_create(&TierLabel { tier: "disk" }).clone();
        let disk_read_errors = errors.get_or_create(&OpLabel { op: "read" }).clone();
        let disk_write_errors = errors.get_or_create(&OpLabel { op: "write" }).clone();
        let t = TierMetrics {
            memory_hits,
            disk_hits,
            disk_read_errors,
            disk_write_errors,
            ..TierMetrics::default()
        };
        for (name, help, gauge) in [
            ("disk_bytes", "Bytes held by the disk tier", &t.disk_bytes),
            (
                "disk_entries",
                "Objects held by the disk tier",
                &t.disk_entries,
            ),
            (
                "disk_up",
                "1 while the disk tier works; 0 while it is off or failing (memory only)",
                &t.disk_up,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        for (name, help, counter) in [
            (
                "disk_writes",
                "Objects written to the disk tier",
                &t.disk_writes,
            ),
            (
                "disk_writes_skipped",
                "Objects not written to disk: write budget full or disk failing",
                &t.disk_writes_skipped,
            ),
            (
                "disk_corrupt",
                "Disk files whose checksum or length did not match (served from the origin)",
                &t.disk_corrupt,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        t
    }
}

/// Image variant renders (`[variants]`).
#[derive(Clone)]
pub struct RenderMetrics {
    renders: Family<OutcomeLabel, Counter>,
    pub seconds: Histogram,
    /// Requests waiting for a render ticket.
    pub waiting: Gauge,
}

impl RenderMetrics {
    fn register(registry: &mut Registry) -> RenderMetrics {
        let m = RenderMetrics {
            renders: Family::default(),
            seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            waiting: Gauge::default(),
        };
        registry.register(
            "variant_renders",
            "Variant renders by outcome (rendered, unprocessable, overloaded, timed_out)",
            m.renders.clone(),
        );
        // Every outcome from the start, at 0: a dashboard's rate() needs the series.
        for outcome in ["rendered", "unprocessable", "overloaded", "timed_out"] {
            let _ = m.renders.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "variant_render_seconds",
            "CPU time of one render on the blocking pool",
            m.seconds.clone(),
        );
        registry.register(
            "variant_renders_waiting",
            "Requests waiting for a render ticket",
            m.waiting.clone(),
        );
        m
    }

    pub fn outcome(&self, outcome: RenderOutcome) {
        let outcome = outcome.as_str();
        self.renders.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

pub struct Metrics {
    /// The public listener's connections.
    pub conn: ConnMetrics,
    pub tiers: TierMetrics,
    pub renders: RenderMetrics,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    cache_status: [Counter; 5],
    pub coalesced: Counter,
    pub fill_budget_exhausted: Counter,
    pub cache_bytes: Gauge,
    pub cache_entries: Gauge,
    upstream: Family<OutcomeLabel, Counter>,
    upstream_latency: Family<OutcomeLabel, Histogram>,
    request_duration: Family<DurationLabels, Histogram>,
    pub in_flight: Gauge,
    pub connections: Gauge,
    presign: Family<OutcomeLabel, Counter>,
    tenants: PerTenant,
    pub rss_bytes: Gauge,
    pub reloads: Counter,
    log_lines_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("bucketfront");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests by route and status", requests.clone());
        let cache = Family::<StatusLabel, Counter>::default();
        registry.register(
            "cache_lookups",
            "Requests by cache status (X-Cache)",
            cache.clone(),
        );
        let cache_status = CacheStatus::ALL.map(|s| {
            cache
                .get_or_create(&StatusLabel { status: s.as_str() })
                .clone()
        });
        let tiers = TierMetrics::register(&mut registry);
        let renders = RenderMetrics::register(&mut registry);
        let coalesced = Counter::default();
        registry.register(
            "cache_coalesced_waiters",
            "Requests that joined another's upstream fetch",
            coalesced.clone(),
        );
        let fill_budget_exhausted = Counter::default();
        registry.register(
            "cache_fill_budget_exhausted",
            "Cold objects streamed uncached because fill_memory was in use",
            fill_budget_exhausted.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register(
            "cache_bytes",
            "Weighted bytes held by the object cache",
            cache_bytes.clone(),
        );
        let cache_entries = Gauge::default();
        registry.register(
            "cache_entries",
            "Entries in the object cache",
            cache_entries.clone(),
        );
        let upstream = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "upstream_requests",
            "Origin GetObject calls by outcome",
            upstream.clone(),
        );
        let upstream_latency = Family::<OutcomeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "upstream_latency_seconds",
            "Time to the origin's response headers, by outcome",
            upstream_latency.clone(),
        );
        let request_duration = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "request_duration_seconds",
            "Time to response headers, by route and cache status",
            request_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests being answered",
            in_flight.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open",
            connections.clone(),
        );
        let ended = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "connections_ended",
            "Public connections ended by the server, by reason",
            ended.clone(),
        );
        let conn = ConnMetrics {
            connections: connections.clone(),
            ended: EndReason::ALL.map(|r| {
                ended
                    .get_or_create(&ReasonLabel { reason: r.as_str() })
                    .clone()
            }),
        };
        let presign = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "presign_cache",
            "Presigned URL lookups: hit, miss, refresh",
            presign.clone(),
        );
        let tenants = PerTenant::default();
        registry.register(
            "tenant_requests",
            "Requests for objects of each tenant's buckets",
            tenants.requests.clone(),
        );
        registry.register(
            "tenant_bytes",
            "Bytes answered for each tenant (Content-Length of the answers)",
            tenants.bytes.clone(),
        );
        registry.register(
            "tenant_origin_requests",
            "Origin GETs made for each tenant",
            tenants.origin_requests.clone(),
        );
        registry.register(
            "tenant_origin_bytes",
            "Bytes the origin announced for each tenant's GETs (Content-Length)",
            tenants.origin_bytes.clone(),
        );
        let rss_bytes = Gauge::default();
        registry.register(
            "resident_memory_bytes",
            "Resident set size of the process",
            rss_bytes.clone(),
        );
        let reloads = Counter::default();
        registry.register(
            "config_reloads",
            "Configuration reloads applied",
            reloads.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stdout did not keep up (see logging::BUFFER_BYTES)",
            log_lines_dropped.clone(),
        );
        Metrics {
            conn,
            tiers,
            renders,
            reloads,
            log_lines_dropped,
            registry,
            requests,
            cache_status,
            coalesced,
            fill_budget_exhausted,
            cache_bytes,
            cache_entries,
            upstream,
            upstream_latency,
            request_duration,
            in_flight,
            connections,
            presign,
            tenants,
            rss_bytes,
        }
    }

    pub fn request(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    pub fn cache(&self, status: CacheStatus) {
        self.cache_status[status as usize].inc();
    }

    pub fn duration(&self, route: &'static str, cache: &'static str, seconds: f64) {
        self.request_duration
            .get_or_create(&DurationLabels { route, cache })
            .observe(seconds);
    }

    pub fn upstream(&self, outcome: UpstreamOutcome, seconds: f64) {
        let outcome = outcome.as_str();
        self.upstream.get_or_create(&OutcomeLabel { outcome }).inc();
        self.upstream_latency
            .get_or_create(&OutcomeLabel { outcome })
            .observe(seconds);
    }

    /// One answer for `tenant`'s objects, of `bytes`.
    pub fn tenant_request(&self, tenant: &str, bytes: u64) {
        let label = TenantLabel {
            tenant: tenant.to_string(),
        };
        self.tenants.requests.get_or_create(&label).inc();
        self.tenants.bytes.get_or_create(&label).inc_by(bytes);
    }

    /// One origin GET for `tenant`, announcing `bytes`.
    pub fn tenant_origin(&self, tenant: &str, bytes: u64) {
        let label = TenantLabel {
            tenant: tenant.to_string(),
        };
        self.tenants.origin_requests.get_or_create(&label).inc();
        self.tenant_origin_bytes(tenant, bytes);
    }

    /// Origin bytes for `tenant` that no length announced (a body of unknown length,
    /// counted at its end).
    pub fn tenant_origin_bytes(&self, tenant: &str, bytes: u64) {
        let label = TenantLabel {
            tenant: tenant.to_string(),
        };
        self.tenants
            .origin_bytes
            .get_or_create(&label)
            .inc_by(bytes);
    }

    pub fn presign(&self, outcome: PresignOutcome) {
        let outcome = outcome.as_str();
        self.presign.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// The text exposition; `rss` is refreshed first.
    pub fn render(&self) -> String {
        if let Some(rss) = resident_bytes() {
            self.rss_bytes.set(rss as i64);
        }
        let dropped = crate::logging::dropped_lines();
        let counted = self.log_lines_dropped.get();
        if dropped > counted {
            self.log_lines_dropped.inc_by(dropped - counted);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Resident set size from `/proc/self/statm` (Linux).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

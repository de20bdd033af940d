//! The YAML configuration file (docs/api.md, "Configuration"): the original broker's format loads unchanged
//! (`Storage.path`, `Queues.<name>.urls`, keys in any of the usual capitalisations), and the full
//! format adds the broker's settings and every queue setting. Bootstrap applies the queues and
//! subscribers it names, idempotently: starting again with the same file changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use space::settings::{IdempotencyPatch, LimitsPatch, RetentionPatch, RetryPatch};
use space::{
    HandlerKind, OnParentDead, QueueError, SettingsPatch, Space, Span, SubscriberError,
    SubscriberSpec, SubscriberUpdate,
};

/// The file, as written. Every field is optional: flags and environment may supply it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default, alias = "Listen", alias = "LISTEN")]
    pub listen: Option<String>,
    #[serde(default, alias = "Storage", alias = "STORAGE")]
    pub storage: Option<StorageSection>,
    #[serde(default, alias = "Limits", alias = "LIMITS")]
    pub limits: Option<GlobalLimits>,
    #[serde(default, alias = "Shutdown_grace")]
    pub shutdown_grace: Option<Span>,
    #[serde(default, alias = "Queues", alias = "QUEUES")]
    pub queues: BTreeMap<QueueName, QueueSection>,
    #[serde(default, alias = "Auth")]
    pub auth: Option<AuthSection>,
    #[serde(default, alias = "Endpoints")]
    pub endpoints: Option<EndpointsSection>,
    #[serde(default, alias = "Tls", alias = "TLS")]
    pub tls: Option<TlsSection>,
    #[serde(default, alias = "Server")]
    pub server: Option<ServerSection>,
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
}

/// A cluster node's place (`serve --cluster`): which node this is, every node of the first
/// membership, the shared secret of the peer transport.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    pub node_id: Option<u64>,
    /// Node id → the address its API and peers are served on, e.g. `http://10.0.0.1:10000`.
    #[serde(default)]
    pub nodes: BTreeMap<u64, String>,
    pub secret: Option<String>,
    /// How often the leader tells the others it leads.
    pub heartbeat: Option<Span>,
    /// A follower that hears no leader for this long (up to twice as long, at random) starts
    /// an election.
    pub election_timeout: Option<Span>,
    /// A snapshot of the state is taken after this many entries of the replicated log, which
    /// then keeps a quarter of that many before it and drops the rest.
    pub snapshot_entries: Option<u64>,
}

impl std::fmt::Debug for ClusterSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("ClusterSection")
            .field("node_id", &self.node_id)
            .field("nodes", &self.nodes)
            .field("heartbeat", &self.heartbeat)
            .field("election_timeout", &self.election_timeout)
            .field("snapshot_entries", &self.snapshot_entries)
            .finish_non_exhaustive()
    }
}

/// How the API's server treats connections; each has a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Open connections at once; at the cap, new ones wait to be accepted.
    pub max_connections: Option<usize>,
    /// How long a request's headers (or a TLS handshake) may take to arrive.
    pub header_timeout: Option<Span>,
    /// How long a request's body may take to arrive, from its headers.
    pub body_timeout: Option<Span>,
    /// A connection that moves no byte for this long is closed.
    pub idle_timeout: Option<Span>,
}

/// HTTPS on the API: PEM files of the certificate chain and its private key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default)]
    pub tokens: Vec<crate::auth::Token>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsSection {
    pub allow: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default, alias = "Path", alias = "PATH")]
    pub path: Option<PathBuf>,
    /// `always`, `interval` or `never`.
    #[serde(default, alias = "Fsync")]
    pub fsync: Option<String>,
    #[serde(default, alias = "Fsync_interval")]
    pub fsync_interval: Option<Span>,
    /// Target size of a log segment, in bytes: what reclaiming frees in one step.
    #[serde(default)]
    pub segment_bytes: Option<u64>,
    /// How often the broker checks whether a checkpoint (and reclaiming the segments before
    /// it) is due.
    #[serde(default)]
    pub reclaim_interval: Option<Span>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalLimits {
    pub max_body: Option<usize>,
}

/// A queue name, checked while the file is read (so that an error has its line and column).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct QueueName(pub String);

impl TryFrom<String> for QueueName {
    type Error = String;

    fn try_from(name: String) -> Result<QueueName, String> {
        space::validate_queue_name(&name).map_err(|e| e.to_string())?;
        Ok(QueueName(name))
    }
}

impl std::ops::Deref for QueueName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A queue's section, checked while the file is read: settings within their bounds, known
/// handlers and policies.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "RawQueueSection")]
pub struct QueueSection {
    pub urls: Vec<String>,
    pub subscribers: Vec<SubscriberSection>,
    pub patch: SettingsPatch,
}

impl TryFrom<RawQueueSection> for QueueSection {
    type Error = String;

    fn try_from(raw: RawQueueSection) -> Result<QueueSection, String> {
        let patch = raw.patch();
        space::QueueSettings::default()
            .merged(&patch)
            .map_err(|e| e.to_string())?;
        Ok(QueueSection {
            urls: raw.urls,
            subscribers: raw.subscribers,
            patch,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueueSection {
    /// The original format: endpoints that become `legacy` subscribers.
    #[serde(default, alias = "Urls", alias = "URLS", alias = "URLs")]
    pub urls: Vec<String>,
    #[serde(default, alias = "Subscribers")]
    pub subscribers: Vec<SubscriberSection>,
    pub retry: Option<RetryPatch>,
    pub delivery_timeout: Option<Span>,
    pub retention: Option<RetentionPatch>,
    pub limits: Option<LimitsPatch>,
    pub on_parent_dead: Option<PolicyName>,
    pub idempotency: Option<IdempotencyPatch>,
    pub disable_after: Option<Span>,
    pub causality: Option<space::Causality>,
}

/// An `on_parent_dead` value, checked where it is written (so that an error has its line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PolicyName(pub OnParentDead);

impl TryFrom<String> for PolicyName {
    type Error = String;

    fn try_from(name: String) -> Result<PolicyName, String> {
        match name.as_str() {
            "wait" => Ok(PolicyName(OnParentDead::Wait)),
            "dead_letter" => Ok(PolicyName(OnParentDead::DeadLetter)),
            "deliver" => Ok(PolicyName(OnParentDead::Deliver)),
            other => Err(format!(
                "unknown on_parent_dead {other:?}: use wait, dead_letter or deliver"
            )),
        }
    }
}

/// A handler name, checked where it is written (so that an error has its line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HandlerName(pub HandlerKind);

impl TryFrom<String> for HandlerName {
    type Error = String;

    fn try_from(name: String) -> Result<HandlerName, String> {
        HandlerKind::parse(&name)
            .map(HandlerName)
            .ok_or_else(|| format!("unknown handler {name:?}: use webhook or legacy"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberSection {
    pub endpoint: String,
    pub handler: Option<HandlerName>,
    pub secret: Option<String>,
    pub max_in_flight: Option<u32>,
    pub batch: Option<crate::views::Batch>,
    /// Headers sent with every request to it; values are never logged or shown.
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// At most this many messages a second.
    pub rate_limit: Option<space::RateLimit>,
    /// The event types it takes (exact names, or prefixes followed by `*`).
    pub types: Option<Vec<String>>,
}

impl std::fmt::Debug for SubscriberSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberSection")
            .field("endpoint", &self.endpoint)
            .field("handler", &self.handler)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("max_in_flight", &self.max_in_flight)
            .field("batch", &self.batch)
            .field(
                "headers",
                &self.headers.as_ref().map(|h| h.keys().collect::<Vec<_>>()),
            )
            .field("rate_limit", &self.rate_limit)
            .field("types", &self.types)
            .finish()
    }
}

/// Why a configuration file was refused: `FILE:LINE:COLUMN: reason` when the place is known.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Reads and parses a configuration file.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
    parse(path, &text)
}

/// Parses configuration text; `path` only names it in errors.
pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    let config: FileConfig = serde_saphyr::from_str(text).map_err(|e| {
        let place = e
            .location()
            .map(|l| format!("{}:{}:{}", path.display(), l.line(), l.column()))
            .unwrap_or_else(|| path.display().to_string());
        ConfigError(format!("{place}: {e}"))
    })?;
    if let Some(rules) = config.endpoints.as_ref().and_then(|e| e.allow.as_ref()) {
        space::endpoints::AllowList::parse(rules)
            .map_err(|e| ConfigError(format!("{}: endpoints.allow: {e}", path.display())))?;
    }
    if config.auth.as_ref().is_some_and(|a| {
        a.tokens
            .iter()
            .any(|t| t.token.len() < crate::limits::TOKEN_BYTES_MIN)
    }) {
        return Err(ConfigError(format!(
            "{}: auth.tokens: every token needs at least {} characters",
            path.display(),
            crate::limits::TOKEN_BYTES_MIN
        )));
    }
    Ok(config)
}

impl RawQueueSection {
    /// The queue settings the section sets.
    pub fn patch(&self) -> SettingsPatch {
        SettingsPatch {
            retry: self.retry.clone(),
            delivery_timeout: self.delivery_timeout,
            retention: self.retention.clone(),
            limits: self.limits.clone(),
            on_parent_dead: self.on_parent_dead.map(|p| p.0),
            idempotency: self.idempotency.clone(),
            disable_after: self.disable_after,
            causality: self.causality,
        }
    }
}

/// Why the queues and subscribers of the file could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("queue {queue:?}: {source}")]
    Queue {
        queue: String,
        #[source]
        source: QueueError,
    },
    #[error("queue {queue:?}, subscriber {endpoint:?}: {source}")]
    Subscriber {
        queue: String,
        endpoint: String,
        #[source]
        source: SubscriberError,
    },
}

/// Creates or updates the queues and subscribers the file names. A queue whose settings
/// already match, and a subscriber whose endpoint is already there, are left alone.
pub async fn bootstrap(space: &Space, config: &FileConfig) -> Result<(), BootstrapError> {
    for (name, q) in &config.queues {
        let name: &str = name;
        let patch = &q.patch;
        let queue_error = |source| BootstrapError::Queue {
            queue: name.to_owned(),
            source,
        };
        let wanted = match space.queue_info(name) {
            Ok(info) => {
                let merged = info
                    .settings
                    .merged(patch)
                    .map_err(|e| queue_error(e.into()))?;
                merged != info.settings
            }
            Err(_) => true,
        };
        if wanted {
            space.put_queue(name, patch).await.map_err(queue_error)?;
        }
        let legacy = q.urls.iter().map(|url| SubscriberSpec {
            endpoint: url.clone(),
            handler: HandlerKind::Legacy,
            secret: None,
            max_in_flight: space::limits::MAX_IN_FLIGHT_DEFAULT,
            ..Default::default()
        });
        let full = q.subscribers.iter().map(|s| SubscriberSpec {
            endpoint: s.endpoint.clone(),
            handler: s.handler.map_or(HandlerKind::Webhook, |h| h.0),
            secret: s.secret.clone(),
            max_in_flight: s
                .max_in_flight
                .unwrap_or(space::limits::MAX_IN_FLIGHT_DEFAULT),
            batch: s.batch.unwrap_or_default().batching(),
            headers: crate::views::own_headers(s.headers.clone()),
            rate_limit: s.rate_limit,
            types: s.types.clone(),
            ..Default::default()
        });
        for spec in legacy.chain(full) {
            let endpoint = spec.endpoint.clone();
            let failed = |source| BootstrapError::Subscriber {
                queue: name.to_owned(),
                endpoint: endpoint.clone(),
                source,
            };
            let (rate_limit, types) = (spec.rate_limit, spec.types.clone());
            let (info, _) = space.add_subscriber(name, spec).await.map_err(failed)?;
            // A subscriber that was there keeps its settings, but its rate limit and types
            // follow the file: it is how an operator changes them.
            let mut changes = Vec::new();
            if info.rate_limit != rate_limit {
                changes.push(SubscriberUpdate::RateLimit(rate_limit));
            }
            if info.types != types {
                changes.push(SubscriberUpdate::Types(types));
            }
            if !changes.is_empty() {
                space
                    .update_subscriber_with(name, info.id, changes)
                    .await
                    .map_err(failed)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<FileConfig, ConfigError> {
        parse(Path::new("config.yml"), text)
    }

    #[test]
    fn the_original_format_loads_unchanged() {
        let c = p("Storage:\n  path: \"/var/lib/syncbrok/\"\nQueues:\n  simple:\n    urls:\n      - \"http://localhost:20000/\"\n").unwrap();
        assert_eq!(
            c.storage.unwrap().path.unwrap(),
            PathBuf::from("/var/lib/syncbrok/")
        );
        let simple = QueueName("simple".into());
        assert_eq!(c.queues[&simple].urls, vec!["http://localhost:20000/"]);
        let lower =
            p("storage:\n  path: /x\nqueues:\n  Simple:\n    URLS: [\"http://a/\"]\n").unwrap();
        assert!(
            lower.queues.contains_key(&QueueName("Simple".into())),
            "queue names keep their case"
        );
    }

    #[test]
    fn the_full_format_sets_everything() {
        let c = p(r#"
listen: "127.0.0.1:10001"
storage: {path: ./data, fsync: interval, fsync_interval: 10ms}
limits: {max_body: 2048}
shutdown_grace: 3s
queues:
  orders:
    subscribers:
      - {endpoint: "http://127.0.0.1:9000/", secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", max_in_flight: 8}
    retry: {max_attempts: 3, initial_backoff: 50ms}
    retention: {delivered: 1h}
    limits: {max_messages: 1000}
    on_parent_dead: dead_letter
"#)
        .unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:10001"));
        assert_eq!(c.limits.unwrap().max_body, Some(2048));
        let q = &c.queues[&QueueName("orders".into())];
        assert_eq!(q.patch.on_parent_dead, Some(OnParentDead::DeadLetter));
        assert_eq!(q.subscribers[0].max_in_flight, Some(8));
    }

    #[test]
    fn a_bad_file_names_file_line_and_column() {
        let e = p("queues:\n  orders:\n    retry: {max_attempts: many}\n").unwrap_err();
        assert!(e.0.starts_with("config.yml:3:"), "{}", e.0);
        let e = p("queues:\n  orders:\n    retries: {}\n").unwrap_err();
        assert!(e.0.starts_with("config.yml:3:"), "{}", e.0);
        let e = p("queues:\n  orders:\n    delivery_timeout: soon\n").unwrap_err();
        assert!(e.0.starts_with("config.yml:3:"), "{}", e.0);
        let e = p("queues:\n  orders:\n    on_parent_dead: ignore\n").unwrap_err();
        assert!(
            e.0.starts_with("config.yml:3:") && e.0.contains("on_parent_dead"),
            "{}",
            e.0
        );
        let e = p("queues:\n  orders:\n    delivery_timeout: 1h\n").unwrap_err();
        assert!(
            e.0.starts_with("config.yml:3:") && e.0.contains("delivery_timeout"),
            "{}",
            e.0
        );
        let e =
            p("queues:\n  orders:\n    subscribers: [{endpoint: x, handler: sms}]\n").unwrap_err();
        assert!(
            e.0.starts_with("config.yml:3:") && e.0.contains("sms"),
            "{}",
            e.0
        );
        // A bad value is reported where it is written, not at the key that encloses it.
        let e = p("queues:\n  orders:\n    subscribers:\n      - endpoint: http://x/\n        handler: sms\n")
            .unwrap_err();
        assert!(
            e.0.starts_with("config.yml:5:") && e.0.contains("sms"),
            "{}",
            e.0
        );
        let e =
            p("queues:\n  orders:\n    retry:\n      max_attempts: 3\n    on_parent_dead: later\n")
                .unwrap_err();
        assert!(
            e.0.starts_with("config.yml:5:") && e.0.contains("later"),
            "{}",
            e.0
        );
        let e = p("queues:\n  bad/name: {}\n").unwrap_err();
        assert!(
            e.0.starts_with("config.yml:2:") && e.0.contains("bad/name"),
            "{}",
            e.0
        );
        let e = p("tls:\n  cert: x\n").unwrap_err();
        assert!(e.0.contains("key"), "{}", e.0);
        let e = p("auth:\n  tokens: [{token: short, role: admin}]\n").unwrap_err();
        assert!(e.0.contains("at least"), "{}", e.0);
        let e = p("auth:\n  tokens: [{token: long-enough-token-1, role: root}]\n").unwrap_err();
        assert!(e.0.starts_with("config.yml:2:"), "{}", e.0);
        let e = p("endpoints:\n  allow: [\"10.0.0.0/40\"]\n").unwrap_err();
        assert!(e.0.contains("endpoints.allow"), "{}", e.0);
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_commented_example_file_is_valid() {
        let text = include_str!("../../../syncbrok.example.yml");
        let c = super::parse(std::path::Path::new("syncbrok.example.yml"), text).unwrap();
        assert_eq!(c.queues.len(), 2);
        let orders = c
            .queues
            .values()
            .find(|q| !q.subscribers.is_empty())
            .unwrap();
        let batched = orders.subscribers[1].batch.unwrap().batching();
        assert_eq!((batched.max_messages, batched.max_bytes), (64, 1 << 20));
        let own = crate::views::own_headers(orders.subscribers[1].headers.clone());
        assert_eq!(
            own,
            vec![(
                "authorization".to_owned(),
                "Bearer receiver-token".to_owned()
            )]
        );
        let limit = orders.subscribers[1].rate_limit.unwrap();
        assert_eq!(limit.per_second, 200);
        let settings = space::QueueSettings::default()
            .merged(&orders.patch)
            .unwrap();
        assert_eq!(settings.disable_after, space::Span::secs(3 * 86_400));
    }
}

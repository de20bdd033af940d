//! Queue settings (docs/api.md, "Configuration"): names and defaults as in the YAML and JSON the user writes.
//! Durations are strings such as `"50ms"`, `"30s"`, `"5m"`, `"7d"`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::OnParentDead;

/// A duration written as a number and a unit: `ms`, `s`, `m`, `h` or `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span(pub Duration);

impl Span {
    pub const fn millis(ms: u64) -> Span {
        Span(Duration::from_millis(ms))
    }

    pub const fn secs(s: u64) -> Span {
        Span(Duration::from_secs(s))
    }

    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected a whole number and a unit (ms, s, m, h, d), e.g. \"500ms\" or \"7d\""
)]
pub struct SpanError {
    pub input: String,
}

impl std::str::FromStr for Span {
    type Err = SpanError;

    fn from_str(s: &str) -> Result<Span, SpanError> {
        let err = || SpanError {
            input: s.to_owned(),
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| err())?;
        let ms_per_unit: u64 = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        let ms = n.checked_mul(ms_per_unit).ok_or_else(err)?;
        Ok(Span::millis(ms))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        for (unit, per) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms.is_multiple_of(per) {
                return write!(f, "{}{unit}", ms / per);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Retries of failed deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts per subscriber, the first included; 0 means unlimited.
    pub max_attempts: u32,
    pub initial_backoff: Span,
    pub max_backoff: Span,
}

/// How long finished messages stay readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub delivered: Span,
    pub dead: Span,
}

/// Limits on undelivered messages; a publish that would pass one is refused (429).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Idempotency {
    /// How long an `Idempotency-Key` is remembered.
    pub window: Span,
    /// Most keys a queue remembers; past it the oldest are forgotten first.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
}

fn default_max_keys() -> u64 {
    bounds::IDEMPOTENCY_KEYS_DEFAULT
}

/// Every setting of a queue, defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    pub retry: Retry,
    /// Per attempt.
    pub delivery_timeout: Span,
    pub retention: Retention,
    pub limits: Limits,
    #[serde(with = "on_parent_dead_name")]
    pub on_parent_dead: OnParentDead,
    pub idempotency: Idempotency,
    /// A subscriber whose every attempt has failed for this long is disabled; 0 = never.
    /// (Settings written before it existed read with the default.)
    #[serde(default = "default_disable_after")]
    pub disable_after: Span,
    /// `global` or `per_subscriber` (settings written before it existed read as `global`).
    #[serde(default)]
    pub causality: crate::model::Causality,
}

fn default_disable_after() -> Span {
    Span::secs(3 * 86_400)
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            retry: Retry {
                max_attempts: 20,
                initial_backoff: Span::millis(500),
                max_backoff: Span::secs(5 * 60),
            },
            delivery_timeout: Span::secs(30),
            retention: Retention {
                delivered: Span::millis(0),
                dead: Span::secs(7 * 86_400),
            },
            limits: Limits::default(),
            on_parent_dead: OnParentDead::Wait,
            idempotency: Idempotency {
                window: Span::secs(3_600),
                max_keys: bounds::IDEMPOTENCY_KEYS_DEFAULT,
            },
            disable_after: default_disable_after(),
            causality: crate::model::Causality::Global,
        }
    }
}

/// A partial update, as the API and YAML take it: every field optional, nested ones too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub retry: Option<RetryPatch>,
    pub delivery_timeout: Option<Span>,
    pub retention: Option<RetentionPatch>,
    pub limits: Option<LimitsPatch>,
    #[serde(default, with = "on_parent_dead_name::option")]
    pub on_parent_dead: Option<OnParentDead>,
    pub idempotency: Option<IdempotencyPatch>,
    pub disable_after: Option<Span>,
    pub causality: Option<crate::model::Causality>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPatch {
    pub max_attempts: Option<u32>,
    pub initial_backoff: Option<Span>,
    pub max_backoff: Option<Span>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPatch {
    pub delivered: Option<Span>,
    pub dead: Option<Span>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyPatch {
    pub window: Option<Span>,
    pub max_keys: Option<u64>,
}

/// Bounds on settings, each with its reason.
pub mod bounds {
    use super::Span;
    /// Retrying more often than this hammers a failing endpoint for no gain.
    pub const BACKOFF_MIN: Span = Span::millis(1);
    /// A day: longer backoffs are better expressed as dead letters and a redrive.
    pub const BACKOFF_MAX: Span = Span::secs(86_400);
    /// An attempt needs at least this long to mean anything; at most ten minutes holds a
    /// slot of `max_in_flight`.
    pub const DELIVERY_TIMEOUT_MIN: Span = Span::millis(1);
    pub const DELIVERY_TIMEOUT_MAX: Span = Span::secs(600);
    /// Ten years: longer retention is indistinguishable from forever.
    pub const RETENTION_MAX: Span = Span::secs(10 * 365 * 86_400);
    /// Keys are kept in memory for the whole window; a week bounds that.
    pub const IDEMPOTENCY_WINDOW_MAX: Span = Span::secs(7 * 86_400);
    /// Keys a queue remembers by default (each up to 256 bytes plus ~100 of bookkeeping).
    pub const IDEMPOTENCY_KEYS_DEFAULT: u64 = 1_000_000;
    /// Most keys a queue may be set to remember: about 3.5 GB of memory at the longest keys.
    pub const IDEMPOTENCY_KEYS_MAX: u64 = 10_000_000;
    /// A year of nothing but failures: past that, "never" (0) says it better.
    pub const DISABLE_AFTER_MAX: Span = Span::secs(365 * 86_400);
}

/// Why settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SettingsError {
    pub field: &'static str,
    pub reason: String,
}

impl QueueSettings {
    /// These settings with a patch applied: fields left out keep their values.
    pub fn merged(&self, p: &SettingsPatch) -> Result<QueueSettings, SettingsError> {
        let mut s = *self;
        if let Some(r) = &p.retry {
            s.retry.max_attempts = r.max_attempts.unwrap_or(s.retry.max_attempts);
            s.retry.initial_backoff = r.initial_backoff.unwrap_or(s.retry.initial_backoff);
            s.retry.max_backoff = r.max_backoff.unwrap_or(s.retry.max_backoff);
        }
        s.delivery_timeout = p.delivery_timeout.unwrap_or(s.delivery_timeout);
        if let Some(r) = &p.retention {
            s.retention.delivered = r.delivered.unwrap_or(s.retention.delivered);
            s.retention.dead = r.dead.unwrap_or(s.retention.dead);
        }
        if let Some(l) = &p.limits {
            if l.max_messages.is_some() {
                s.limits.max_messages = l.max_messages;
            }
            if l.max_bytes.is_some() {
                s.limits.max_bytes = l.max_bytes;
            }
        }
        s.on_parent_dead = p.on_parent_dead.unwrap_or(s.on_parent_dead);
        s.causality = p.causality.unwrap_or(s.causality);
        s.disable_after = p.disable_after.unwrap_or(s.disable_after);
        if let Some(i) = &p.idempotency {
            s.idempotency.window = i.window.unwrap_or(s.idempotency.window);
            s.idempotency.max_keys = i.max_keys.unwrap_or(s.idempotency.max_keys);
        }
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        use bounds::*;
        let within = |field, v: Span, lo: Span, hi: Span| {
            if v < lo || v > hi {
                Err(SettingsError {
                    field,
                    reason: format!("{v} is outside {lo}..={hi}"),
                })
            } else {
                Ok(())
            }
        };
        within(
            "retry.initial_backoff",
            self.retry.initial_backoff,
            BACKOFF_MIN,
            BACKOFF_MAX,
        )?;
        within(
            "retry.max_backoff",
            self.retry.max_backoff,
            BACKOFF_MIN,
            BACKOFF_MAX,
        )?;
        if self.retry.max_backoff < self.retry.initial_backoff {
            return Err(SettingsError {
                field: "retry.max_backoff",
                reason: format!(
                    "{} is below retry.initial_backoff ({})",
                    self.retry.max_backoff, self.retry.initial_backoff
                ),
            });
        }
        within(
            "delivery_timeout",
            self.delivery_timeout,
            DELIVERY_TIMEOUT_MIN,
            DELIVERY_TIMEOUT_MAX,
        )?;
        within(
            "retention.delivered",
            self.retention.delivered,
            Span::millis(0),
            RETENTION_MAX,
        )?;
        within(
            "retention.dead",
            self.retention.dead,
            Span::millis(0),
            RETENTION_MAX,
        )?;
        within(
            "disable_after",
            self.disable_after,
            Span::millis(0),
            DISABLE_AFTER_MAX,
        )?;
        within(
            "idempotency.window",
            self.idempotency.window,
            Span::millis(0),
            IDEMPOTENCY_WINDOW_MAX,
        )?;
        if !(1..=IDEMPOTENCY_KEYS_MAX).contains(&self.idempotency.max_keys) {
            return Err(SettingsError {
                field: "idempotency.max_keys",
                reason: format!(
                    "{} is outside 1..={IDEMPOTENCY_KEYS_MAX}",
                    self.idempotency.max_keys
                ),
            });
        }
        Ok(())
    }
}

/// `on_parent_dead` as the user writes it: `wait`, `dead_letter`, `deliver`.
mod on_parent_dead_name {
    use super::*;

    pub fn name(p: OnParentDead) -> &'static str {
        match p {
            OnParentDead::Wait => "wait",
            OnParentDead::DeadLetter => "dead_letter",
            OnParentDead::Deliver => "deliver",
        }
    }

    pub fn parse<E: serde::de::Error>(s: &str) -> Result<OnParentDead, E> {
        match s {
            "wait" => Ok(OnParentDead::Wait),
            "dead_letter" => Ok(OnParentDead::DeadLetter),
            "deliver" => Ok(OnParentDead::Deliver),
            other => Err(E::custom(format!(
                "unknown on_parent_dead {other:?}: expected wait, dead_letter or deliver"
            ))),
        }
    }

    pub fn serialize<S: Serializer>(p: &OnParentDead, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*p))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OnParentDead, D::Error> {
        parse(&String::deserialize(d)?)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(p: &Option<OnParentDead>, s: S) -> Result<S::Ok, S::Error> {
            match p {
                Some(p) => s.serialize_some(name(*p)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OnParentDead>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| parse(&s))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print_as_users_write_them() {
        for (text, ms) in [
            ("50ms", 50),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("7d", 604_800_000),
            ("0s", 0),
        ] {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.as_millis(), ms, "{text}");
        }
        assert_eq!(Span::millis(1500).to_string(), "1500ms");
        assert_eq!(Span::secs(300).to_string(), "5m");
        assert_eq!(Span::millis(0).to_string(), "0ms");
        for bad in [
            "",
            "5",
            "ms",
            "-1s",
            "1.5s",
            "5 weeks",
            "99999999999999999999d",
        ] {
            assert!(bad.parse::<Span>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn settings_roundtrip_through_json_with_spec_names() {
        let s = QueueSettings::default();
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["retry"]["initial_backoff"], "500ms");
        assert_eq!(json["retry"]["max_backoff"], "5m");
        assert_eq!(json["delivery_timeout"], "30s");
        assert_eq!(json["retention"]["dead"], "7d");
        assert_eq!(json["on_parent_dead"], "wait");
        assert_eq!(json["idempotency"]["window"], "1h");
        let back: QueueSettings = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn a_patch_merges_nested_fields_and_keeps_the_rest() {
        let patch: SettingsPatch = serde_json::from_str(
            r#"{"retry": {"max_attempts": 3, "initial_backoff": "50ms", "max_backoff": "1s"},
                "delivery_timeout": "2s", "retention": {"delivered": "1h"},
                "limits": {"max_messages": 1000}, "on_parent_dead": "dead_letter"}"#,
        )
        .unwrap();
        let s = QueueSettings::default().merged(&patch).unwrap();
        assert_eq!(s.retry.max_attempts, 3);
        assert_eq!(s.retry.max_backoff, Span::secs(1));
        assert_eq!(s.retention.delivered, Span::secs(3600));
        assert_eq!(s.retention.dead, Span::secs(7 * 86_400), "kept");
        assert_eq!(s.limits.max_messages, Some(1000));
        assert_eq!(s.on_parent_dead, OnParentDead::DeadLetter);
        let again = s
            .merged(&serde_json::from_str(r#"{"retry": {"max_attempts": 5}}"#).unwrap())
            .unwrap();
        assert_eq!(again.retry.max_attempts, 5);
        assert_eq!(again.retry.initial_backoff, Span::millis(50), "kept");
    }

    #[test]
    fn bad_settings_name_the_field() {
        let err = QueueSettings::default()
            .merged(&serde_json::from_str(r#"{"retry": {"max_backoff": "1ms"}}"#).unwrap())
            .unwrap_err();
        assert_eq!(err.field, "retry.max_backoff");
        let err = QueueSettings::default()
            .merged(&serde_json::from_str(r#"{"delivery_timeout": "11m"}"#).unwrap())
            .unwrap_err();
        assert_eq!(err.field, "delivery_timeout");
        assert!(serde_json::from_str::<SettingsPatch>(r#"{"on_parent_dead": "ignore"}"#).is_err());
        assert!(serde_json::from_str::<SettingsPatch>(r#"{"retries": {}}"#).is_err());
    }
}

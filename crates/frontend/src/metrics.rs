//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4). Written by hand:
//! the format is a few lines of text, not worth a dependency.

use std::fmt::Write;

use space::Space;
use space::latency::{BUCKETS_S, HistogramSnapshot};

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One histogram's series: a bucket per bound (cumulative), `+Inf`, the sum and the count.
/// `labels` is `name="value",…` without braces.
fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    for (bound, n) in BUCKETS_S.iter().zip(&h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(
        out,
        "{name}_sum{{{labels}}} {}",
        h.sum_us as f64 / 1_000_000.0
    );
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// The latency histograms and each subscriber's gauges.
fn latencies(out: &mut String, queues: &[space::QueueInfo]) {
    type Pick = fn(&space::QueueInfo) -> &HistogramSnapshot;
    for (name, help, pick) in [
        (
            "syncbrok_publish_to_first_delivery_seconds",
            "From a message's publish to its first acknowledgement by a subscriber, since start.",
            (|q| &q.first_delivery) as Pick,
        ),
        (
            "syncbrok_parent_ack_to_child_release_seconds",
            "From the acknowledgement completing a parent to each waiting child released, since start.",
            |q| &q.release,
        ),
    ] {
        family(out, name, "histogram", help);
        for q in queues {
            histogram(out, name, &format!("queue=\"{}\"", q.name), pick(q));
        }
    }
    family(
        out,
        "syncbrok_attempt_duration_seconds",
        "histogram",
        "How long delivery attempts took (request to answer; a batch counts once), per subscriber, since start.",
    );
    for q in queues {
        for s in &q.subscribers {
            let labels = format!("queue=\"{}\",subscriber=\"{}\"", q.name, s.id);
            histogram(
                out,
                "syncbrok_attempt_duration_seconds",
                &labels,
                &s.attempt_duration,
            );
        }
    }
    for (name, help, value) in [
        (
            "syncbrok_subscriber_in_flight",
            "Delivery requests of a subscriber on the wire.",
            (|s: &space::SubscriberInfo| u64::from(s.in_flight))
                as fn(&space::SubscriberInfo) -> u64,
        ),
        (
            "syncbrok_subscriber_consecutive_failures",
            "Failed attempts of a subscriber since its last acknowledgement.",
            |s: &space::SubscriberInfo| u64::from(s.consecutive_failures),
        ),
    ] {
        family(out, name, "gauge", help);
        for q in queues {
            for s in &q.subscribers {
                let _ = writeln!(
                    out,
                    "{name}{{queue=\"{}\",subscriber=\"{}\"}} {}",
                    q.name,
                    s.id,
                    value(s)
                );
            }
        }
    }
}

/// The metrics text. Queue names need no escaping: they are `[A-Za-z0-9._-]`.
pub fn render(space: &Space) -> String {
    let mut out = String::new();
    let t = space.totals();
    for (name, help, value) in [
        (
            "syncbrok_messages_published_total",
            "Messages accepted (durable) since start.",
            t.published,
        ),
        (
            "syncbrok_deliveries_acked_total",
            "Deliveries acknowledged by subscribers since start.",
            t.acked,
        ),
        (
            "syncbrok_delivery_attempts_failed_total",
            "Delivery attempts that failed (status, connection, timeout) since start.",
            t.failed_attempts,
        ),
        (
            "syncbrok_dead_letters_total",
            "Deliveries given up after their last attempt since start.",
            t.dead_lettered,
        ),
        (
            "syncbrok_subscribers_disabled_total",
            "Subscribers disabled after disable_after of nothing but failed attempts since start.",
            t.subscribers_disabled,
        ),
        (
            "syncbrok_unreadable_bodies_total",
            "Attempts whose message body could not be read back from the log (retried) since start.",
            t.unreadable_bodies,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "syncbrok_deliveries_in_flight",
        "gauge",
        "Delivery requests on the wire.",
    );
    let _ = writeln!(out, "syncbrok_deliveries_in_flight {}", t.in_flight);

    let queues: Vec<_> = space
        .queue_names()
        .into_iter()
        .filter_map(|n| space.queue_info(&n).ok())
        .collect();
    family(
        &mut out,
        "syncbrok_queue_messages",
        "gauge",
        "Messages held by a queue, per state.",
    );
    for q in &queues {
        let c = q.counts;
        for (state, n) in [
            ("scheduled", c.scheduled),
            ("waiting", c.waiting),
            ("ready", c.ready),
            ("delivering", c.delivering),
            ("delivered", c.delivered),
            ("dead", c.dead),
        ] {
            let _ = writeln!(
                out,
                "syncbrok_queue_messages{{queue=\"{}\",state=\"{state}\"}} {n}",
                q.name
            );
        }
    }
    family(
        &mut out,
        "syncbrok_queue_subscribers_by_state",
        "gauge",
        "Subscribers of a queue, per state (active, paused, disabled).",
    );
    for q in &queues {
        for state in [
            space::SubscriberState::Active,
            space::SubscriberState::Paused,
            space::SubscriberState::Disabled,
        ] {
            let n = q.subscribers.iter().filter(|s| s.state == state).count();
            let _ = writeln!(
                out,
                "syncbrok_queue_subscribers_by_state{{queue=\"{}\",state=\"{}\"}} {n}",
                q.name,
                state.name()
            );
        }
    }
    family(
        &mut out,
        "syncbrok_queue_undelivered_bytes",
        "gauge",
        "Bytes of undelivered message bodies.",
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "syncbrok_queue_undelivered_bytes{{queue=\"{}\"}} {}",
            q.name, q.bytes
        );
    }
    family(
        &mut out,
        "syncbrok_queue_oldest_undelivered_age_seconds",
        "gauge",
        "Age of the oldest undelivered message (0 when there is none).",
    );
    for q in &queues {
        let age = q.oldest_undelivered_age_ms.unwrap_or(0) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "syncbrok_queue_oldest_undelivered_age_seconds{{queue=\"{}\"}} {age}",
            q.name
        );
    }
    family(
        &mut out,
        "syncbrok_queue_forgotten_dead_parents",
        "gauge",
        "Dead parents removed by retention that the queue no longer remembers (a later child of one goes at once).",
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "syncbrok_queue_forgotten_dead_parents{{queue=\"{}\"}} {}",
            q.name, q.forgotten_dead_parents
        );
    }
    family(
        &mut out,
        "syncbrok_queue_idempotency_keys",
        "gauge",
        "Idempotency keys the queue remembers.",
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "syncbrok_queue_idempotency_keys{{queue=\"{}\"}} {}",
            q.name, q.idempotency_keys
        );
    }
    family(
        &mut out,
        "syncbrok_queue_idempotency_keys_forgotten_total",
        "counter",
        "Idempotency keys forgotten before their window was over, to stay within idempotency.max_keys (since the broker started).",
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "syncbrok_queue_idempotency_keys_forgotten_total{{queue=\"{}\"}} {}",
            q.name, q.idempotency_keys_forgotten
        );
    }
    family(
        &mut out,
        "syncbrok_queue_subscribers",
        "gauge",
        "Subscribers of a queue.",
    );
    for q in &queues {
        let _ = writeln!(
            out,
            "syncbrok_queue_subscribers{{queue=\"{}\"}} {}",
            q.name,
            q.subscribers.len()
        );
    }

    latencies(&mut out, &queues);

    let stats = space.log_stats();
    for (name, help, value) in [
        (
            "syncbrok_log_writes_total",
            "Group writes to the log since start.",
            stats.writes,
        ),
        (
            "syncbrok_log_fsyncs_total",
            "fdatasync calls on the log since start.",
            stats.syncs,
        ),
        (
            "syncbrok_log_written_bytes_total",
            "Bytes written to the log since start.",
            stats.bytes,
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let segments = space.log_segments();
    family(
        &mut out,
        "syncbrok_log_segments",
        "gauge",
        "Segment files on disk.",
    );
    let _ = writeln!(out, "syncbrok_log_segments {}", segments.len());
    family(
        &mut out,
        "syncbrok_log_disk_bytes",
        "gauge",
        "Bytes of segment files on disk.",
    );
    let _ = writeln!(
        out,
        "syncbrok_log_disk_bytes {}",
        segments.iter().map(|s| s.bytes).sum::<u64>()
    );
    out
}

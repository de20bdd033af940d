//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4). Written by hand:
//! the format is a few lines of text, not worth a dependency.

use std::fmt::Write;

use space::Space;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
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

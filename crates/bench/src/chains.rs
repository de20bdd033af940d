//! The `chains` workload: parented delivery through the real binary. N chains of L messages,
//! each message naming the one before it as its parent, published over HTTP by C concurrent
//! publishers, a chain per batch request (`parent_index`), or with `--one-by-one` a request
//! per message naming its parent's id (each publisher one chain at a time, in order, without
//! waiting for deliveries); K subscribers acknowledge everything at once.
//!
//! Reported: the hop latency of every child, from its parent's acknowledgement by the last
//! subscriber (the moment the sink answered) to the child's first arrival, or from the
//! child's own durable publish when that came later; and order violations: a child arriving
//! anywhere before its parent was answered by every subscriber (must be 0).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::measure::{BenchResult, Latencies, PeakRss, cpu_of, now_ns, progress};
use crate::round::{Spec, publish_concurrently};
use crate::server::Server;
use crate::sink::{Sink, http_client};

#[derive(clap::Args)]
pub struct Args {
    /// Chains (N).
    #[arg(long, default_value_t = 500)]
    chains: u64,
    /// Messages per chain (L).
    #[arg(long, default_value_t = 20)]
    length: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Concurrent publishers (C), each publishing whole chains.
    #[arg(long, default_value_t = 64)]
    publishers: u64,
    /// Subscribers (K).
    #[arg(long, default_value_t = 2)]
    subscribers: u64,
    /// Deliveries in flight per subscriber (`max_in_flight`).
    #[arg(long, default_value_t = 64)]
    in_flight: u32,
    /// Messages per delivery request (the subscribers' `batch.max_messages`; above 1,
    /// CloudEvents batches of what is ready).
    #[arg(long, default_value_t = 1)]
    delivery_batch: u32,
    /// Publish each message in its own request naming its parent by id, instead of each
    /// chain as one batch request (`parent_index`).
    #[arg(long)]
    one_by_one: bool,
    /// Rounds (a fresh broker each); latencies are reported per round and as medians.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[command(flatten)]
    out: crate::server::Output,
}

/// Times seen by the sinks and the publishers, in [`now_ns`] (0 = not yet).
struct Timeline {
    chains: u64,
    length: u64,
    subscribers: u64,
    /// Per subscriber, per message: first arrival.
    arrived: Vec<AtomicU64>,
    /// Per subscriber, per message: when the sink answered (the acknowledgement).
    answered: Vec<AtomicU64>,
    /// Per message: when its publish was acknowledged (durable).
    published: Vec<AtomicU64>,
    deliveries: AtomicU64,
    duplicates: AtomicU64,
    violations: AtomicU64,
    malformed: AtomicU64,
}

fn zeros(n: u64) -> Vec<AtomicU64> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Timeline {
    fn new(chains: u64, length: u64, subscribers: u64) -> Self {
        let messages = chains * length;
        Self {
            chains,
            length,
            subscribers,
            arrived: zeros(messages * subscribers),
            answered: zeros(messages * subscribers),
            published: zeros(messages),
            deliveries: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            violations: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        }
    }

    fn message(&self, chain: u64, position: u64) -> u64 {
        chain * self.length + position
    }

    fn slot(&self, subscriber: u64, message: u64) -> usize {
        (subscriber * self.chains * self.length + message) as usize
    }

    /// Subscriber `k` received `body`.
    fn arrive(&self, k: u64, body: &[u8]) {
        let arrived_at = now_ns();
        let Some((chain, position)) =
            parse_body(body).filter(|&(c, p)| c < self.chains && p < self.length)
        else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let message = self.message(chain, position);
        if position > 0 {
            let parent = message - 1;
            let parent_done = (0..self.subscribers)
                .all(|j| self.answered[self.slot(j, parent)].load(Ordering::Acquire) != 0);
            if !parent_done {
                self.violations.fetch_add(1, Ordering::Relaxed);
            }
        }
        let slot = self.slot(k, message);
        if self.arrived[slot]
            .compare_exchange(0, arrived_at, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        // The answer is written right after this returns.
        let _ =
            self.answered[slot].compare_exchange(0, now_ns(), Ordering::AcqRel, Ordering::Acquire);
    }

    /// When every subscriber had answered `message` (the last answer), if all had.
    fn answered_by_all(&self, message: u64) -> Option<u64> {
        (0..self.subscribers)
            .map(|k| self.answered[self.slot(k, message)].load(Ordering::Acquire))
            .try_fold(0, |last, at| (at != 0).then_some(last.max(at)))
    }

    /// Hops to the last subscriber, in microseconds: from a parent answered by every
    /// subscriber to its child answered by every subscriber (from the child's publish when
    /// that came later). What a chain pays per link.
    fn hops_to_last(&self) -> Vec<u32> {
        let mut hops = Vec::new();
        for chain in 0..self.chains {
            for position in 1..self.length {
                let child = self.message(chain, position);
                let (Some(parent_done), Some(child_done)) =
                    (self.answered_by_all(child - 1), self.answered_by_all(child))
                else {
                    continue;
                };
                let published = self.published[child as usize].load(Ordering::Acquire);
                let ready = parent_done.max(published.min(child_done));
                hops.push(micros(child_done.saturating_sub(ready)));
            }
        }
        hops
    }

    /// Chain cycle times, in microseconds: from a chain's first publish acknowledged to its
    /// last message answered by every subscriber.
    fn cycles(&self) -> Vec<u32> {
        (0..self.chains)
            .filter_map(|chain| {
                let first = self.published[self.message(chain, 0) as usize].load(Ordering::Acquire);
                let done = self.answered_by_all(self.message(chain, self.length - 1))?;
                (first != 0).then(|| micros(done.saturating_sub(first)))
            })
            .collect()
    }

    /// Hop latencies in microseconds, and how many hops waited for the child's publish
    /// rather than for its parent.
    fn hops(&self) -> (Vec<u32>, u64) {
        let mut hops = Vec::new();
        let mut publish_bound = 0;
        for chain in 0..self.chains {
            for position in 1..self.length {
                let child = self.message(chain, position);
                let parent_acked = (0..self.subscribers)
                    .map(|k| self.answered[self.slot(k, child - 1)].load(Ordering::Acquire))
                    .max()
                    .unwrap_or(0);
                let first_arrival = (0..self.subscribers)
                    .map(|k| self.arrived[self.slot(k, child)].load(Ordering::Acquire))
                    .min()
                    .unwrap_or(0);
                let published = self.published[child as usize].load(Ordering::Acquire);
                if first_arrival == 0 || parent_acked == 0 {
                    continue;
                }
                // A publish answered after the child's arrival still counts from the parent.
                let ready = if published > parent_acked && published < first_arrival {
                    publish_bound += 1;
                    published
                } else {
                    parent_acked
                };
                hops.push(micros(first_arrival.saturating_sub(ready)));
            }
        }
        (hops, publish_bound)
    }
}

fn micros(ns: u64) -> u32 {
    (ns / 1000).min(u64::from(u32::MAX)) as u32
}

fn body(chain: u64, position: u64, size: usize) -> Vec<u8> {
    let mut body = format!("chain {chain:010} position {position:010} ").into_bytes();
    body.resize(size.max(body.len()), b'x');
    body
}

fn parse_body(body: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(body.get(..36)?).ok()?;
    let mut words = text.split(' ');
    match (words.next()?, words.next()?, words.next()?, words.next()?) {
        ("chain", chain, "position", position) => {
            Some((chain.parse().ok()?, position.parse().ok()?))
        }
        _ => None,
    }
}

struct RoundResult {
    hops: Latencies,
    hops_to_last: Latencies,
    cycles: Latencies,
    publish_bound: u64,
    violations: u64,
    duplicates: u64,
    messages_per_s: f64,
    peak_rss: u64,
    cpu_s: f64,
}

async fn round(args: &Args, binary: &std::path::Path) -> BenchResult<RoundResult> {
    let data = tempfile::tempdir_in(&args.out.dir)?;
    let server = Server::start(binary, &data.path().join("data"))?;
    let client = http_client();
    let timeline = Arc::new(Timeline::new(args.chains, args.length, args.subscribers));
    let mut sinks = Vec::new();
    for k in 0..args.subscribers {
        let timeline = timeline.clone();
        sinks.push(Sink::start(Arc::new(move |body: &[u8]| timeline.arrive(k, body))).await?);
    }
    let urls: Vec<String> = sinks.iter().map(|s| s.url.clone()).collect();
    server
        .bench_queue(
            &client,
            "{}",
            &urls,
            args.in_flight,
            args.delivery_batch.max(1),
        )
        .await?;

    let total = args.chains * args.length * args.subscribers;
    let bar = progress(total, "chains");
    let pid = server.pid();
    let watch = PeakRss::watch(pid);
    let cpu_before = cpu_of(pid);
    let started = Instant::now();
    // Each "publish" of the shared driver is one whole chain.
    let spec = Spec {
        messages: args.chains,
        body_bytes: args.body_bytes,
        publishers: args.publishers,
        subscribers: args.subscribers,
        batch: 1,
        delivery_batch: args.delivery_batch.max(1),
        in_flight: args.in_flight,
    };
    let next_chain = Arc::new(AtomicU64::new(0));
    let (api, publisher_client, publisher_timeline) =
        (server.api(), client.clone(), timeline.clone());
    let (one_by_one, length, body_bytes) = (args.one_by_one, args.length, args.body_bytes);
    publish_concurrently(&spec, move |_| {
        let (api, client, timeline, next_chain) = (
            api.clone(),
            publisher_client.clone(),
            publisher_timeline.clone(),
            next_chain.clone(),
        );
        async move {
            let chain = next_chain.fetch_add(1, Ordering::Relaxed);
            if one_by_one {
                let mut parent: Option<String> = None;
                for position in 0..length {
                    let id = api
                        .publish(
                            &client,
                            body(chain, position, body_bytes),
                            parent.as_deref(),
                        )
                        .await?;
                    timeline.published[timeline.message(chain, position) as usize]
                        .store(now_ns(), Ordering::Release);
                    parent = Some(id);
                }
            } else {
                let bodies: Vec<Vec<u8>> = (0..length)
                    .map(|position| body(chain, position, body_bytes))
                    .collect();
                api.publish_chain(&client, &bodies).await?;
                let at = now_ns();
                for position in 0..length {
                    timeline.published[timeline.message(chain, position) as usize]
                        .store(at, Ordering::Release);
                }
            }
            Ok(())
        }
    })
    .await?;
    crate::measure::wait_for_count(|| timeline.deliveries.load(Ordering::Relaxed), total, &bar)
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let peak_rss = watch.finish();
    let cpu_s = (cpu_of(pid) - cpu_before).as_secs_f64();
    server.kill()?;
    if timeline.malformed.load(Ordering::Relaxed) > 0 {
        return Err("a subscriber received a body that is not one of the chains".into());
    }
    let (hops, publish_bound) = timeline.hops();
    Ok(RoundResult {
        hops: Latencies::from_samples(hops),
        hops_to_last: Latencies::from_samples(timeline.hops_to_last()),
        cycles: Latencies::from_samples(timeline.cycles()),
        publish_bound,
        violations: timeline.violations.load(Ordering::Relaxed),
        duplicates: timeline.duplicates.load(Ordering::Relaxed),
        messages_per_s: (args.chains * args.length) as f64 / seconds,
        peak_rss,
        cpu_s,
    })
}

pub fn run(args: Args) -> BenchResult<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::fs::create_dir_all(&args.out.dir)?;
    let binary = args.out.binary();
    println!(
        "chains: {} chains × {} messages of {} B, {} publishers, {} subscribers, up to {} per delivery request; syncbrok with fsync always",
        args.chains,
        args.length,
        args.body_bytes,
        args.publishers,
        args.subscribers,
        args.delivery_batch.max(1)
    );
    println!(
        "  {:<6} {:>11} {:>9} {:>9} {:>9} {:>12} {:>12} {:>10} {:>14} {:>10} {:>10} {:>9} {:>6}",
        "round",
        "messages/s",
        "hop p50",
        "hop p99",
        "hop max",
        "to-last p50",
        "to-last p99",
        "cycle p50",
        "publish-bound",
        "violations",
        "duplicates",
        "peak RSS",
        "CPU s"
    );
    let ms = |us: u32| f64::from(us) / 1000.0;
    let mut json = Vec::new();
    let (mut p50s, mut p99s, mut last_p50s, mut last_p99s, mut violations) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0);
    for r in 1..=args.rounds {
        let result = rt.block_on(round(&args, &binary))?;
        println!(
            "  {:<6} {:>11.0} {:>6.2} ms {:>6.2} ms {:>6.2} ms {:>9.2} ms {:>9.2} ms {:>7.0} ms {:>14} {:>10} {:>10} {:>5.0} MiB {:>6.1}",
            r,
            result.messages_per_s,
            ms(result.hops.p50_us),
            ms(result.hops.p99_us),
            ms(result.hops.max_us),
            ms(result.hops_to_last.p50_us),
            ms(result.hops_to_last.p99_us),
            ms(result.cycles.p50_us),
            result.publish_bound,
            result.violations,
            result.duplicates,
            result.peak_rss as f64 / (1024.0 * 1024.0),
            result.cpu_s
        );
        json.push(format!(
            r#"{{"workload":"chains","round":{r},"chains":{},"length":{},"subscribers":{},"delivery_batch":{},"one_by_one":{},"messages_per_s":{:.1},"hop_p50_us":{},"hop_p99_us":{},"hop_max_us":{},"hops":{},"hop_to_last_p50_us":{},"hop_to_last_p99_us":{},"cycle_p50_us":{},"cycle_p99_us":{},"publish_bound":{},"order_violations":{},"duplicates":{},"peak_rss_bytes":{},"server_cpu_s":{:.3}}}"#,
            args.chains,
            args.length,
            args.subscribers,
            args.delivery_batch.max(1),
            args.one_by_one,
            result.messages_per_s,
            result.hops.p50_us,
            result.hops.p99_us,
            result.hops.max_us,
            result.hops.samples,
            result.hops_to_last.p50_us,
            result.hops_to_last.p99_us,
            result.cycles.p50_us,
            result.cycles.p99_us,
            result.publish_bound,
            result.violations,
            result.duplicates,
            result.peak_rss,
            result.cpu_s
        ));
        p50s.push(ms(result.hops.p50_us));
        p99s.push(ms(result.hops.p99_us));
        last_p50s.push(ms(result.hops_to_last.p50_us));
        last_p99s.push(ms(result.hops_to_last.p99_us));
        violations += result.violations;
    }
    let median = crate::measure::median;
    println!(
        "median of {} rounds: hop p50 {:.2} ms, p99 {:.2} ms; to the last subscriber p50 {:.2} ms, p99 {:.2} ms; order violations in all rounds: {violations}",
        args.rounds,
        median(&mut p50s),
        median(&mut p99s),
        median(&mut last_p50s),
        median(&mut last_p99s)
    );
    crate::measure::write_json_lines(args.out.json.as_deref(), &json)?;
    if violations > 0 {
        return Err(
            format!("{violations} children arrived before their parent was acknowledged").into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_bodies_round_trip() {
        let b = body(12, 7, 1024);
        assert_eq!(b.len(), 1024);
        assert_eq!(parse_body(&b), Some((12, 7)));
        assert_eq!(parse_body(b"chain x position y"), None);
    }

    #[test]
    fn a_child_before_its_parents_answer_is_a_violation() {
        let t = Timeline::new(1, 2, 2);
        t.arrive(0, &body(0, 0, 64));
        // Subscriber 1 has not answered the parent yet.
        t.arrive(0, &body(0, 1, 64));
        assert_eq!(t.violations.load(Ordering::Relaxed), 1);
        t.arrive(1, &body(0, 0, 64));
        t.arrive(1, &body(0, 1, 64));
        assert_eq!(t.violations.load(Ordering::Relaxed), 1);
        t.arrive(1, &body(0, 1, 64));
        assert_eq!(t.duplicates.load(Ordering::Relaxed), 1);
        let (hops, _) = t.hops();
        assert_eq!(hops.len(), 1);
        assert_eq!(t.hops_to_last().len(), 1);
    }

    #[test]
    fn a_chain_cycle_runs_from_its_first_publish_to_its_last_answer() {
        let t = Timeline::new(2, 2, 1);
        t.published[0].store(now_ns(), Ordering::Release);
        t.arrive(0, &body(0, 0, 64));
        t.arrive(0, &body(0, 1, 64));
        assert_eq!(t.cycles().len(), 1, "chain 1 was never published");
        assert!(t.answered_by_all(1).is_some());
        assert!(t.answered_by_all(2).is_none());
    }
}

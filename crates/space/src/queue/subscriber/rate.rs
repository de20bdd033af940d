//! A subscriber's rate limit at run time: at most `per_second` messages in any one-second
//! window *as the receiver sees them*.
//!
//! A token bucket of `per_second` tokens refilled at `per_second` a second lets through twice
//! that in some windows (a full bucket, then its refill), and counting requests when they are
//! sent lets the network squeeze them closer together on arrival. So a message holds its
//! place in the window from when it is sent until a second after it was answered: whatever
//! the receiver saw of it happened in between, and no second of the receiver's clock holds
//! more than `per_second` of them. A receiver answering at once still gets `per_second` a
//! second, in bursts of up to `per_second`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct RateWindow {
    per_second: u32,
    /// Messages sent and not yet answered.
    on_wire: u32,
    /// (when answered, how many) within the last second, oldest first: at most one entry per
    /// request, so at most `per_second` entries.
    answered: VecDeque<(Instant, u32)>,
    /// The messages of `answered` together.
    answered_total: u32,
}

impl RateWindow {
    pub fn new(per_second: u32) -> RateWindow {
        RateWindow {
            per_second,
            on_wire: 0,
            answered: VecDeque::new(),
            answered_total: 0,
        }
    }

    /// A new limit; what is on the wire or was answered within the second still counts.
    pub fn set_limit(&mut self, per_second: u32) {
        self.per_second = per_second;
    }

    /// How many messages may be sent at `now`.
    pub fn room(&mut self, now: Instant) -> u32 {
        while let Some(&(at, n)) = self.answered.front() {
            if now.saturating_duration_since(at) < WINDOW {
                break;
            }
            self.answered.pop_front();
            self.answered_total -= n;
        }
        self.per_second
            .saturating_sub(self.on_wire + self.answered_total)
    }

    /// `n` messages (one request) are sent.
    pub fn sent(&mut self, n: u32) {
        self.on_wire = self.on_wire.saturating_add(n);
    }

    /// A request of `n` messages was answered (or ended without an answer) at `now`.
    pub fn answered(&mut self, n: u32, now: Instant) {
        let n = n.min(self.on_wire);
        if n == 0 {
            return;
        }
        self.on_wire -= n;
        self.answered_total += n;
        self.answered.push_back((now, n));
    }

    /// When room opens without another answer: a second after the oldest answer still in the
    /// window. `None` when nothing answered is in it (then only an answer makes room).
    pub fn next_room_at(&self) -> Option<Instant> {
        self.answered.front().map(|&(at, _)| at + WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_burst_fills_the_window_and_room_opens_a_second_after_the_answers() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(3);
        assert_eq!(w.room(t0), 3);
        w.sent(2);
        w.sent(1);
        assert_eq!(w.room(t0), 0);
        assert_eq!(w.next_room_at(), None, "only an answer makes room");
        let t1 = t0 + Duration::from_millis(300);
        w.answered(2, t1);
        assert_eq!(w.room(t1), 0, "answered less than a second ago");
        assert_eq!(w.next_room_at(), Some(t1 + WINDOW));
        assert_eq!(w.room(t1 + WINDOW - Duration::from_millis(1)), 0);
        assert_eq!(w.room(t1 + WINDOW), 2);
        w.set_limit(1);
        assert_eq!(w.room(t1 + WINDOW), 0, "one still on the wire");
    }

    proptest! {
        /// Whatever the order of sends and answers, no window of one second (by the answers'
        /// clock, the latest the receiver can have seen a message, and the sends', the
        /// earliest) holds more than `per_second` messages.
        #[test]
        fn no_second_holds_more_than_the_limit(
            per_second in 1u32..6,
            steps in proptest::collection::vec((0u64..400, 1u32..4, any::<bool>()), 1..200),
        ) {
            let t0 = Instant::now();
            let mut w = RateWindow::new(per_second);
            let mut now = t0;
            // (sent at, answered at) per message; requests on the wire: (sent at, size).
            let mut seen: Vec<(Instant, Instant)> = Vec::new();
            let mut wire: VecDeque<(Instant, u32)> = VecDeque::new();
            for (dt, size, answer) in steps {
                now += Duration::from_millis(dt);
                if answer {
                    if let Some((sent, n)) = wire.pop_front() {
                        w.answered(n, now);
                        seen.extend((0..n).map(|_| (sent, now)));
                    }
                } else {
                    let n = size.min(w.room(now));
                    if n > 0 {
                        w.sent(n);
                        wire.push_back((now, n));
                    }
                }
            }
            // A message may have reached the receiver at any time between its send and its
            // answer; a window [a, a + 1s) can hold it only if those overlap it. At the most
            // crowded window, at most per_second may.
            for start in seen.iter().flat_map(|&(s, a)| [s, a]) {
                let end = start + WINDOW;
                let inside = seen.iter().filter(|&&(s, a)| s < end && a >= start).count();
                prop_assert!(inside <= per_second as usize, "{inside} in the second from {start:?}");
            }
        }
    }
}

//! The [`ByteMeter`] every transfer reports its payload bytes through, and the run's
//! bandwidth limits ([`Throttle`]) it waits for.
//!
//! Owns: coalescing byte progress into events (never waiting on a full channel while the
//! transfer runs), the token buckets of `--bandwidth` and `--device-bandwidth`, and the abort
//! flag a transfer watches. Must not: open sockets or decide anything about a device.

use crate::events::Event;
use crate::scheduler::TokenBucket;
use crossbeam_channel::Sender;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts payload bytes of one attempt and reports them to the progress thread, coalesced to
/// one event per ~100 ms or 1 MiB so a fast transfer does not flood the channel. It also carries
/// the run's abort flag, so a transfer gives up once a shutdown's grace period has expired.
pub struct ByteMeter<'a> {
    events: &'a Sender<Event>,
    abort: &'a AtomicBool,
    index: usize,
    total: u64,
    pending: u64,
    last_flush: Instant,
    throttle: Option<&'a Throttle>,
    own_bucket: Option<TokenBucket>,
}

impl<'a> ByteMeter<'a> {
    const FLUSH_BYTES: u64 = 1 << 20;
    const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

    /// A meter for device `index` in the plan.
    pub fn new(events: &'a Sender<Event>, index: usize, abort: &'a AtomicBool) -> Self {
        ByteMeter {
            events,
            abort,
            index,
            total: 0,
            pending: 0,
            last_flush: Instant::now(),
            throttle: None,
            own_bucket: None,
        }
    }

    /// Keeps this transfer within the run's bandwidth limits (`--bandwidth`, shared by every
    /// transfer, and `--device-bandwidth`, this transfer's own cap).
    pub fn with_throttle(mut self, throttle: &'a Throttle) -> Self {
        self.own_bucket = throttle
            .per_transfer
            .map(|rate| Throttle::bucket(rate, throttle.now()));
        self.throttle = Some(throttle);
        self
    }

    /// Whether the transfer must give up now.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    /// Records `bytes` more.
    /// Records `bytes` more, after waiting as long as the bandwidth limits require: the caller
    /// sends them once this returns. The wait ends early if the run aborts.
    pub fn add(&mut self, bytes: u64) {
        self.total += bytes;
        self.pending += bytes;
        if self.pending >= Self::FLUSH_BYTES || self.last_flush.elapsed() >= Self::FLUSH_INTERVAL {
            self.offer();
        }
        if let Some(throttle) = self.throttle {
            let now = throttle.now();
            let own = self
                .own_bucket
                .as_mut()
                .map_or(Duration::ZERO, |b| b.take(bytes as f64, now));
            let shared = throttle.take_shared(bytes, now);
            let wait = own.max(shared);
            if !wait.is_zero() {
                throttle.note_wait(now);
            }
            self.sleep_unless_aborted(wait);
        }
    }

    fn sleep_unless_aborted(&self, wait: Duration) {
        let until = Instant::now() + wait;
        while !self.aborted() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Bytes recorded in this attempt.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Sends what is pending if the channel has room, without waiting: while the transfer runs,
    /// a full channel never holds it up; the bytes stay pending and go with a later event
    /// (coalesced), at the latest with `flush` at the end.
    fn offer(&mut self) {
        let event = Event::BytesSent {
            index: self.index,
            bytes: self.pending,
        };
        match self.events.try_send(event) {
            Ok(()) | Err(crossbeam_channel::TrySendError::Disconnected(_)) => self.pending = 0,
            Err(crossbeam_channel::TrySendError::Full(_)) => {}
        }
        self.last_flush = Instant::now();
    }

    /// Sends what is pending (at the end of a transfer: it waits for room, like every other
    /// event). A closed channel (the progress thread is gone) is not the device's failure, so a
    /// send error is ignored.
    pub fn flush(&mut self) {
        if self.pending > 0 {
            let _ = self.events.send(Event::BytesSent {
                index: self.index,
                bytes: self.pending,
            });
            self.pending = 0;
        }
        self.last_flush = Instant::now();
    }
}

/// The run's bandwidth limits: one budget shared by every transfer (its token bucket behind a
/// mutex: each transfer's share adapts as others start and finish), and a cap per transfer.
#[derive(Debug)]
pub struct Throttle {
    shared: Option<Mutex<TokenBucket>>,
    per_transfer: Option<u64>,
    epoch: Instant,
    /// When a transfer last had to wait (milliseconds since `epoch`, plus one; 0: never).
    last_wait_ms: AtomicU64,
}

impl Throttle {
    /// Limits in bytes per second; `None` is no limit.
    pub fn new(shared: Option<u64>, per_transfer: Option<u64>) -> Throttle {
        Throttle {
            shared: shared.map(|rate| Mutex::new(Throttle::bucket(rate, Duration::ZERO))),
            per_transfer,
            epoch: Instant::now(),
            last_wait_ms: AtomicU64::new(0),
        }
    }

    /// Whether any limit is set.
    pub fn is_active(&self) -> bool {
        self.shared.is_some() || self.per_transfer.is_some()
    }

    /// A bucket for `rate` bytes/s whose burst is a tenth of a second (at least 16 KiB), so
    /// the rate holds over any second.
    fn bucket(rate: u64, now: Duration) -> TokenBucket {
        let rate = rate as f64;
        TokenBucket::new(rate, (rate / 10.0).max(16.0 * 1024.0), now)
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Whether a transfer had to wait for the limits within the last `within`.
    pub fn limited_within(&self, within: Duration) -> bool {
        match self.last_wait_ms.load(Ordering::Relaxed) {
            0 => false,
            at => self.now().saturating_sub(Duration::from_millis(at - 1)) <= within,
        }
    }

    fn note_wait(&self, now: Duration) {
        self.last_wait_ms
            .store(now.as_millis() as u64 + 1, Ordering::Relaxed);
    }

    fn take_shared(&self, bytes: u64, now: Duration) -> Duration {
        let Some(shared) = &self.shared else {
            return Duration::ZERO;
        };
        let mut bucket = crate::lock(shared);
        bucket.take(bytes as f64, now)
    }
}

impl Drop for ByteMeter<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_progress_never_waits_for_a_full_channel_and_loses_nothing() {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        sender.send(Event::RunFinished).expect("fill the channel");
        let abort = AtomicBool::new(false);
        let (done, finished) = crossbeam_channel::bounded(1);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut meter = ByteMeter::new(&sender, 7, &abort);
                for _ in 0..3 {
                    meter.add(ByteMeter::FLUSH_BYTES); // each one due, none can be sent
                }
                done.send(meter.total()).expect("report");
                // Dropping the meter sends what is pending, once there is room.
            });
            let total = finished
                .recv_timeout(Duration::from_secs(5))
                .expect("add() returned although the channel was full");
            assert_eq!(total, 3 * ByteMeter::FLUSH_BYTES);
            assert_eq!(receiver.recv(), Ok(Event::RunFinished));
        });
        let events: Vec<Event> = receiver.try_iter().collect();
        let expected = Event::BytesSent {
            index: 7,
            bytes: 3 * ByteMeter::FLUSH_BYTES,
        };
        assert_eq!(events, [expected], "the pending bytes went as one event");
    }
}

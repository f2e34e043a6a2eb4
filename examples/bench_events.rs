//! Floods the progress thread's channel and measures what it sustains: events handled per
//! second, and how long a worker's `send` waited at worst (a full channel blocks the sender).
//! Prints numbers; asserts only that every event was counted. Run by `scripts/bench-core`:
//!
//!     cargo run --release --example bench_events -- [EVENTS] [PRODUCERS]
//!
//! Each producer plays workers finishing devices: `DeviceStarted`, `AttemptStarted`, six
//! `BytesSent` and `Succeeded` per device (9 events), as fast as it can, through the same
//! bounded channel (`events::CHANNEL_CAPACITY`) and the same progress loop (plain mode) as a run.
//! Two rounds: `raw` sends every event with a blocking `send` (the progress thread's capacity);
//! `metered` sends the bytes through the real `ByteMeter`, as transfers do, which never waits for
//! a full channel (it coalesces the bytes into a later event).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use update_orchestrator::delivery::ByteMeter;
use update_orchestrator::events::{CHANNEL_CAPACITY, Event};
use update_orchestrator::progress::{self, Mode, ProgressConfig};

const EVENTS_PER_DEVICE: usize = 9;

fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args
        .next()
        .map_or(10_000_000, |a| a.parse().expect("EVENTS: a number"));
    let producers: usize = args
        .next()
        .map_or(8, |a| a.parse().expect("PRODUCERS: a number"));
    let devices = (events / EVENTS_PER_DEVICE / producers).max(1) * producers;
    round(devices, producers, false);
    round(devices, producers, true);
}

/// Per producer: the longest blocking `send`, the longest `ByteMeter::add`, the time spent in
/// sends that took over 1 ms, how many did, and how many `add`s took over 1 ms.
type Waits = (Duration, Duration, Duration, usize, usize);

fn round(devices: usize, producers: usize, metered: bool) {
    let (sender, receiver) = crossbeam_channel::bounded::<Event>(CHANNEL_CAPACITY);
    let config = ProgressConfig {
        mode: Mode::Plain,
        interval: Duration::from_secs(1),
        color: false,
        width: None,
    };
    let progress = progress::spawn(config, receiver).expect("spawn the progress thread");
    sender
        .send(Event::RunStarted {
            devices,
            payload_len: 6 << 20,
        })
        .expect("send");
    let started = Instant::now();
    let waits: Vec<Waits> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..producers)
            .map(|worker| {
                let sender = sender.clone();
                scope.spawn(move || produce(&sender, worker, producers, devices, metered))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("producer"))
            .collect()
    });
    let sent = Instant::now();
    drop(sender);
    let snapshot = progress.join();
    let elapsed = started.elapsed();
    assert_eq!(snapshot.succeeded, devices, "every device was counted");
    assert_eq!(
        snapshot.bytes_sent,
        devices as u64 * (6 << 20),
        "every byte was counted"
    );

    let total = devices * EVENTS_PER_DEVICE;
    let worst_send = waits.iter().map(|w| w.0).max().unwrap_or_default();
    let worst_add = waits.iter().map(|w| w.1).max().unwrap_or_default();
    let waited: Duration = waits.iter().map(|w| w.2).sum();
    let slow_sends: usize = waits.iter().map(|w| w.3).sum();
    let slow_adds: usize = waits.iter().map(|w| w.4).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!();
    let name = if metered { "metered" } else { "raw" };
    println!(
        "bench_events {name}: {devices} devices x {EVENTS_PER_DEVICE} events from {producers} producers \
         through a bounded({CHANNEL_CAPACITY}) channel"
    );
    if metered {
        println!(
            "  {:.0} devices/s; bytes went through ByteMeter (coalesced when the channel was full)",
            devices as f64 / elapsed.as_secs_f64()
        );
        println!(
            "  ByteMeter::add: longest {:.3} ms; {slow_adds} of {} took over 1 ms (a busy machine preempts threads too)",
            ms(worst_add),
            devices * 6
        );
    } else {
        println!(
            "  progress thread: {:.0} events/s ({:.3} s until the last event was handled; producers done after {:.3} s)",
            total as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            sent.duration_since(started).as_secs_f64()
        );
    }
    println!(
        "  blocking sends: longest {:.3} ms; {slow_sends} took over 1 ms, {:.1} ms in all",
        ms(worst_send),
        ms(waited)
    );
}

/// Sends the events of this worker's devices (bytes through a `ByteMeter` when `metered`).
fn produce(
    sender: &crossbeam_channel::Sender<Event>,
    worker: usize,
    producers: usize,
    devices: usize,
    metered: bool,
) -> Waits {
    let (mut worst_send, mut worst_add, mut waited, mut slow, mut slow_adds) = Default::default();
    let mut send = |event: Event| {
        let before = Instant::now();
        sender.send(event).expect("the progress thread is running");
        let took = before.elapsed();
        worst_send = took.max(worst_send);
        if took > Duration::from_millis(1) {
            waited += took;
            slow += 1;
        }
    };
    let abort = AtomicBool::new(false);
    for index in (worker..devices).step_by(producers) {
        let id: Arc<str> = format!("dev-{index:07}").into();
        send(Event::DeviceStarted {
            index,
            id: id.clone(),
        });
        send(Event::AttemptStarted { index, attempt: 1 });
        if metered {
            let mut meter = ByteMeter::new(sender, index, &abort);
            for _ in 0..6 {
                let before = Instant::now();
                meter.add(1 << 20);
                let took = before.elapsed();
                worst_add = took.max(worst_add);
                slow_adds += usize::from(took > Duration::from_millis(1));
            }
            // Dropping the meter sends what is still pending, like the end of a transfer.
        } else {
            for _ in 0..6 {
                send(Event::BytesSent {
                    index,
                    bytes: 1 << 20,
                });
            }
        }
        send(Event::Succeeded {
            index,
            id,
            attempts: 1,
        });
    }
    (worst_send, worst_add, waited, slow, slow_adds)
}

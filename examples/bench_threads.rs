//! What a worker thread costs to start and end, through `std::thread` and on the pool's carved
//! stacks (`orchestrator::stacks`): CPU per thread, the process's user + system time. Prints
//! numbers; asserts only that every thread ran. Numbers for docs/performance.md ("Starting and
//! ending 8,000 threads"):
//!
//!     cargo run --release --example bench_threads -- [THREADS] [ROUNDS]
//!
//! Each thread does what a far device's worker does to its memory: touches 40 KiB of its stack
//! and allocates a little, then blocks (0.5 s, every thread at once), then allocates 64 KiB. The
//! two ways alternate, `ROUNDS` times (default 3), with `THREADS` threads (default 8,000) each.

use std::sync::Barrier;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use update_orchestrator::orchestrator::WORKER_STACK_SIZE;
use update_orchestrator::orchestrator::stacks;

fn work(barrier: &Barrier, ran: &AtomicUsize) {
    let mut stack = [0u8; 40 * 1024];
    for page in (0..stack.len()).step_by(4096) {
        stack[page] = page as u8;
    }
    std::hint::black_box(&mut stack);
    let small: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; 200 + i * 100]).collect();
    std::hint::black_box(&small);
    barrier.wait();
    std::thread::sleep(Duration::from_millis(500));
    std::hint::black_box(vec![1u8; 64 * 1024]);
    ran.fetch_add(1, Ordering::Relaxed);
}

/// The process's CPU time so far (user + system), in seconds.
fn cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn round(way: &str, threads: usize) {
    let barrier = Barrier::new(threads);
    let ran = AtomicUsize::new(0);
    let (cpu_before, started) = (cpu(), Instant::now());
    let (barrier, ran_ref) = (&barrier, &ran);
    match way {
        "std::thread" => std::thread::scope(|scope| {
            for i in 0..threads {
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .stack_size(WORKER_STACK_SIZE)
                    .spawn_scoped(scope, move || work(barrier, ran_ref))
                    .expect("spawn");
            }
        }),
        _ => stacks::scope(threads, WORKER_STACK_SIZE, |stacks| {
            for i in 0..threads {
                stacks
                    .spawn(&format!("worker-{i}"), move || work(barrier, ran_ref))
                    .expect("spawn");
            }
        })
        .expect("map the stacks"),
    }
    let (cpu, wall) = (cpu() - cpu_before, started.elapsed().as_secs_f64());
    assert_eq!(ran.load(Ordering::Relaxed), threads, "every thread ran");
    println!(
        "{way:<14} {threads} threads: wall {wall:.2} s, CPU {cpu:.3} s, {:.0} µs a thread",
        1e6 * cpu / threads as f64
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args
        .next()
        .map_or(8000, |a| a.parse().expect("THREADS: a number"));
    let rounds: usize = args
        .next()
        .map_or(3, |a| a.parse().expect("ROUNDS: a number"));
    for _ in 0..rounds {
        round("std::thread", threads);
        round("carved stacks", threads);
    }
}

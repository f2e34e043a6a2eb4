//! When and in which order devices start: selection, canary and waves, the retry schedule,
//! and the rollout controls (failure threshold, start rate, bandwidth, window).
//!
//! Owns: every decision about order and timing, as pure functions. Must not: do IO, read clocks
//! or sleep. The journal comes in as data, time and randomness as numbers, so everything here
//! has data-driven tests; the orchestrator does the waiting.

mod plan;
mod retry;
mod rollout;
mod select;

pub use plan::{Plan, Selection, SkipReason, Wave};
pub use retry::{Jitter, RetryPolicy};
pub use rollout::{
    FailurePolicy, Rate, Threshold, TokenBucket, WaveSize, Window, parse_bandwidth, parse_waves,
    wave_sizes,
};
pub use select::{Filter, Order, Shard, check_filters, empty_selection, fnv1a};

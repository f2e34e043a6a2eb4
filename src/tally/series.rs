//! The run over time, at a bounded size however long it runs: devices finished and bytes sent
//! per time bucket (`Series`), for the charts of the status page and the HTML report.
//!
//! Owns: `Series`. Must not: read a clock (the elapsed time comes in as an argument) or grow
//! past `MAX_BUCKETS`: when the run outlasts them, neighbouring buckets merge and each bucket
//! covers twice the time.

/// The most buckets kept; a long run has wider buckets, never more of them.
pub const MAX_BUCKETS: usize = 240;

/// The first bucket width, in seconds.
const FIRST_WIDTH: f64 = 1.0;

/// Cumulative counts sampled over the run, one value per time bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Each bucket's width, in seconds.
    width: f64,
    /// Per bucket, the last (devices finished, bytes sent) sampled in it; a bucket with no
    /// sample has its predecessor's.
    cumulative: Vec<(u64, u64)>,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            width: FIRST_WIDTH,
            cumulative: Vec::new(),
        }
    }
}

/// The series as rates: one value per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// The buckets' width, in seconds.
    pub bucket_seconds: f64,
    /// Devices finished per second in each bucket.
    pub devices_per_second: Vec<f64>,
    /// Bytes sent per second in each bucket.
    pub bytes_per_second: Vec<f64>,
}

impl Series {
    /// Records the counts at `elapsed` seconds since the run started (never decreasing).
    pub fn record(&mut self, elapsed: f64, finished: u64, bytes_sent: u64) {
        let mut bucket = (elapsed.max(0.0) / self.width) as usize;
        while bucket >= MAX_BUCKETS {
            self.merge();
            bucket = (elapsed.max(0.0) / self.width) as usize;
        }
        let last = self.cumulative.last().copied().unwrap_or((0, 0));
        while self.cumulative.len() <= bucket {
            self.cumulative.push(last);
        }
        self.cumulative[bucket] = (finished, bytes_sent);
    }

    /// The rates per bucket; the last bucket is left out while it may still fill (`complete`
    /// false), so a chart does not dip at its right edge.
    pub fn rates(&self, complete: bool) -> Rates {
        let shown = if complete {
            self.cumulative.len()
        } else {
            self.cumulative.len().saturating_sub(1)
        };
        let mut previous = (0, 0);
        let mut devices = Vec::with_capacity(shown);
        let mut bytes = Vec::with_capacity(shown);
        for &(finished, sent) in &self.cumulative[..shown] {
            devices.push(finished.saturating_sub(previous.0) as f64 / self.width);
            bytes.push(sent.saturating_sub(previous.1) as f64 / self.width);
            previous = (finished, sent);
        }
        Rates {
            bucket_seconds: self.width,
            devices_per_second: devices,
            bytes_per_second: bytes,
        }
    }

    /// Halves the number of buckets: each pair becomes one twice as wide, holding the later
    /// of the two values.
    fn merge(&mut self) {
        self.cumulative = self
            .cumulative
            .chunks(2)
            .map(|pair| pair[pair.len() - 1])
            .collect();
        self.width *= 2.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records `samples` (elapsed seconds, finished, bytes) and compares the rates.
    #[track_caller]
    fn check(samples: &[(f64, u64, u64)], complete: bool, expected: (f64, &[f64], &[f64])) {
        let mut series = Series::default();
        for &(elapsed, finished, bytes) in samples {
            series.record(elapsed, finished, bytes);
        }
        let rates = series.rates(complete);
        let got = (
            rates.bucket_seconds,
            rates.devices_per_second.as_slice(),
            rates.bytes_per_second.as_slice(),
        );
        assert_eq!(got, expected, "{samples:?}");
    }

    #[test]
    fn rates_per_bucket() {
        check(&[], true, (1.0, &[], &[]));
        check(
            &[(0.2, 1, 100), (0.9, 2, 300)],
            true,
            (1.0, &[2.0], &[300.0]),
        );
        check(
            &[(0.5, 2, 100), (1.5, 5, 400), (3.2, 6, 400)],
            true,
            (1.0, &[2.0, 3.0, 0.0, 1.0], &[100.0, 300.0, 0.0, 0.0]),
        );
        check(
            &[(0.5, 2, 100), (1.5, 5, 400)],
            false,
            (1.0, &[2.0], &[100.0]),
        );
    }

    #[test]
    fn a_long_run_merges_buckets_and_stays_bounded() {
        let mut series = Series::default();
        for second in 0..100_000u64 {
            series.record(second as f64 + 0.5, second + 1, 10 * (second + 1));
        }
        let rates = series.rates(true);
        assert!(rates.devices_per_second.len() <= MAX_BUCKETS);
        assert!(rates.devices_per_second.len() > MAX_BUCKETS / 2);
        assert_eq!(rates.bucket_seconds, 512.0);
        // One device a second all along: every complete bucket says so.
        let shown = &rates.devices_per_second[..rates.devices_per_second.len() - 1];
        assert!(shown.iter().all(|&rate| rate == 1.0), "{shown:?}");
        assert!(
            rates.bytes_per_second[1..3]
                .iter()
                .all(|&rate| rate == 10.0)
        );
        let total: f64 = rates.devices_per_second.iter().sum::<f64>() * rates.bucket_seconds;
        assert_eq!(total, 100_000.0, "nothing is lost in the merges");
    }
}

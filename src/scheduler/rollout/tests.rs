use super::*;

#[track_caller]
fn check_waves(devices: usize, spec: &str, expected: &[usize]) {
    let spec = if spec.is_empty() {
        Vec::new()
    } else {
        parse_waves(spec).unwrap()
    };
    assert_eq!(
        wave_sizes(devices, &spec),
        expected,
        "{devices} devices, waves {spec:?}"
    );
}

#[test]
fn waves_split_the_devices() {
    check_waves(100, "", &[100]);
    check_waves(100, "1,5%,25%,100%", &[1, 5, 25, 69]);
    check_waves(100, "10", &[10; 10]);
    check_waves(95, "10%", &[10, 10, 10, 10, 10, 10, 10, 10, 10, 5]);
    // Percentages round up, so a small fleet still gets a first wave of one device.
    check_waves(7, "10%,50%,100%", &[1, 4, 2]);
    check_waves(3, "1%", &[1, 1, 1]);
    // A wave list larger than the fleet: the fleet runs out first.
    check_waves(3, "1,1,1,1,1,1", &[1, 1, 1]);
    check_waves(3, "10,20", &[3]);
    check_waves(0, "1,10%", &[]);
    check_waves(1, "", &[1]);
}

#[test]
fn wave_sizes_parse() {
    assert_eq!(
        parse_waves("10,25%,100%"),
        Ok(vec![
            WaveSize::Count(10),
            WaveSize::Percent(25.0),
            WaveSize::Percent(100.0)
        ])
    );
    for bad in ["", "0", "0%", "101%", "x", "10,,20", "-1"] {
        assert!(parse_waves(bad).is_err(), "{bad}");
    }
}

#[track_caller]
fn check_threshold(max: &str, min_sample: usize, finished: usize, failed: usize, crossed: bool) {
    let policy = FailurePolicy {
        max: max.parse().unwrap(),
        min_sample,
    };
    assert_eq!(
        policy.crossed(finished, failed),
        crossed,
        "--max-failures {max} --min-sample {min_sample}: {failed}/{finished}"
    );
}

// One case per sentence of the documented rule (docs/rollout.md, "Failure threshold").
#[test]
fn threshold_is_evaluated_only_after_the_minimum_sample() {
    check_threshold("2", 10, 9, 9, false);
    check_threshold("2", 10, 10, 3, true);
}

#[test]
fn threshold_count_allows_that_many_failures() {
    check_threshold("2", 0, 100, 2, false);
    check_threshold("2", 0, 100, 3, true);
    check_threshold("0", 0, 1, 1, true);
}

#[test]
fn threshold_percentage_allows_that_share_of_finished_devices_rounded_down() {
    check_threshold("2%", 50, 50, 1, false);
    check_threshold("2%", 50, 50, 2, true);
    check_threshold("2%", 50, 100, 2, false);
    check_threshold("2%", 50, 149, 2, false);
    check_threshold("2%", 50, 149, 3, true);
    check_threshold("10%", 10, 10, 1, false);
    check_threshold("0%", 1, 1, 1, true);
    check_threshold("100%", 1, 5, 5, false);
}

#[test]
fn threshold_counts_over_the_whole_run_not_per_wave() {
    // 30 finished over two waves with 2 failures in each: 4 > 3% of 30 (0) and > 3.
    check_threshold("3", 10, 30, 4, true);
    check_threshold("10%", 10, 40, 4, false);
}

#[test]
fn thresholds_parse() {
    assert_eq!("5".parse::<Threshold>(), Ok(Threshold::Count(5)));
    assert_eq!("2.5%".parse::<Threshold>(), Ok(Threshold::Percent(2.5)));
    for bad in ["", "x", "-1", "101%", "%"] {
        assert!(bad.parse::<Threshold>().is_err(), "{bad}");
    }
    // The message said only "use a count (5) or a percentage (2%)" for 150%.
    let error = "150%".parse::<Threshold>().unwrap_err();
    assert!(error.contains("a percentage is at most 100%"), "{error}");
}

// Broke: --min-sample 50 on a run of 20 devices never evaluated the threshold (10 of 20
// failed, exit 1); it is evaluated once every device this run pushes has finished.
#[test]
fn threshold_is_evaluated_from_the_whole_run_when_it_is_smaller_than_the_sample() {
    let policy = |min_sample| FailurePolicy {
        max: Threshold::Count(1),
        min_sample,
    };
    for (min_sample, devices, effective) in [(50, 20, 20), (10, 3, 3), (10, 30, 10), (0, 5, 0)] {
        assert_eq!(
            policy(min_sample).for_run(devices).min_sample,
            effective,
            "--min-sample {min_sample}, {devices} devices"
        );
    }
    assert!(policy(50).for_run(20).crossed(20, 10));
}

#[test]
fn rates_parse() {
    let rate: Rate = "120/min".parse().unwrap();
    assert_eq!(
        (rate.per_second, rate.to_string()),
        (2.0, "120/min".to_string())
    );
    assert_eq!("5/s".parse::<Rate>().map(|r| r.per_second), Ok(5.0));
    assert_eq!("3600/h".parse::<Rate>().map(|r| r.per_second), Ok(1.0));
    for bad in ["0/s", "5", "5/day", "x/s", "-1/s"] {
        assert!(bad.parse::<Rate>().is_err(), "{bad}");
    }
    // The message said only "use N/s, N/min or N/h" for a count past u32.
    let error = "4294967296/s".parse::<Rate>().unwrap_err();
    assert!(
        error.contains("4294967296 is too large, at most 4294967295"),
        "{error}"
    );
    assert_eq!(parse_bandwidth("40MiB/s"), Ok(40 << 20));
    assert_eq!(parse_bandwidth("500KB/s"), Ok(500_000));
    assert!(parse_bandwidth("40MiB").is_err());
    assert!(parse_bandwidth("0/s").is_err());
}

#[track_caller]
fn check_bucket(rate: f64, capacity: f64, takes: &[(f64, u64)], expected_waits_ms: &[u64]) {
    let mut bucket = TokenBucket::new(rate, capacity, Duration::ZERO);
    let waits: Vec<u64> = takes
        .iter()
        .map(|&(amount, at_ms)| {
            bucket
                .take(amount, Duration::from_millis(at_ms))
                .as_millis() as u64
        })
        .collect();
    assert_eq!(waits, expected_waits_ms);
}

#[test]
fn token_buckets_space_takers_and_keep_the_long_run_rate() {
    // 10 starts/s, no burst beyond one: back-to-back starts are 100 ms apart.
    check_bucket(
        10.0,
        1.0,
        &[(1.0, 0), (1.0, 0), (1.0, 0), (1.0, 0)],
        &[0, 100, 200, 300],
    );
    // Time passing refills, up to the capacity only.
    check_bucket(
        10.0,
        1.0,
        &[(1.0, 0), (1.0, 1000), (1.0, 1000)],
        &[0, 0, 100],
    );
    // Bytes: 1 MB/s budget, 0.1 MB burst; 10 x 100 KB at t=0 take 0.9 s to drain.
    let takes: Vec<(f64, u64)> = (0..10).map(|_| (100_000.0, 0)).collect();
    check_bucket(
        1e6,
        1e5,
        &takes,
        &[0, 100, 200, 300, 400, 500, 600, 700, 800, 900],
    );
    // A clock that goes backwards (threads reading it in another order) is not a refill.
    check_bucket(10.0, 1.0, &[(1.0, 500), (1.0, 400)], &[0, 100]);
}

#[track_caller]
fn check_window(window: &str, now: &str, open: bool, opens_in_minutes: u64) {
    let window: Window = window.parse().unwrap();
    let (h, m) = now.split_once(':').unwrap();
    let now = h.parse::<u32>().unwrap() * 3600 + m.parse::<u32>().unwrap() * 60;
    assert_eq!(window.is_open(now), open, "{window} at {h}:{m}");
    assert_eq!(
        window.opens_in(now),
        Duration::from_secs(opens_in_minutes * 60),
        "{window} at {h}:{m}"
    );
}

#[track_caller]
fn check_closes_in(window: &str, now: &str, closes_in_minutes: u64) {
    let window: Window = window.parse().unwrap();
    let (h, m) = now.split_once(':').unwrap();
    let now = h.parse::<u32>().unwrap() * 3600 + m.parse::<u32>().unwrap() * 60;
    assert_eq!(
        window.closes_in(now),
        Duration::from_secs(closes_in_minutes * 60),
        "{window} at {h}:{m}"
    );
}

#[test]
fn a_window_says_when_it_closes() {
    check_closes_in("01:00-05:00", "01:00", 4 * 60);
    check_closes_in("01:00-05:00", "04:59", 1);
    check_closes_in("01:00-05:00", "05:00", 0);
    check_closes_in("01:00-05:00", "00:30", 0);
    check_closes_in("22:00-02:00", "23:30", 150);
    check_closes_in("22:00-02:00", "01:59", 1);
    check_closes_in("22:00-02:00", "02:00", 0);
}

#[test]
fn windows_may_cross_midnight() {
    check_window("01:00-05:00", "01:00", true, 0);
    check_window("01:00-05:00", "04:59", true, 0);
    check_window("01:00-05:00", "05:00", false, 20 * 60);
    check_window("01:00-05:00", "00:30", false, 30);
    check_window("22:00-02:00", "23:30", true, 0);
    check_window("22:00-02:00", "01:59", true, 0);
    check_window("22:00-02:00", "02:00", false, 20 * 60);
    check_window("22:00-02:00", "21:00", false, 60);
    assert_eq!(
        "1:5-23:59".parse::<Window>().map(|w| w.to_string()),
        Ok("01:05-23:59".to_string())
    );
    for bad in ["01:00", "25:00-01:00", "01:60-02:00", "x-y", "01:00-01:00"] {
        assert!(bad.parse::<Window>().is_err(), "{bad}");
    }
}

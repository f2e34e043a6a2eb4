//! The flag-value parsers: durations, sizes, percentages, shards, rates, thresholds, waves and
//! bandwidths. None panics on any text; values written the documented way parse back exactly.

use proptest::prelude::*;
use std::time::Duration;
use update_orchestrator::cli::{parse_duration, parse_percent, parse_size};
use update_orchestrator::scheduler::{
    Rate, Shard, Threshold, WaveSize, parse_bandwidth, parse_waves,
};

/// Text that looks like flag values often enough to reach deep into the parsers: digits, dots,
/// units, separators, signs, exponents and a little of anything.
fn flag_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9.]{0,25}(ms|s|m|min|h|KiB|MiB|GiB|KB|MB|GB|B|K|%|/s|/min|/h|)[0-9a-z%/., -]{0,12}",
        "[0-9]{1,22}(h|m|s|ms)[0-9]{1,22}(h|m|s|ms)",
        // Near the limits: a sum of parts that each fit can still overflow.
        "(1[0-7][0-9]{18}(s|ms)|[1-9][0-9]{13,14}h|[0-9]{1,3}(h|m|s|ms)){1,4}",
        "[-+eE0-9.]{0,12}(%|/|,)?[-+eE0-9.%/,]{0,12}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::CASES))]

    #[test]
    fn no_parser_panics(text in flag_text()) {
        let _ = parse_duration(&text);
        let _ = parse_size(&text);
        let _ = parse_percent(&text);
        let _ = parse_bandwidth(&text);
        let _ = parse_waves(&text);
        let _ = text.parse::<Shard>();
        let _ = text.parse::<Rate>();
        let _ = text.parse::<Threshold>();
    }

    #[test]
    fn durations_round_trip(h in 0u64..1000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
        let expected = Duration::from_millis(((h * 60 + m) * 60 + s) * 1000 + ms);
        for text in [format!("{h}h{m}m{s}s{ms}ms"), format!("{}ms", expected.as_millis())] {
            let got = parse_duration(&text).map_err(TestCaseError::fail)?;
            let error = got.abs_diff(expected);
            prop_assert!(error < Duration::from_micros(1), "{}: {:?} != {:?}", text, got, expected);
        }
        let seconds = parse_duration(&expected.as_secs().to_string()).map_err(TestCaseError::fail)?;
        prop_assert_eq!(seconds, Duration::from_secs(expected.as_secs()));
    }

    #[test]
    fn sizes_round_trip(n in 0u64..(1 << 32), unit in 0usize..7) {
        let (suffix, factor) = [("", 1), ("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("KB", 1000), ("MB", 1_000_000)][unit];
        prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Ok(n * factor));
        prop_assert_eq!(parse_size(&format!("{n} {suffix}")), Ok(n * factor));
    }

    #[test]
    fn percentages_are_in_range_and_round_trip(p in 0.0f64..=100.0, text in flag_text()) {
        prop_assert_eq!(parse_percent(&format!("{p}%")), Ok(p));
        if let Ok(q) = parse_percent(&text) {
            prop_assert!((0.0..=100.0).contains(&q), "{} gave {}", text, q);
        }
    }

    #[test]
    fn shards_round_trip_and_partition(count in 1u32..64, ids in prop::collection::vec(any::<String>(), 1..20)) {
        let shards: Vec<Shard> = (0..count)
            .map(|index| format!("{index}/{count}").parse::<Shard>())
            .collect::<Result<_, _>>()
            .map_err(TestCaseError::fail)?;
        for (index, shard) in shards.iter().enumerate() {
            prop_assert_eq!(shard.to_string(), format!("{index}/{count}"));
        }
        let too_far = format!("{count}/{count}");
        prop_assert!(too_far.parse::<Shard>().is_err(), "{} was accepted", too_far);
        for id in &ids {
            let owners = shards.iter().filter(|shard| shard.contains(id)).count();
            prop_assert_eq!(owners, 1, "{:?} belongs to {} shards", id, owners);
        }
    }

    #[test]
    fn rates_thresholds_waves_and_bandwidths_round_trip(
        n in 1u32..1_000_000,
        unit in prop::sample::select(vec!["s", "min", "h"]),
        p in 0.0f64..=100.0,
        waves in prop::collection::vec((1usize..10_000, 0.001f64..=100.0, any::<bool>()), 1..8),
    ) {
        let rate: Rate = format!("{n}/{unit}").parse().map_err(TestCaseError::fail)?;
        prop_assert_eq!(rate.to_string(), format!("{n}/{unit}"));
        prop_assert_eq!(format!("{n}").parse::<Threshold>(), Ok(Threshold::Count(n as usize)));
        prop_assert_eq!(format!("{p}%").parse::<Threshold>(), Ok(Threshold::Percent(p)));
        prop_assert_eq!(parse_bandwidth(&format!("{n}KiB/s")), Ok(u64::from(n) * 1024));
        let expected: Vec<WaveSize> = waves
            .iter()
            .map(|&(count, percent, is_count)| if is_count { WaveSize::Count(count) } else { WaveSize::Percent(percent) })
            .collect();
        let text: Vec<String> = expected
            .iter()
            .map(|wave| match wave {
                WaveSize::Count(n) => n.to_string(),
                WaveSize::Percent(p) => format!("{p}%"),
            })
            .collect();
        prop_assert_eq!(parse_waves(&text.join(",")), Ok(expected));
    }
}

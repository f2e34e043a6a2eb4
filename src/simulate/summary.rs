//! A short text summary of a simulated fleet's counters, for `demo` and benchmark output.
//!
//! Owns: the rendering. Must not: do IO or read live counters (it takes a snapshot).

use super::DeviceStats;

/// Profile names in the order the summary lists them.
const PROFILE_ORDER: [&str; 10] = [
    "healthy",
    "flaky",
    "dead",
    "slow",
    "reset",
    "stall",
    "refuse",
    "multipart",
    "updated",
    "bad-update",
];

/// One line per profile present (devices, requests, completed uploads, bytes received), then a
/// total line, under a header line. Pure: takes a snapshot from [`super::Fleet::stats`].
pub fn summary(stats: &[DeviceStats]) -> String {
    let mut out = row("profile", ["devices", "requests", "completed", "bytes"]);
    for name in PROFILE_ORDER {
        let group: Vec<&DeviceStats> = stats
            .iter()
            .filter(|s| s.profile.to_string() == name)
            .collect();
        if !group.is_empty() {
            out.push_str(&totals_row(name, &group));
        }
    }
    let all: Vec<&DeviceStats> = stats.iter().collect();
    out.push_str(&totals_row("total", &all));
    out
}

fn totals_row(label: &str, group: &[&DeviceStats]) -> String {
    let sum =
        |field: fn(&DeviceStats) -> u64| group.iter().map(|s| field(s)).sum::<u64>().to_string();
    row(
        label,
        [
            group.len().to_string(),
            sum(|s| s.requests),
            sum(|s| s.completed),
            sum(|s| s.bytes),
        ],
    )
}

fn row(label: &str, cells: [impl AsRef<str>; 4]) -> String {
    let [devices, requests, completed, bytes] = cells.each_ref().map(AsRef::as_ref);
    format!("{label:<8}{devices:>8}{requests:>10}{completed:>11}{bytes:>14}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::Profile;

    fn device(profile: Profile, requests: u64, completed: u64, bytes: u64) -> DeviceStats {
        DeviceStats {
            id: "d".to_string(),
            profile,
            requests,
            completed,
            bytes,
            digest_mismatches: 0,
            last_form: None,
            version: "1.0".to_string(),
            installs: 0,
            rollbacks: 0,
        }
    }

    #[track_caller]
    fn check(stats: &[DeviceStats], expected: &str) {
        assert_eq!(summary(stats), expected);
    }

    #[test]
    fn renders_profiles_in_a_fixed_order_with_totals() {
        check(
            &[],
            "profile  devices  requests  completed         bytes\n\
             total          0         0          0             0\n",
        );
        check(
            &[
                device(Profile::Dead, 3, 0, 300),
                device(Profile::Healthy, 1, 1, 65536),
                device(Profile::Flaky { failures: 2 }, 3, 1, 196608),
                device(Profile::Healthy, 1, 1, 65536),
                device(Profile::Flaky { failures: 1 }, 2, 1, 131072),
            ],
            "profile  devices  requests  completed         bytes\n\
             healthy        2         2          2        131072\n\
             flaky          2         5          2        327680\n\
             dead           1         3          0           300\n\
             total          5        10          4        459052\n",
        );
    }
}

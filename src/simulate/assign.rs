//! Deterministic assignment of fault profiles to simulated devices.
//!
//! Owns: the seeded PRNG and the mapping from a spec's fault percentages to device indices.
//! Must not: do IO or depend on anything but the spec (same spec, same profiles).

use super::{FleetSpec, Profile};
use std::io;

/// One profile per device, in device order. Faults go to distinct devices picked by a seeded
/// shuffle; the rest are healthy.
pub(crate) fn assign_profiles(spec: &FleetSpec) -> io::Result<Vec<Profile>> {
    let counts = fault_counts(spec)?;
    let mut rng = SplitMix64(spec.seed);
    let mut order: Vec<usize> = (0..spec.devices).collect();
    rng.shuffle(&mut order);
    let mut profiles = vec![Profile::Healthy; spec.devices];
    let mut picked = order.into_iter();
    for (fault, count) in counts {
        for device in picked.by_ref().take(count) {
            profiles[device] = fault.profile(&mut rng);
        }
    }
    Ok(profiles)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Flaky,
    Dead,
    Slow,
    Reset,
    Stall,
    Refuse,
    Multipart,
    Updated,
    BadUpdate,
    Unauthorized,
    TooLarge,
    IgnoresExpect,
}

/// In this order; new kinds go at the end, so a spec without them gives the same devices the
/// same faults as before.
const FAULTS: [Fault; 12] = [
    Fault::Flaky,
    Fault::Dead,
    Fault::Slow,
    Fault::Reset,
    Fault::Stall,
    Fault::Refuse,
    Fault::Multipart,
    Fault::Updated,
    Fault::BadUpdate,
    Fault::Unauthorized,
    Fault::TooLarge,
    Fault::IgnoresExpect,
];

impl Fault {
    fn percent(self, spec: &FleetSpec) -> f64 {
        match self {
            Fault::Flaky => spec.flaky_percent,
            Fault::Dead => spec.dead_percent,
            Fault::Slow => spec.slow_percent,
            Fault::Reset => spec.reset_percent,
            Fault::Stall => spec.stall_percent,
            Fault::Refuse => spec.refuse_percent,
            Fault::Multipart => spec.multipart_percent,
            Fault::Updated => spec.updated_percent,
            Fault::BadUpdate => spec.bad_update_percent,
            Fault::Unauthorized => spec.unauthorized_percent,
            Fault::TooLarge => spec.too_large_percent,
            Fault::IgnoresExpect => spec.ignore_expect_percent,
        }
    }

    fn field(self) -> &'static str {
        match self {
            Fault::Flaky => "flaky_percent",
            Fault::Dead => "dead_percent",
            Fault::Slow => "slow_percent",
            Fault::Reset => "reset_percent",
            Fault::Stall => "stall_percent",
            Fault::Refuse => "refuse_percent",
            Fault::Multipart => "multipart_percent",
            Fault::Updated => "updated_percent",
            Fault::BadUpdate => "bad_update_percent",
            Fault::Unauthorized => "unauthorized_percent",
            Fault::TooLarge => "too_large_percent",
            Fault::IgnoresExpect => "ignore_expect_percent",
        }
    }

    fn profile(self, rng: &mut SplitMix64) -> Profile {
        match self {
            Fault::Flaky => Profile::Flaky {
                failures: 1 + (rng.next() % 2) as u32,
            },
            Fault::Dead => Profile::Dead,
            Fault::Slow => Profile::Slow,
            Fault::Reset => Profile::Reset,
            Fault::Stall => Profile::Stall,
            Fault::Refuse => Profile::Refuse,
            Fault::Multipart => Profile::Multipart,
            Fault::Updated => Profile::Updated,
            Fault::BadUpdate => Profile::BadUpdate,
            Fault::Unauthorized => Profile::Unauthorized,
            Fault::TooLarge => Profile::TooLarge,
            Fault::IgnoresExpect => Profile::IgnoresExpect,
        }
    }
}

/// How many devices get each fault, checking that the faults fit in the fleet.
fn fault_counts(spec: &FleetSpec) -> io::Result<Vec<(Fault, usize)>> {
    let mut total_percent = 0.0;
    let mut counts = Vec::with_capacity(FAULTS.len());
    for fault in FAULTS {
        let percent = fault.percent(spec);
        if !(0.0..=100.0).contains(&percent) {
            let field = fault.field();
            return Err(invalid(format!(
                "{field} must be between 0 and 100, got {percent}"
            )));
        }
        total_percent += percent;
        counts.push((fault, fault_count(percent, spec.devices)));
    }
    if total_percent > 100.0 + 1e-9 {
        return Err(invalid(format!(
            "fault percentages add up to {total_percent}%: lower them to 100% or less"
        )));
    }
    let total_count: usize = counts.iter().map(|(_, count)| count).sum();
    if total_count > spec.devices {
        return Err(invalid(format!(
            "faults need {total_count} distinct devices but the fleet has {}: add devices or lower the percentages",
            spec.devices
        )));
    }
    Ok(counts)
}

/// `round(percent / 100 × devices)`, at least 1 when the percentage is above 0.
fn fault_count(percent: f64, devices: usize) -> usize {
    if percent <= 0.0 || devices == 0 {
        return 0;
    }
    let count = (percent / 100.0 * devices as f64).round() as usize;
    count.clamp(1, devices)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, good enough to pick devices.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fisher–Yates; the modulo bias is negligible for fleet sizes.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentages in the order flaky, dead, slow, reset, stall.
    fn spec(devices: usize, percents: [f64; 5], seed: u64) -> FleetSpec {
        FleetSpec {
            devices,
            flaky_percent: percents[0],
            dead_percent: percents[1],
            slow_percent: percents[2],
            reset_percent: percents[3],
            stall_percent: percents[4],
            seed,
            ..FleetSpec::default()
        }
    }

    /// Counts per profile name, in the order healthy, flaky, dead, slow, reset, stall.
    fn tally(profiles: &[Profile]) -> [usize; 6] {
        let mut counts = [0; 6];
        for profile in profiles {
            let slot = match profile {
                Profile::Healthy => 0,
                Profile::Flaky { .. } => 1,
                Profile::Dead => 2,
                Profile::Slow => 3,
                Profile::Reset => 4,
                Profile::Stall => 5,
                Profile::Refuse => panic!("these specs set no refuse percentage"),
                Profile::Multipart => panic!("these tests give no device a multipart share"),
                Profile::Updated | Profile::BadUpdate => continue, // see versions_are_faults_too
                Profile::Unauthorized | Profile::TooLarge | Profile::IgnoresExpect => {
                    panic!("these specs set no Expect-related percentage")
                }
            };
            counts[slot] += 1;
        }
        counts
    }

    #[test]
    fn versions_are_faults_too_and_leave_the_others_where_they_were() {
        let before = assign_profiles(&spec(20, [10.0, 5.0, 0.0, 0.0, 0.0], 3)).unwrap();
        let mut versioned = spec(20, [10.0, 5.0, 0.0, 0.0, 0.0], 3);
        versioned.updated_percent = 10.0;
        versioned.bad_update_percent = 5.0;
        let after = assign_profiles(&versioned).unwrap();
        let count = |profile: Profile| after.iter().filter(|p| **p == profile).count();
        assert_eq!((count(Profile::Updated), count(Profile::BadUpdate)), (2, 1));
        for (old, new) in before.iter().zip(&after) {
            if *old != Profile::Healthy {
                assert_eq!(old, new);
            }
        }
        versioned.bad_update_percent = 90.0;
        let error = assign_profiles(&versioned).unwrap_err();
        assert!(error.to_string().contains("add up to"), "{error}");
    }

    #[track_caller]
    fn check(devices: usize, percents: [f64; 5], expected: Result<[usize; 6], &str>) {
        let got = assign_profiles(&spec(devices, percents, 7));
        match (got, expected) {
            (Ok(profiles), Ok(counts)) => assert_eq!(tally(&profiles), counts),
            (Err(error), Err(needle)) => {
                assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
                assert!(error.to_string().contains(needle), "{error}");
            }
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn counts_per_profile() {
        check(200, [5.0, 0.0, 0.0, 0.0, 0.0], Ok([190, 10, 0, 0, 0, 0]));
        check(200, [5.0, 2.5, 1.0, 1.0, 0.5], Ok([180, 10, 5, 2, 2, 1]));
        check(10, [0.0; 5], Ok([10, 0, 0, 0, 0, 0]));
        check(10, [1.0, 0.0, 0.0, 0.0, 0.0], Ok([9, 1, 0, 0, 0, 0]));
        check(0, [50.0, 0.0, 0.0, 0.0, 0.0], Ok([0; 6]));
        check(4, [100.0, 0.0, 0.0, 0.0, 0.0], Ok([0, 4, 0, 0, 0, 0]));
        check(3, [20.0, 20.0, 20.0, 20.0, 20.0], Err("5 distinct devices"));
        check(10, [60.0, 50.0, 0.0, 0.0, 0.0], Err("add up to 110%"));
        check(
            10,
            [-1.0, 0.0, 0.0, 0.0, 0.0],
            Err("flaky_percent must be between 0 and 100"),
        );
        check(10, [0.0, 0.0, f64::NAN, 0.0, 0.0], Err("slow_percent"));
    }

    #[test]
    fn assignment_is_deterministic_for_a_seed() {
        let percents = [5.0, 5.0, 0.0, 0.0, 0.0];
        let first = assign_profiles(&spec(200, percents, 42)).unwrap();
        let again = assign_profiles(&spec(200, percents, 42)).unwrap();
        let other = assign_profiles(&spec(200, percents, 43)).unwrap();
        assert_eq!(first, again);
        assert_ne!(first, other);
    }

    #[test]
    fn flaky_devices_fail_once_or_twice_and_both_occur() {
        let profiles = assign_profiles(&spec(200, [50.0, 0.0, 0.0, 0.0, 0.0], 3)).unwrap();
        let failures: Vec<u32> = profiles
            .iter()
            .filter_map(|profile| match profile {
                Profile::Flaky { failures } => Some(*failures),
                _ => None,
            })
            .collect();
        assert_eq!(failures.len(), 100);
        assert!(failures.iter().all(|f| (1..=2).contains(f)));
        assert!(failures.contains(&1) && failures.contains(&2));
    }

    #[test]
    fn refusing_devices_are_counted_like_the_other_faults() {
        let spec = FleetSpec {
            devices: 200,
            flaky_percent: 5.0,
            refuse_percent: 1.0,
            ..FleetSpec::default()
        };
        let profiles = assign_profiles(&spec).unwrap();
        let refusing = profiles.iter().filter(|p| **p == Profile::Refuse).count();
        assert_eq!(refusing, 2);
        let too_many = FleetSpec {
            refuse_percent: 101.0,
            ..spec
        };
        let error = assign_profiles(&too_many).unwrap_err();
        assert!(error.to_string().contains("refuse_percent"), "{error}");
    }

    #[test]
    fn faulty_devices_are_spread_by_the_shuffle() {
        let profiles = assign_profiles(&spec(200, [5.0, 0.0, 0.0, 0.0, 0.0], 1)).unwrap();
        let flaky: Vec<usize> = (0..200)
            .filter(|&i| profiles[i] != Profile::Healthy)
            .collect();
        assert_eq!(flaky.len(), 10);
        assert_ne!(flaky, (0..10).collect::<Vec<_>>());
    }
}

//! Selecting devices: `--where` filters, `--shard`, and `--order`.
//!
//! Owns: the filter, shard and order types, their parsing from flag values, and applying them.
//! Must not: do IO.

use crate::registry::{Device, Registry};
use std::fmt;
use std::str::FromStr;

/// One `--where` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `COLUMN=VALUE`: the column equals the value.
    Equals(String, String),
    /// `COLUMN!=VALUE`: the column differs from the value.
    NotEquals(String, String),
    /// `COLUMN~TAG`: the column, a `;`-separated list, holds the tag.
    HasTag(String, String),
}

impl Filter {
    /// The column the filter reads.
    pub fn column(&self) -> &str {
        match self {
            Filter::Equals(column, _)
            | Filter::NotEquals(column, _)
            | Filter::HasTag(column, _) => column,
        }
    }

    /// Whether `value` (the device's value in the column) passes.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Filter::Equals(_, wanted) => value == wanted,
            Filter::NotEquals(_, unwanted) => value != unwanted,
            Filter::HasTag(_, tag) => value.split(';').any(|t| t.trim() == tag),
        }
    }
}

impl FromStr for Filter {
    type Err = String;

    fn from_str(text: &str) -> Result<Filter, String> {
        let invalid =
            || format!("invalid --where '{text}': use COLUMN=VALUE, COLUMN!=VALUE or COLUMN~TAG");
        let (column, filter, value): (&str, fn(String, String) -> Filter, &str) =
            if let Some((column, value)) = text.split_once("!=") {
                (column, Filter::NotEquals, value)
            } else if let Some((column, value)) = text.split_once('~') {
                (column, Filter::HasTag, value)
            } else if let Some((column, value)) = text.split_once('=') {
                (column, Filter::Equals, value)
            } else {
                return Err(invalid());
            };
        let column = column.trim();
        if column.is_empty() {
            return Err(invalid());
        }
        Ok(filter(column.to_string(), value.trim().to_string()))
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Equals(c, v) => write!(f, "{c}={v}"),
            Filter::NotEquals(c, v) => write!(f, "{c}!={v}"),
            Filter::HasTag(c, v) => write!(f, "{c}~{v}"),
        }
    }
}

/// `--shard I/N`: this runner takes the devices whose id hashes to `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: u32,
    /// How many shards there are.
    pub count: u32,
}

impl Shard {
    /// Whether the device with this id belongs to this shard. The hash is FNV-1a (64 bit) of
    /// the id's bytes: stable across runs, machines and versions, whatever the CSV order.
    pub fn contains(&self, id: &str) -> bool {
        fnv1a(id.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let invalid = || format!("invalid --shard '{text}': use I/N with 0 <= I < N, e.g. 3/8");
        let (index, count) = text.split_once('/').ok_or_else(invalid)?;
        let index: u32 = index.trim().parse().map_err(|_| invalid())?;
        let count: u32 = count.trim().parse().map_err(|_| invalid())?;
        if count == 0 || index >= count {
            return Err(invalid());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The dispatch order of the selected devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The CSV's order.
    #[default]
    Csv,
    /// A shuffle that is the same for the same seed.
    Random(u64),
}

/// FNV-1a, 64 bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// Whether `device` passes every filter (AND).
pub fn passes(registry: &Registry, device: &Device, filters: &[Filter]) -> bool {
    filters
        .iter()
        .all(|filter| filter.matches(registry.value(device, filter.column()).unwrap_or("")))
}

/// Checks that every filter names a column of the registry.
pub fn check_filters(filters: &[Filter], header: &[String]) -> Result<(), String> {
    for filter in filters {
        if !header.iter().any(|column| column == filter.column()) {
            return Err(format!(
                "--where {filter}: the registry has no column '{}' (it has {})",
                filter.column(),
                header.join(", ")
            ));
        }
    }
    Ok(())
}

/// Why `--where` and `--shard` select no device of a registry that has some, naming the filter
/// and the values its column does have (a typo such as `site=eu-wset` otherwise pushes nothing
/// and succeeds); `None` when some device is selected or the registry is empty.
pub fn empty_selection(
    registry: &Registry,
    filters: &[Filter],
    shard: Option<Shard>,
) -> Option<String> {
    let devices = &registry.devices;
    let selected = |device: &&Device| passes(registry, device, filters);
    if devices.is_empty()
        || devices
            .iter()
            .filter(selected)
            .any(|d| shard.is_none_or(|s| s.contains(&d.id)))
    {
        return None;
    }
    let source = &registry.source;
    let lone = filters.iter().find(|filter| {
        !devices
            .iter()
            .any(|d| filter.matches(registry.value(d, filter.column()).unwrap_or("")))
    });
    Some(match (lone, shard) {
        (Some(filter), _) => format!(
            "--where {filter} selects none of the {} devices in {source}: {}; fix the value",
            devices.len(),
            column_values(registry, filter)
        ),
        (None, Some(shard)) if devices.iter().any(|d| selected(&d)) => format!(
            "--shard {shard} selects none of the {} devices that {} leave in {source}: use fewer shards",
            devices.iter().filter(selected).count(),
            if filters.is_empty() {
                "the registry".to_string()
            } else {
                where_flags(filters)
            }
        ),
        _ => {
            let columns: Vec<String> = filters.iter().map(|f| column_values(registry, f)).collect();
            format!(
                "{} together select none of the {} devices in {source}: {}",
                where_flags(filters),
                devices.len(),
                columns.join("; ")
            )
        }
    })
}

/// `--where A --where B`, as typed.
fn where_flags(filters: &[Filter]) -> String {
    let flags: Vec<String> = filters.iter().map(|f| format!("--where {f}")).collect();
    flags.join(" ")
}

/// `site has: eu-west, us-east` (the first values in registry order, then a count), tags one
/// by one for `~`.
fn column_values(registry: &Registry, filter: &Filter) -> String {
    const SHOWN: usize = 10;
    const SHOWN_CHARS: usize = 40;
    let column = filter.column();
    let mut values: Vec<&str> = Vec::new();
    for device in &registry.devices {
        let value = registry.value(device, column).unwrap_or("");
        let parts: Vec<&str> = match filter {
            Filter::HasTag(..) => value.split(';').map(str::trim).collect(),
            _ => vec![value],
        };
        for part in parts {
            if !values.contains(&part) {
                values.push(part);
            }
        }
    }
    let mut shown: Vec<String> = values
        .iter()
        .take(SHOWN)
        .map(|v| {
            if v.is_empty() {
                "(empty)".to_string()
            } else if v.chars().count() > SHOWN_CHARS {
                // A long cell (a key, a blob) would make the message as long as the registry.
                let head: String = v.chars().take(SHOWN_CHARS).collect();
                format!("{head}...")
            } else {
                v.to_string()
            }
        })
        .collect();
    if values.len() > SHOWN {
        shown.push(format!("... ({} values in all)", values.len()));
    }
    format!("{column} has: {}", shown.join(", "))
}

/// Puts `indexes` in `order` (a seeded Fisher-Yates shuffle for `Random`).
pub fn apply_order(indexes: &mut [usize], order: Order) {
    if let Order::Random(seed) = order {
        let mut jitter = super::Jitter::new(seed);
        for i in (1..indexes.len()).rev() {
            let j = (jitter.next_fraction() * (i + 1) as f64) as usize;
            indexes.swap(i, j.min(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_filter(text: &str, value: &str, expected: Result<bool, &str>) {
        let got = text.parse::<Filter>().map(|filter| filter.matches(value));
        assert_eq!(got, expected.map_err(str::to_string), "{text} on {value:?}");
    }

    #[test]
    fn filters_parse_and_match() {
        check_filter("site=eu-west", "eu-west", Ok(true));
        check_filter("site=eu-west", "eu-west-2", Ok(false));
        check_filter("site!=eu-west", "us-east", Ok(true));
        check_filter("site!=eu-west", "eu-west", Ok(false));
        check_filter("tags~pos", "kiosk;pos; lab", Ok(true));
        check_filter("tags~lab", "kiosk;pos; lab", Ok(true));
        check_filter("tags~po", "kiosk;pos", Ok(false));
        check_filter("group=", "", Ok(true));
        check_filter("a=b=c", "b=c", Ok(true));
        check_filter(
            "site",
            "x",
            Err("invalid --where 'site': use COLUMN=VALUE, COLUMN!=VALUE or COLUMN~TAG"),
        );
        check_filter(
            "=x",
            "x",
            Err("invalid --where '=x': use COLUMN=VALUE, COLUMN!=VALUE or COLUMN~TAG"),
        );
    }

    #[track_caller]
    fn check_empty(filters: &[&str], shard: Option<&str>, expected: Option<&str>) {
        let text = "id,url,site,tags\na,http://h/a,eu-west,pos;lab\nb,http://h/b,us-east,kiosk\nc,http://h/c,eu-west,\n";
        let registry = crate::registry::load("d.csv", text.as_bytes(), None).unwrap();
        let filters: Vec<Filter> = filters.iter().map(|f| f.parse().unwrap()).collect();
        let shard = shard.map(|s| s.parse().unwrap());
        let got = empty_selection(&registry, &filters, shard);
        assert_eq!(got.as_deref(), expected, "{filters:?} {shard:?}");
    }

    #[test]
    fn an_empty_selection_names_the_filter_and_the_values() {
        check_empty(&["site=eu-west"], None, None);
        check_empty(&[], Some("0/1"), None);
        check_empty(
            &["site=eu-wset"],
            None,
            Some(
                "--where site=eu-wset selects none of the 3 devices in d.csv: site has: eu-west, us-east; fix the value",
            ),
        );
        check_empty(
            &["tags~kisok"],
            None,
            Some(
                "--where tags~kisok selects none of the 3 devices in d.csv: tags has: pos, lab, kiosk, (empty); fix the value",
            ),
        );
        check_empty(
            &["site=us-east", "tags~pos"],
            None,
            Some(
                "--where site=us-east --where tags~pos together select none of the 3 devices in d.csv: site has: eu-west, us-east; tags has: pos, lab, kiosk, (empty)",
            ),
        );
        let shard = (0..64u32)
            .find(|&i| {
                !["b"].iter().any(|id| {
                    Shard {
                        index: i,
                        count: 64,
                    }
                    .contains(id)
                })
            })
            .unwrap();
        let shard = format!("{shard}/64");
        check_empty(
            &["site=us-east"],
            Some(&shard),
            Some(&format!(
                "--shard {shard} selects none of the 1 devices that --where site=us-east leave in d.csv: use fewer shards"
            )),
        );
    }

    #[test]
    fn a_long_list_of_values_is_capped() {
        let mut text = String::from("id,url,site\n");
        for i in 0..25 {
            text.push_str(&format!("d{i},http://h/{i},s{i}\n"));
        }
        let registry = crate::registry::load("d.csv", text.as_bytes(), None).unwrap();
        let got = empty_selection(&registry, &["site=x".parse().unwrap()], None).unwrap();
        assert!(got.ends_with("site has: s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, ... (25 values in all); fix the value"), "{got}");
        // A 2 MB cell made a 2 MB message: each value shows its first 40 characters.
        let long = "é".repeat(1 << 20);
        let text = format!("id,url,key\na,http://h/a,{long}\nb,http://h/b,short\n");
        let registry = crate::registry::load("d.csv", text.as_bytes(), None).unwrap();
        let got = empty_selection(&registry, &["key=x".parse().unwrap()], None).unwrap();
        let shown = format!("key has: {}..., short; fix the value", "é".repeat(40));
        let start: String = got.chars().take(300).collect();
        assert!(got.ends_with(&shown) && got.len() < 300, "{start}");
    }

    #[track_caller]
    fn check_shard(text: &str, expected: Result<(u32, u32), ()>) {
        let got = text
            .parse::<Shard>()
            .map(|s| (s.index, s.count))
            .map_err(|_| ());
        assert_eq!(got, expected, "{text}");
    }

    #[test]
    fn shards_parse() {
        check_shard("3/8", Ok((3, 8)));
        check_shard("0/1", Ok((0, 1)));
        check_shard("8/8", Err(()));
        check_shard("1/0", Err(()));
        check_shard("-1/4", Err(()));
        check_shard("3", Err(()));
    }

    #[test]
    fn shards_partition_any_set_of_ids() {
        let ids: Vec<String> = (0..1000).map(|i| format!("dev-{i:05}")).collect();
        for count in [1, 2, 3, 8] {
            let mut seen = vec![0; ids.len()];
            for index in 0..count {
                let shard = Shard { index, count };
                for (i, id) in ids.iter().enumerate() {
                    seen[i] += usize::from(shard.contains(id));
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{count} shards");
        }
        // Stable: a known id always lands in the same shard.
        assert_eq!(fnv1a(b"dev-00001") % 8, fnv1a(b"dev-00001") % 8);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn random_order_is_a_stable_permutation() {
        let mut a: Vec<usize> = (0..50).collect();
        let mut b = a.clone();
        apply_order(&mut a, Order::Random(7));
        apply_order(&mut b, Order::Random(7));
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        let mut csv: Vec<usize> = (0..5).collect();
        apply_order(&mut csv, Order::Csv);
        assert_eq!(csv, [0, 1, 2, 3, 4]);
    }
}

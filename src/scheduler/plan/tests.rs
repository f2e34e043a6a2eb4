use super::*;
use crate::journal::Journal;
use crate::scheduler::rollout::parse_waves;

fn journal_of(records: &[(&str, &str, DeviceState)]) -> Journal {
    use crate::journal::Record;
    let mut text = String::from(
        r#"{"journal":"update-orchestrator-journal","version":1,"payload_sha256":"x","payload_size":1,"created":"t"}"#,
    );
    text.push('\n');
    let mut journal = Journal::parse(std::path::Path::new("j"), text.as_bytes()).unwrap();
    for (id, url, state) in records {
        let (at, id, url, fields) = ("t".to_string(), id.to_string(), url.to_string(), vec![]);
        journal.apply(match state {
            DeviceState::Succeeded => Record::Succeeded {
                at,
                id,
                url,
                attempts: 1,
                bytes: 1,
                fields,
                lifecycle: None,
                transfer: None,
            },
            DeviceState::Failed => Record::Failed {
                at,
                id,
                url,
                attempts: 1,
                bytes: 1,
                class: "http-5xx".into(),
                error: "e".into(),
                fields,
                lifecycle: None,
            },
            DeviceState::Interrupted => Record::Interrupted {
                at,
                id,
                url,
                attempts: 1,
                bytes: 1,
                error: "interrupted: e".into(),
                fields,
                lifecycle: None,
            },
            DeviceState::Unfinished => Record::Attempt { at, id, attempt: 1 },
        });
    }
    journal
}

#[track_caller]
fn check_plan(
    records: &[(&str, &str, DeviceState)],
    only_failed: bool,
    expected_order: &[&str],
    expected_skipped: &[(&str, SkipReason)],
    expected_url_changed: &[&str],
) {
    let registry = crate::registry::load(
        "t.csv",
        &b"id,url\nd,http://h/d\nb,http://h/b\na,http://h/a2\nc,http://h/c\n"[..],
        None,
    )
    .unwrap();
    let journal = journal_of(records);
    let selection = Selection {
        journal: Some(&journal),
        only_failed,
        ..Selection::default()
    };
    let plan = Plan::build(&registry, &selection);
    let id = |index: &usize| registry.devices[*index].id.to_string();
    let order: Vec<String> = plan.order().map(|i| id(&i)).collect();
    let skipped: Vec<(String, SkipReason)> =
        plan.skipped.iter().map(|(i, r)| (id(i), *r)).collect();
    let changed: Vec<String> = plan.url_changed.iter().map(id).collect();
    assert_eq!(order, expected_order);
    let expected: Vec<(String, SkipReason)> = expected_skipped
        .iter()
        .map(|(i, r)| (i.to_string(), *r))
        .collect();
    assert_eq!(skipped, expected);
    assert_eq!(changed, expected_url_changed);
}

#[test]
fn journal_skips_successes_by_id_not_position() {
    use DeviceState::*;
    use SkipReason::*;
    check_plan(&[], false, &["d", "b", "a", "c"], &[], &[]);
    check_plan(
        &[
            ("b", "http://h/b", Succeeded),
            ("c", "http://h/c", Failed),
            ("d", "http://h/d", Unfinished),
        ],
        false,
        &["d", "a", "c"],
        &[("b", AlreadyUpdated)],
        &[],
    );
    // a succeeded at another URL: pushed again, and said so.
    check_plan(
        &[("a", "http://h/a1", Succeeded)],
        false,
        &["d", "b", "a", "c"],
        &[],
        &["a"],
    );
    // A success followed by a later attempt that never finished is not a success.
    check_plan(
        &[("b", "http://h/b", Succeeded), ("b", "", Unfinished)],
        false,
        &["d", "b", "a", "c"],
        &[],
        &[],
    );
    // Devices the journal has never seen and devices no longer in the CSV are both fine.
    check_plan(
        &[("zz", "http://h/zz", Succeeded)],
        false,
        &["d", "b", "a", "c"],
        &[],
        &[],
    );
}

#[test]
fn only_failed_runs_only_failed_devices() {
    use DeviceState::*;
    use SkipReason::*;
    check_plan(
        &[
            ("b", "http://h/b", Succeeded),
            ("c", "http://h/c", Failed),
            ("a", "http://h/a2", Interrupted),
        ],
        true,
        &["c"],
        &[("d", NotFailed), ("b", NotFailed), ("a", NotFailed)],
        &[],
    );
}

#[test]
fn plan_keeps_csv_order() {
    let registry =
        crate::registry::load("t.csv", &b"id,url\nb,http://h/b\na,http://h/a\n"[..], None).unwrap();
    assert_eq!(
        Plan::all_in_order(&registry).order().collect::<Vec<_>>(),
        vec![0, 1]
    );
}

fn fleet(rows: usize) -> Registry {
    let mut text = String::from("id,url,site,tags\n");
    for i in 0..rows {
        let site = if i % 3 == 0 { "eu" } else { "us" };
        let tags = if i % 2 == 0 { "pos;lab" } else { "kiosk" };
        text.push_str(&format!("d{i:02},http://h/d{i:02},{site},{tags}\n"));
    }
    crate::registry::load("t.csv", text.as_bytes(), None).unwrap()
}

#[track_caller]
fn check_waves(rows: usize, selection: Selection<'_>, expected: &[(bool, &[usize])]) {
    let registry = fleet(rows);
    let plan = Plan::build(&registry, &selection);
    let got: Vec<(bool, Vec<usize>)> = plan
        .waves
        .iter()
        .map(|w| (w.canary, w.devices.clone()))
        .collect();
    let expected: Vec<(bool, Vec<usize>)> =
        expected.iter().map(|(c, d)| (*c, d.to_vec())).collect();
    assert_eq!(got, expected);
    assert_eq!(
        plan.len() + plan.skipped.len(),
        rows,
        "every row is planned or skipped"
    );
}

#[test]
fn canary_runs_first_then_waves_of_the_rest() {
    let waves = parse_waves("1,50%").unwrap();
    check_waves(
        6,
        Selection {
            canary: 2,
            waves: &waves,
            ..Selection::default()
        },
        &[
            (true, &[0, 1]),
            (false, &[2]),
            (false, &[3, 4]),
            (false, &[5]),
        ],
    );
    check_waves(
        3,
        Selection {
            canary: 5,
            ..Selection::default()
        },
        &[(true, &[0, 1, 2])],
    );
    check_waves(
        0,
        Selection {
            canary: 1,
            waves: &waves,
            ..Selection::default()
        },
        &[],
    );
    check_waves(4, Selection::default(), &[(false, &[0, 1, 2, 3])]);
}

#[test]
fn selection_filters_then_shards_and_counts_each_step() {
    let registry = fleet(12);
    let filters: Vec<Filter> = vec!["site=us".parse().unwrap(), "tags~pos".parse().unwrap()];
    let plan = Plan::build(
        &registry,
        &Selection {
            filters: &filters,
            ..Selection::default()
        },
    );
    // us: not i % 3 == 0; pos: i even -> 2, 4, 8, 10.
    assert_eq!(plan.order().collect::<Vec<_>>(), vec![2, 4, 8, 10]);
    assert_eq!(plan.count_skipped(SkipReason::FilteredOut), 8);
    let mut covered = vec![0; 12];
    for index in 0..3 {
        let shard = Some(Shard { index, count: 3 });
        let plan = Plan::build(
            &registry,
            &Selection {
                shard,
                ..Selection::default()
            },
        );
        assert_eq!(plan.count_skipped(SkipReason::OtherShard), 12 - plan.len());
        for device in plan.order() {
            covered[device] += 1;
        }
    }
    assert_eq!(
        covered,
        vec![1; 12],
        "shards 0..3 cover every device exactly once"
    );
}

#[test]
fn random_order_is_stable_and_the_canary_comes_from_it() {
    let registry = fleet(20);
    let selection = Selection {
        order: Order::Random(42),
        canary: 3,
        ..Selection::default()
    };
    let a = Plan::build(&registry, &selection);
    let b = Plan::build(&registry, &selection);
    assert_eq!(a, b);
    assert_ne!(a.waves[0].devices, vec![0, 1, 2]);
    assert_eq!(a.wave_numbers().iter().filter(|&&n| n == 1).count(), 3);
}

/// A password rotated in a device's URL leaves it the same device: skipped as already
/// updated, not pushed again with a "url changed" notice showing two identical masked URLs.
/// Any other part of the URL (user, host, port, path) changing still pushes it again.
#[test]
fn a_rotated_url_password_is_the_same_device() {
    let registry = crate::registry::load(
        "t.csv",
        &b"id,url\na,http://u:new@h/a\nb,http://u:x@h2/b\nc,http://v:x@h/c\nd,https://root:new@h:8443/fw\n"[..],
        None,
    )
    .unwrap();
    let journal = journal_of(&[
        ("a", "http://u:old@h/a", DeviceState::Succeeded),
        ("b", "http://u:x@h/b", DeviceState::Succeeded),
        ("c", "http://u:x@h/c", DeviceState::Succeeded),
        ("d", "https://root:old@h:8443/fw", DeviceState::Succeeded),
    ]);
    let selection = Selection {
        journal: Some(&journal),
        ..Selection::default()
    };
    let plan = Plan::build(&registry, &selection);
    let id = |index: &usize| registry.devices[*index].id.to_string();
    let skipped: Vec<String> = plan.skipped.iter().map(|(i, _)| id(i)).collect();
    let changed: Vec<String> = plan.url_changed.iter().map(id).collect();
    assert_eq!(skipped, ["a", "d"]);
    assert_eq!(changed, ["b", "c"]);
}

//! Bad input exits 2 before any device is contacted, and the message says where the problem is
//! (file, line, column) and how to fix it.

use crate::util::{Test, quick};
use update_orchestrator::simulate::{Fleet, FleetSpec};

struct Case {
    name: &'static str,
    /// `devices.csv`; `U1` and `U2` stand for the URLs of two healthy devices.
    registry: &'static [u8],
    /// The `--payload` and registry arguments.
    payload: &'static str,
    registry_arg: &'static str,
    /// Flags after `push --payload PAYLOAD` and the quick defaults (which `overrides` change).
    extra: &'static [&'static str],
    overrides: &'static [(&'static str, &'static str)],
    /// Every one of these must be in stderr.
    expect: &'static [&'static str],
}

const VALID: &[u8] = b"id,url\na,U1\nb,U2\n";

const fn case(
    name: &'static str,
    registry: &'static [u8],
    extra: &'static [&'static str],
    expect: &'static [&'static str],
) -> Case {
    Case {
        name,
        registry,
        payload: "fw.bin",
        registry_arg: "devices.csv",
        extra,
        overrides: &[],
        expect,
    }
}

const CASES: &[Case] = &[
    case(
        "empty registry",
        b"",
        &[],
        &[
            "devices.csv: 1 problem, nothing was pushed",
            "devices.csv: the file is empty: expected a header row such as 'id,url'",
        ],
    ),
    case(
        "no id column",
        b"name,url\na,U1\n",
        &[],
        &["devices.csv:1: missing required column 'id' in the header row"],
    ),
    case(
        "no url column and no --target",
        b"id,addr\na,127.0.0.1\n",
        &[],
        &[
            "devices.csv:1: missing column 'url' in the header row",
            "--target",
        ],
    ),
    case(
        "empty id",
        b"id,url\na,U1\n,U2\n",
        &[],
        &["devices.csv:3: column 1 (id): empty id: every device needs one"],
    ),
    case(
        "duplicate id",
        b"id,url\na,U1\na,U2\n",
        &[],
        &["devices.csv:3: column 1 (id): duplicate id 'a': line 2 has it too"],
    ),
    case(
        "unknown placeholder in --target",
        b"id,ip\na,127.0.0.1\n",
        &["--target", "http://{ip}:1/{site}"],
        &[
            "devices.csv: --target: unknown placeholder {site}",
            "the registry has the columns id, ip",
        ],
    ),
    case(
        "invalid url",
        b"id,url\na,U1\nb,not a url\n",
        &[],
        &["devices.csv:3: column 2 (url): invalid URL \"not a url\""],
    ),
    case(
        "unsupported scheme",
        b"id,url\na,U1\nb,ftp://127.0.0.1/fw\n",
        &[],
        &[
            "devices.csv:3: column 2 (url): unsupported scheme 'ftp'",
            "(supported: http, https, ssh)",
        ],
    ),
    case(
        "ssh URL without a remote path",
        b"id,url\na,ssh://root@127.0.0.1\nb,U2\n",
        &[],
        &["devices.csv:2: column 2 (url): no remote path in \"ssh://root@127.0.0.1\""],
    ),
    case(
        "ragged row",
        b"id,url\na,U1\nb,U2,extra\n",
        &[],
        &["devices.csv:3: this row has 3 fields but the header has 2"],
    ),
    case(
        "non-utf-8 field",
        b"id,url\na,U1\n\xff\xfe,U2\n",
        &[],
        &["devices.csv:3: field 1 is not valid UTF-8: save the file as UTF-8"],
    ),
    case(
        "every problem is listed, not just the first",
        b"id,url\n,U1\nb,ftp://127.0.0.1/\nb,U2\n",
        &[],
        &[
            "devices.csv: 3 problems, nothing was pushed",
            "devices.csv:2: column 1 (id): empty id",
            "devices.csv:3: column 2 (url): unsupported scheme 'ftp'",
            "devices.csv:4: column 1 (id): duplicate id 'b': line 3 has it too",
        ],
    ),
    case(
        "line numbers survive CRLF and quoted line breaks",
        b"id,url,note\r\na,U1,\"two\r\nlines\"\r\n\r\n,U2,x\r\n",
        &[],
        &["devices.csv:5: column 1 (id): empty id"],
    ),
    Case {
        registry_arg: "nope.csv",
        ..case(
            "missing registry file",
            VALID,
            &["--report", "report.csv"],
            &["cannot read registry nope.csv"],
        )
    },
    Case {
        payload: "missing.bin",
        ..case(
            "missing payload",
            VALID,
            &[],
            &["cannot read payload missing.bin"],
        )
    },
    Case {
        payload: "firmware",
        ..case(
            "payload is a directory",
            VALID,
            &[],
            &["payload firmware is a directory: give the update file itself"],
        )
    },
    Case {
        payload: "empty.bin",
        ..case(
            "empty payload",
            VALID,
            &[],
            &["payload empty.bin is empty: pass --allow-empty"],
        )
    },
    Case {
        overrides: &[("--stall-timeout", "10x")],
        ..case(
            "bad duration",
            VALID,
            &[],
            &[
                "'--stall-timeout'",
                "invalid duration '10x': use e.g. 500ms",
            ],
        )
    },
    Case {
        overrides: &[("--backoff-base", "2s"), ("--backoff-max", "1s")],
        ..case(
            "backoff base above max",
            VALID,
            &[],
            &["--backoff-base (2s) is larger than --backoff-max (1s)"],
        )
    },
    case(
        "zero concurrency",
        VALID,
        &["--concurrency", "0"],
        &["--concurrency must be between 1 and 4096, not 0"],
    ),
    case(
        "unsupported method",
        VALID,
        &["--method", "DELETE"],
        &["--method DELETE is not supported: use PUT or POST"],
    ),
    case(
        "header from an unset variable",
        VALID,
        &["--header", "X-Token: {env:UO_TEST_UNSET_VAR}"],
        &[
            "environment variable UO_TEST_UNSET_VAR is not set",
            "export it",
        ],
    ),
    case(
        "cacert is not PEM",
        VALID,
        &["--cacert", "notpem.txt"],
        &["--cacert notpem.txt: no certificate found"],
    ),
    case(
        "report in a missing directory",
        VALID,
        &["--report", "no/such/dir/report.csv"],
        &["cannot create report no/such/dir/report.csv"],
    ),
];

#[test]
fn bad_input_exits_2_names_the_place_and_contacts_no_device() {
    let fleet = Fleet::start(FleetSpec {
        devices: 2,
        ..FleetSpec::default()
    })
    .unwrap();
    let (url1, url2) = (fleet.url(0), fleet.url(1));
    let mut failures = Vec::new();
    for case in CASES {
        let mut test = Test::new();
        let registry = replace(
            &replace(case.registry, b"U1", url1.as_bytes()),
            b"U2",
            url2.as_bytes(),
        );
        test.write("devices.csv", registry);
        test.payload("fw.bin", 1000);
        test.write("empty.bin", "");
        test.write("notpem.txt", "this is not a certificate\n");
        std::fs::create_dir(test.path("firmware")).unwrap();
        test.env_remove("UO_TEST_UNSET_VAR");
        test.args(["push", "--payload", case.payload])
            .args(quick(case.overrides))
            .args(case.extra)
            .arg(case.registry_arg);
        let output = test.run();
        let missing: Vec<&&str> = case
            .expect
            .iter()
            .filter(|needle| !output.stderr.contains(**needle))
            .collect();
        if output.status != 2 || !missing.is_empty() || test.path("report.csv").exists() {
            failures.push(format!("{}: missing {missing:?}\n{output}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(
        fleet.connections(),
        0,
        "a device was contacted despite bad input"
    );
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while !rest.is_empty() {
        if rest.starts_with(from) {
            out.extend_from_slice(to);
            rest = &rest[from.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

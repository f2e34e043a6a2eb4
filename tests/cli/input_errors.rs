//! Bad input exits 2 before any device is contacted, with one exact message that says where the
//! problem is (file, line, column, flag) and how to fix it: the registry, the flags, the payload,
//! the journal, known_hosts, keys and certificates. A simulated fleet counts connections: it must
//! see none.

use crate::util::{Test, quick};
use std::os::unix::fs::PermissionsExt;
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
    /// All of stderr; `{sha}` stands for the payload's SHA-256.
    expect: &'static str,
}

const VALID: &[u8] = b"id,url\na,U1\nb,U2\n";

const DEFAULT: Case = Case {
    name: "",
    registry: VALID,
    payload: "fw.bin",
    registry_arg: "devices.csv",
    extra: &[],
    overrides: &[],
    expect: "",
};

const PAYLOAD_LEN: u64 = 1000;

const CASES: &[Case] = &[
    Case {
        name: "empty registry",
        registry: b"",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv: the file is empty: expected a header row such as 'id,url'",
        ..DEFAULT
    },
    Case {
        name: "no id column",
        registry: b"name,url\na,U1\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:1: missing required column 'id' in the header row: add an id column (a unique name per device)",
        ..DEFAULT
    },
    Case {
        name: "no url column and no --target",
        registry: b"id,addr\na,127.0.0.1\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:1: missing column 'url' in the header row: add a url column, or give --target TEMPLATE such as 'http://{ip}:8080/update'",
        ..DEFAULT
    },
    Case {
        name: "empty id",
        registry: b"id,url\na,U1\n,U2\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:3: column 1 (id): empty id: every device needs one",
        ..DEFAULT
    },
    Case {
        name: "duplicate id",
        registry: b"id,url\na,U1\na,U2\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:3: column 1 (id): duplicate id 'a': line 2 has it too",
        ..DEFAULT
    },
    Case {
        name: "unknown placeholder in --target",
        registry: b"id,ip\na,127.0.0.1\n",
        extra: &["--target", "http://{ip}:1/{site}"],
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv: --target: unknown placeholder {site} in \"http://{ip}:1/{site}\": the registry has the columns id, ip",
        ..DEFAULT
    },
    Case {
        name: "unclosed placeholder in --target",
        registry: b"id,ip\na,127.0.0.1\n",
        extra: &["--target", "http://{ip"],
        expect: "update-orchestrator: --target: unclosed '{' at byte 7 in template \"http://{ip\"",
        ..DEFAULT
    },
    Case {
        name: "invalid url",
        registry: b"id,url\na,U1\nb,not a url\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:3: column 2 (url): invalid URL \"not a url\": invalid uri character (expected e.g. http://10.0.0.5:8080/update)",
        ..DEFAULT
    },
    Case {
        name: "unsupported scheme",
        registry: b"id,url\na,U1\nb,ftp://127.0.0.1/fw\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:3: column 2 (url): unsupported scheme 'ftp' in \"ftp://127.0.0.1/fw\" (supported: http, https, ssh; other tools: a cmd column or --deliver-cmd)",
        ..DEFAULT
    },
    Case {
        name: "ssh URL without a remote path",
        registry: b"id,url\na,ssh://root@127.0.0.1\nb,U2\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:2: column 2 (url): no remote path in \"ssh://root@127.0.0.1\": give the file's absolute path, e.g. ssh://host/opt/update/fw.bin",
        ..DEFAULT
    },
    Case {
        name: "ssh URL with a .. segment",
        registry: b"id,url\na,ssh://root@127.0.0.1/opt/../etc/passwd\nb,U2\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:2: column 2 (url): \"ssh://root@127.0.0.1/opt/../etc/passwd\": path segment \"..\" would leave its directory ('/', '.' or '..')",
        ..DEFAULT
    },
    Case {
        name: "ragged row",
        registry: b"id,url\na,U1\nb,U2,extra\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:3: this row has 3 fields but the header has 2: check for a missing or extra comma",
        ..DEFAULT
    },
    Case {
        name: "a quote never closed",
        registry: b"id,url\na,U1\n\"b\r\n,U2\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:3: this row has 1 fields but the header has 2: check for a missing or extra comma, or a quote (\") opened in this row and never closed: the rows after it were read as part of one field",
        ..DEFAULT
    },
    Case {
        name: "non-utf-8 field",
        registry: b"id,url\na,U1\n\xff\xfe,U2\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:3: field 1 is not valid UTF-8: save the file as UTF-8",
        ..DEFAULT
    },
    Case {
        name: "every problem is listed, not just the first",
        registry: b"id,url\n,U1\nb,ftp://127.0.0.1/\nb,U2\n",
        expect: "update-orchestrator: devices.csv: 3 problems, nothing was pushed\
            \n  devices.csv:2: column 1 (id): empty id: every device needs one\
            \n  devices.csv:3: column 2 (url): unsupported scheme 'ftp' in \"ftp://127.0.0.1/\" (supported: http, https, ssh; other tools: a cmd column or --deliver-cmd)\
            \n  devices.csv:4: column 1 (id): duplicate id 'b': line 3 has it too",
        ..DEFAULT
    },
    Case {
        name: "line numbers survive CRLF and quoted line breaks",
        registry: b"id,url,note\r\na,U1,\"two\r\nlines\"\r\n\r\n,U2,x\r\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\
            \n  devices.csv:5: column 1 (id): empty id: every device needs one",
        ..DEFAULT
    },
    Case {
        name: "--where on a column the registry lacks",
        registry: VALID,
        extra: &["--where", "site=eu"],
        expect: "update-orchestrator: --where site=eu: the registry has no column 'site' (it has id, url)",
        ..DEFAULT
    },
    Case {
        name: "missing registry file",
        registry: VALID,
        registry_arg: "nope.csv",
        expect: "update-orchestrator: cannot read registry nope.csv: No such file or directory (os error 2)",
        ..DEFAULT
    },
    Case {
        name: "missing payload",
        registry: VALID,
        payload: "missing.bin",
        expect: "update-orchestrator: cannot read payload missing.bin: No such file or directory (os error 2)",
        ..DEFAULT
    },
    Case {
        name: "payload is a directory",
        registry: VALID,
        payload: "firmware",
        expect: "update-orchestrator: payload firmware is a directory: give the update file itself",
        ..DEFAULT
    },
    Case {
        name: "empty payload",
        registry: VALID,
        payload: "empty.bin",
        expect: "update-orchestrator: payload empty.bin is empty: pass --allow-empty if an empty file is really meant",
        ..DEFAULT
    },
    Case {
        name: "bad duration",
        registry: VALID,
        overrides: &[("--stall-timeout", "10x")],
        expect: "Error parsing option '--stall-timeout' with value '10x': invalid duration '10x': use e.g. 500ms, 10s, 2m, 1h or 1m30s",
        ..DEFAULT
    },
    Case {
        name: "backoff base above max",
        registry: VALID,
        overrides: &[("--backoff-base", "2s"), ("--backoff-max", "1s")],
        expect: "update-orchestrator: --backoff-base (2s) is larger than --backoff-max (1s): raise --backoff-max",
        ..DEFAULT
    },
    Case {
        name: "zero concurrency",
        registry: VALID,
        extra: &["--concurrency", "0"],
        expect: "update-orchestrator: --concurrency must be between 1 and 16384, not 0",
        ..DEFAULT
    },
    Case {
        name: "negative count",
        registry: VALID,
        extra: &["--canary", "-1"],
        expect: "Error parsing option '--canary' with value '-1': invalid number '-1': use a whole number of 0 or more, e.g. 5",
        ..DEFAULT
    },
    Case {
        name: "unsupported method",
        registry: VALID,
        extra: &["--method", "DELETE"],
        expect: "update-orchestrator: --method DELETE is not supported: use PUT or POST",
        ..DEFAULT
    },
    Case {
        name: "header without a colon",
        registry: VALID,
        extra: &["--header", "X-Token"],
        expect: "update-orchestrator: --header \"...\": expected 'Name: value'",
        ..DEFAULT
    },
    Case {
        name: "header from an unset variable",
        registry: VALID,
        extra: &["--header", "X-Token: {env:UO_TEST_UNSET_VAR}"],
        expect: "update-orchestrator: --header \"X-Token: ...\": environment variable UO_TEST_UNSET_VAR is not set (used as {env:UO_TEST_UNSET_VAR}); export it before running",
        ..DEFAULT
    },
    Case {
        name: "a row's value with a line break in a header",
        registry: b"id,url,site\na,U1,\"eu\r\nX-Injected: yes\"\nb,U2,us\n",
        extra: &["--header", "X-Site: {site}"],
        expect: "update-orchestrator: devices.csv:2: column site: a line break cannot go in --header X-Site",
        ..DEFAULT
    },
    Case {
        name: "shard out of range",
        registry: VALID,
        extra: &["--shard", "4/4"],
        expect: "Error parsing option '--shard' with value '4/4': invalid --shard '4/4': use I/N with 0 <= I < N, e.g. 3/8",
        ..DEFAULT
    },
    Case {
        name: "zero rate",
        registry: VALID,
        extra: &["--rate", "0/s"],
        expect: "Error parsing option '--rate' with value '0/s': invalid --rate '0/s': use N/s, N/min or N/h, e.g. 120/min",
        ..DEFAULT
    },
    Case {
        name: "zero wave",
        registry: VALID,
        extra: &["--waves", "1,0"],
        expect: "Error parsing option '--waves' with value '1,0': --waves: invalid wave size '0': use a count (10) or a percentage (25%)",
        ..DEFAULT
    },
    Case {
        name: "threshold above 100%",
        registry: VALID,
        extra: &["--max-failures", "101%"],
        expect: "Error parsing option '--max-failures' with value '101%': invalid --max-failures '101%': a percentage is at most 100% (of the finished devices)",
        ..DEFAULT
    },
    Case {
        name: "rate past the largest count",
        registry: VALID,
        extra: &["--rate", "4294967296/s"],
        expect: "Error parsing option '--rate' with value '4294967296/s': invalid --rate '4294967296/s': 4294967296 is too large, at most 4294967295 starts per period",
        ..DEFAULT
    },
    // Broke: without --window these were ignored, and the push ran at any hour.
    Case {
        name: "window wait without a window",
        registry: VALID,
        extra: &["--window-wait", "1h"],
        expect: "update-orchestrator: --window-wait needs --window HH:MM-HH:MM: without a window, devices start at any time; add the window, or leave --window-wait out",
        ..DEFAULT
    },
    Case {
        name: "window zone without a window",
        registry: VALID,
        extra: &["--window-tz", "UTC"],
        expect: "update-orchestrator: --window-tz needs --window HH:MM-HH:MM: without a window, devices start at any time; add the window, or leave --window-tz out",
        ..DEFAULT
    },
    Case {
        name: "empty window zone",
        registry: VALID,
        extra: &["--window", "01:00-05:00", "--window-tz", ""],
        expect: "update-orchestrator: invalid --window-tz '': use local, UTC, or an offset like +02:00 or -05:30",
        ..DEFAULT
    },
    Case {
        name: "window hour 25",
        registry: VALID,
        extra: &["--window", "25:00-01:00"],
        expect: "Error parsing option '--window' with value '25:00-01:00': invalid --window '25:00-01:00': use HH:MM-HH:MM in 24-hour time, e.g. 01:00-05:00",
        ..DEFAULT
    },
    Case {
        name: "unknown window zone",
        registry: VALID,
        extra: &["--window", "01:00-05:00", "--window-tz", "Mars"],
        expect: "update-orchestrator: invalid --window-tz 'Mars': use local, UTC, or an offset like +02:00 or -05:30",
        ..DEFAULT
    },
    Case {
        name: "unknown order",
        registry: VALID,
        extra: &["--order", "sideways"],
        expect: "update-orchestrator: --order sideways is not supported: use csv or random",
        ..DEFAULT
    },
    Case {
        name: "malformed --where",
        registry: VALID,
        extra: &["--where", "site"],
        expect: "Error parsing option '--where' with value 'site': invalid --where 'site': use COLUMN=VALUE, COLUMN!=VALUE or COLUMN~TAG",
        ..DEFAULT
    },
    Case {
        name: "--estimate-throughput without --dry-run",
        registry: VALID,
        extra: &["--estimate-throughput", "1MiB/s"],
        expect: "update-orchestrator: --estimate-throughput only works with --dry-run: add --dry-run, or leave it out",
        ..DEFAULT
    },
    Case {
        name: "--exec with a secret",
        registry: VALID,
        extra: &["--exec", "install {env:HOME}"],
        expect: "update-orchestrator: --exec cannot use {env:NAME}: the command line is visible on the device; let the command read the secret from a file on the device instead",
        ..DEFAULT
    },
    Case {
        name: "--header with an unknown column",
        extra: &["--header", "Authorization: Bearer {toekn}"],
        expect: "update-orchestrator: --header Authorization: unknown placeholder {toekn} in \"Bearer {toekn}\": the registry has the columns id, url",
        ..DEFAULT
    },
    Case {
        name: "--target with a secret",
        registry: b"id,ip\na,127.0.0.1\n",
        extra: &["--target", "http://{ip}/{env:HOME}"],
        expect: "update-orchestrator: --target cannot use {env:NAME}: URLs end up in reports; send a secret in a --header instead",
        ..DEFAULT
    },
    Case {
        name: "a password in an ssh:// URL is refused, never echoed",
        registry: b"id,url\na,ssh://root:hunter2@127.0.0.1:2222/tmp/fw.bin\n",
        expect: "update-orchestrator: devices.csv: 1 problem, nothing was pushed\n  devices.csv:2: column 2 (url): a password in \"ssh://root:***@127.0.0.1:2222/tmp/fw.bin\" is not supported: use --password-env VAR",
        ..DEFAULT
    },
    Case {
        name: "a password in --jump is refused, never echoed",
        extra: &["--jump", "a,ssh://ops:s3cret@127.0.0.1:2222"],
        expect: "update-orchestrator: --jump a,ssh://ops:***@127.0.0.1:2222: a password in a jump host is refused (and not shown): give it with --password-env VAR, or use a key",
        ..DEFAULT
    },
    Case {
        name: "a --jump password holding a comma or a slash is not echoed in pieces",
        extra: &["--jump", "root:se,cret@127.0.0.1:2201"],
        expect: "update-orchestrator: --jump root:***@127.0.0.1:2201: a password in a jump host is refused (and not shown): give it with --password-env VAR, or use a key",
        ..DEFAULT
    },
    Case {
        name: "a jump column password holding a slash is not echoed",
        registry: b"id,url,jump\na,ssh://127.0.0.1:2222/tmp/fw.bin,root:Pa/SECRET@127.0.0.1:2201\n",
        expect: "update-orchestrator: devices.csv:2: column jump: a password in a jump host is refused (and not shown): give it with --password-env VAR, or use a key",
        ..DEFAULT
    },
    Case {
        name: "--only-failed without a journal",
        registry: VALID,
        extra: &["--only-failed"],
        expect: "update-orchestrator: --only-failed needs --journal FILE, or a SQLite registry (its updates are the journal): it reads which devices failed",
        ..DEFAULT
    },
    Case {
        name: "damaged journal line",
        registry: VALID,
        extra: &["--journal", "damaged.journal"],
        expect: "update-orchestrator: journal damaged.journal:3: unreadable record (expected value at line 1 column 1); the journal is damaged: fix or move it (nothing was pushed)",
        ..DEFAULT
    },
    Case {
        name: "journal of another payload",
        registry: VALID,
        extra: &["--journal", "other.journal"],
        expect: "update-orchestrator: journal other.journal belongs to another payload (sha256 ab12, this payload is {sha}): use a new journal for a new payload, or --journal-reset to start this one over",
        ..DEFAULT
    },
    Case {
        name: "journal from a newer version",
        registry: VALID,
        extra: &["--journal", "future.journal"],
        expect: "update-orchestrator: journal future.journal is in format version 9, and this build of update-orchestrator reads version 1: use the update-orchestrator that wrote it (it is not damaged)",
        ..DEFAULT
    },
    Case {
        name: "a CSV given as the journal",
        registry: VALID,
        extra: &["--journal", "notajournal.journal"],
        expect: "update-orchestrator: notajournal.journal is not an update-orchestrator journal (its first line is no journal header: expected value at line 1 column 1): a journal is the file push --journal FILE writes; name that file, or another path for a new journal",
        ..DEFAULT
    },
    Case {
        name: "journal is a directory",
        registry: VALID,
        extra: &["--journal", "firmware"],
        expect: "update-orchestrator: journal firmware: Is a directory (os error 21): a journal is a file this user can read and write (push creates it when missing); check the path",
        ..DEFAULT
    },
    Case {
        name: "known_hosts is a directory",
        registry: VALID,
        extra: &["--known-hosts", "firmware"],
        expect: "update-orchestrator: --known-hosts firmware: is a directory: give the OpenSSH known_hosts file, e.g. ~/.ssh/known_hosts",
        ..DEFAULT
    },
    Case {
        name: "private key readable by others",
        registry: VALID,
        extra: &["--identity", "open_key"],
        expect: "update-orchestrator: --identity open_key: permissions 0644 are too open: a private key must be readable by its owner only (OpenSSH refuses it too); fix with: chmod 600 open_key",
        ..DEFAULT
    },
    Case {
        name: "missing private key",
        registry: VALID,
        extra: &["--identity", "no_key"],
        expect: "update-orchestrator: --identity no_key: no such key file",
        ..DEFAULT
    },
    Case {
        name: "unset password variable",
        registry: VALID,
        extra: &["--password-env", "UO_TEST_UNSET_VAR"],
        expect: "update-orchestrator: --password-env UO_TEST_UNSET_VAR: the environment variable UO_TEST_UNSET_VAR is not set; export it before running",
        ..DEFAULT
    },
    Case {
        name: "cacert is not PEM",
        registry: VALID,
        extra: &["--cacert", "notpem.txt"],
        expect: "update-orchestrator: --cacert notpem.txt: no certificate found (expected PEM 'BEGIN CERTIFICATE' blocks)",
        ..DEFAULT
    },
    Case {
        name: "cacert with broken base64",
        registry: VALID,
        extra: &["--cacert", "badpem.pem"],
        expect: "update-orchestrator: --cacert badpem.pem: not a valid PEM file (PEM: Base64Decode(\"InvalidCharacter(33)\")): give a PEM file of CA certificates",
        ..DEFAULT
    },
    Case {
        name: "missing cacert",
        registry: VALID,
        extra: &["--cacert", "nope.pem"],
        expect: "update-orchestrator: --cacert nope.pem: cannot read it (No such file or directory (os error 2)): give a PEM file of CA certificates",
        ..DEFAULT
    },
    Case {
        name: "missing --delta-from",
        extra: &["--delta-from", "nope.bin"],
        expect: "update-orchestrator: --delta-from nope.bin: cannot read it (No such file or directory (os error 2)): give a previous version of the payload that devices hold",
        ..DEFAULT
    },
    Case {
        name: "empty --delta-from",
        extra: &["--delta-from", "empty.bin"],
        expect: "update-orchestrator: --delta-from empty.bin is empty: give a previous version of the payload that devices hold",
        ..DEFAULT
    },
    Case {
        name: "--delta-from a directory",
        extra: &["--delta-from", "firmware"],
        expect: "update-orchestrator: --delta-from firmware is a directory: give a previous version of the payload itself",
        ..DEFAULT
    },
    Case {
        name: "--delta-from the payload itself",
        extra: &["--delta-from", "fw.bin"],
        expect: "update-orchestrator: --delta-from fw.bin has the same content as the payload: give an older version the devices hold",
        ..DEFAULT
    },
    Case {
        name: "--delta-from a copy of the payload, after a good base",
        extra: &["--delta-from", "old.bin", "--delta-from", "fw-copy.bin"],
        expect: "update-orchestrator: --delta-from fw-copy.bin has the same content as the payload: give an older version the devices hold",
        ..DEFAULT
    },
    Case {
        name: "--delta-apply without --delta-from",
        extra: &["--delta-apply", "my-patcher {base} {patch} {out}"],
        expect: "update-orchestrator: --delta-apply needs --delta-from FILE: give the previous version(s) devices hold",
        ..DEFAULT
    },
    Case {
        name: "--delta-apply with an unknown placeholder",
        extra: &[
            "--delta-from",
            "old.bin",
            "--delta-apply",
            "my-patcher {base} {patch} {output}",
        ],
        expect: "update-orchestrator: --delta-apply: unknown placeholder {output}: use {base}, {patch}, {out} and {format}",
        ..DEFAULT
    },
    Case {
        // It was not checked: every device got "no readable base at /x/old-.bin" and the
        // whole file, exit 0.
        name: "--delta-base with an unknown column",
        extra: &[
            "--quiet",
            "--delta-from",
            "old.bin",
            "--delta-base",
            "/x/old-{verison}.bin",
        ],
        expect: "update-orchestrator: --delta-base: unknown placeholder {verison} in \"/x/old-{verison}.bin\": the registry has the columns id, url, path",
        ..DEFAULT
    },
    Case {
        name: "report in a missing directory",
        registry: VALID,
        extra: &["--report", "no/such/dir/report.csv"],
        expect: "update-orchestrator: --report no/such/dir/report.csv: cannot write it: its directory no/such/dir does not exist: create it first; nothing was written or pushed",
        ..DEFAULT
    },
];

#[test]
fn bad_input_exits_2_with_an_exact_message_and_contacts_no_device() {
    assert!(
        CASES.len() >= 30,
        "the table covers at least 30 malformed inputs"
    );
    let fleet = Fleet::start(FleetSpec {
        devices: 2,
        ..FleetSpec::default()
    })
    .unwrap();
    let (url1, url2) = (fleet.url(0), fleet.url(1));
    let mut failures = Vec::new();
    for case in CASES {
        let test = fixtures();
        let registry = replace(
            &replace(case.registry, b"U1", url1.as_bytes()),
            b"U2",
            url2.as_bytes(),
        );
        test.write("devices.csv", registry);
        let mut test = test;
        test.env_remove("UO_TEST_UNSET_VAR");
        test.args(["push", "--payload", case.payload])
            .args(quick(case.overrides))
            .args(case.extra)
            .arg(case.registry_arg);
        let output = test.run();
        let sha = sha256_hex(&std::fs::read(test.path("fw.bin")).unwrap());
        let expected = format!("{}\n", case.expect.replace("{sha}", &sha));
        let contacted = fleet.connections();
        if output.status != 2 || output.stderr != expected || contacted != 0 {
            failures.push(format!(
                "{}: expected exit 2 and stderr {expected:?}, {contacted} connections so far\n{output}",
                case.name
            ));
        } else if test.path("report.csv").exists() || test.path("new.journal").exists() {
            failures.push(format!("{}: a report or journal was written", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(
        fleet.connections(),
        0,
        "a device was contacted despite bad input"
    );
}

/// A temp dir with every fixture a case may name.
fn fixtures() -> Test {
    let test = Test::new();
    test.payload("fw.bin", PAYLOAD_LEN);
    let sha = sha256_hex(&std::fs::read(test.path("fw.bin")).unwrap());
    test.write("empty.bin", "");
    test.write("fw-copy.bin", std::fs::read(test.path("fw.bin")).unwrap());
    test.payload("old.bin", PAYLOAD_LEN / 2);
    std::fs::create_dir(test.path("firmware")).unwrap();
    test.write("notpem.txt", "this is not a certificate\n");
    test.write(
        "badpem.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 !!!\n-----END CERTIFICATE-----\n",
    );
    let key = test.write("open_key", "-----BEGIN OPENSSH PRIVATE KEY-----\n");
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let header = |sha: &str, version: u32| {
        format!(
            r#"{{"journal":"update-orchestrator-journal","version":{version},"payload_sha256":"{sha}","payload_size":{PAYLOAD_LEN},"created":"2026-11-28T00:00:00.000Z"}}"#
        )
    };
    let attempt = r#"{"type":"attempt","at":"2026-11-28T00:00:01.000Z","id":"a","attempt":1}"#;
    test.write(
        "damaged.journal",
        format!("{}\n{attempt}\ngarbage here\n{attempt}\n", header(&sha, 1)),
    );
    test.write("other.journal", format!("{}\n", header("ab12", 1)));
    test.write("future.journal", format!("{}\n", header(&sha, 9)));
    test.write("notajournal.journal", VALID);
    test
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

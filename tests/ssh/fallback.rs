//! Devices without SFTP (dropbear, as on many embedded systems): SCP, then `cat`.

use super::servers::Server;
use super::util::{attempt, one_device, options, payload, remote_dir, sha256_file};
use std::time::Duration;
use update_orchestrator::delivery::ssh::{SshDelivery, Verify};
use update_orchestrator::template::Template;

#[test]
fn scp_fallback_against_dropbear() {
    let server = Server::dropbear(true);
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 2 * 1024 * 1024 + 5);
    let target = remote_dir(dir.path()).join("fw.bin");
    let mut options = options(&server, dir.path());
    options.exec = Some(Template::parse("touch {path}.installed").unwrap());
    let delivery = SshDelivery::new(options);
    let outcome = attempt(
        &delivery,
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    );
    let (metered, elapsed) = (outcome.metered, outcome.elapsed);
    let delivered = outcome.delivered();
    assert_eq!(
        (delivered.method, delivered.bytes_sent),
        ("scp", payload.len())
    );
    assert_eq!(metered, payload.len());
    assert_eq!(sha256_file(&target), payload.digest().hex());
    assert!(
        !target.with_extension("bin.part").exists(),
        "a .part was left"
    );
    assert!(
        target.with_extension("bin.installed").exists(),
        "--exec did not run"
    );
    // Finding out that there is no SFTP must not cost the whole SFTP start-up bound.
    assert!(
        elapsed < Duration::from_secs(8),
        "took {elapsed:?}:\n{}",
        server.log()
    );
}

#[test]
fn cat_fallback_without_scp() {
    let server = Server::dropbear(false);
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 1024 * 1024 + 77);
    let remote = remote_dir(dir.path());
    for verify in [Verify::Sha256, Verify::Size] {
        let target = remote.join(format!("{verify:?}.bin"));
        let mut options = options(&server, dir.path());
        options.verify = verify;
        let delivery = SshDelivery::new(options);
        let delivered = attempt(
            &delivery,
            &one_device("d", &server.url(&target)),
            0,
            &payload,
        )
        .delivered();
        assert_eq!(
            (delivered.method, delivered.bytes_sent),
            ("cat", payload.len())
        );
        assert_eq!(sha256_file(&target), payload.digest().hex());
        assert!(
            !target.with_extension("bin.part").exists(),
            "a .part was left"
        );
    }
}

//! Logging in: refused keys are permanent and say what was tried; passphrases; derived public
//! keys.

use super::servers::{Server, keygen, public};
use super::util::{attempt, check_error, one_device, options, payload, remote_dir};
use std::fs;
use update_orchestrator::delivery::ssh::{Secret, SshDelivery};
use update_orchestrator::delivery::{ErrorKind, Phase};

#[test]
fn wrong_key_is_refused_permanently() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let stranger = dir.path().join("stranger_key");
    keygen(&stranger, "");
    let mut options = options(&server, dir.path());
    options.identities = vec![stranger.clone()];
    let delivery = SshDelivery::new(options);
    let outcome = attempt(
        &delivery,
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    );
    assert_eq!(outcome.metered, 0);
    let error = outcome.error();
    check_error(&error, Phase::Auth, ErrorKind::Auth, false);
    assert_eq!(error.bytes_sent, 0);
    let expected = format!(
        "tried identity {} (refused); it accepts publickey",
        stranger.display()
    );
    assert!(error.message.contains(&expected), "{error}");
    assert!(!target.with_extension("bin.part").exists());
}

#[test]
fn no_credentials_says_how_to_give_some() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let mut options = options(&server, dir.path());
    options.identities.clear();
    let error = attempt(
        &SshDelivery::new(options),
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    )
    .error();
    check_error(&error, Phase::Auth, ErrorKind::Auth, false);
    assert!(error.message.contains("give --identity FILE"), "{error}");

    // A password given for a device that does not take one: it said "give ... --password-env
    // VAR", the flag that was given.
    let mut options = options_without_keys(&server, dir.path());
    options.password = Some(Secret::new("not-taken".to_string()));
    let error = attempt(
        &SshDelivery::new(options),
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    )
    .error();
    check_error(&error, Phase::Auth, ErrorKind::Auth, false);
    assert!(
        error.message.starts_with(&format!(
            "no credentials the device takes to log in as {:?}: --password-env is for the \
             'password' method, which it does not offer (it accepts publickey",
            server.user
        )),
        "{error}"
    );
    assert!(!error.message.contains("not-taken"), "{error}");
}

fn options_without_keys(
    server: &Server,
    dir: &std::path::Path,
) -> update_orchestrator::delivery::ssh::SshOptions {
    let mut options = options(server, dir);
    options.identities.clear();
    options
}

#[test]
fn passphrase_protected_keys_and_derived_public_keys() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let locked = dir.path().join("locked_key");
    keygen(&locked, "correct horse");
    server.authorize(&public(&locked));
    let devices = one_device("d", &server.url(&target));
    let mut options = options(&server, dir.path());
    options.identities = vec![locked.clone()];

    let error = attempt(&SshDelivery::new(options.clone()), &devices, 0, &payload).error();
    check_error(&error, Phase::Auth, ErrorKind::Auth, false);
    assert!(
        error
            .message
            .contains("wrong passphrase (--passphrase-env)"),
        "{error}"
    );

    options.passphrase = Some(Secret::new("correct horse".to_string()));
    attempt(&SshDelivery::new(options.clone()), &devices, 0, &payload).delivered();

    // Without locked_key.pub libssh2 derives the public key from the private one.
    fs::remove_file(public(&locked)).unwrap();
    attempt(&SshDelivery::new(options.clone()), &devices, 0, &payload).delivered();
    assert!(!format!("{options:?}").contains("correct horse"));
}

#[test]
fn the_url_user_wins_over_the_default() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let mut options = options(&server, dir.path());
    options.user = Some("nobody-here".to_string());
    let delivery = SshDelivery::new(options);
    // The URL names the server's user: that one logs in.
    attempt(
        &delivery,
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    )
    .delivered();
    // Without a user in the URL, --user is used (and refused).
    let url = format!("ssh://127.0.0.1:{}{}", server.port, target.display());
    let error = attempt(&delivery, &one_device("d", &url), 0, &payload).error();
    check_error(&error, Phase::Auth, ErrorKind::Auth, false);
    assert!(error.message.contains("\"nobody-here\""), "{error}");
}

//! OpenSSH client configuration resolved like OpenSSH itself: for a table of configs and host
//! names (some with `user@`, as a URL gives), what `SshConfig::resolve` gives must equal what
//! `ssh -G -F CONFIG [USER@]HOST` prints (the oracle; it connects to nothing).

use crate::servers::{current_user, home_of, require};
use std::fs;
use std::path::Path;
use std::process::Command;
use update_orchestrator::delivery::ssh::config::{HostConfig, SshConfig, Strictness};

/// The options we resolve, as `ssh -G` names them.
const KEYS: &[&str] = &[
    "hostname",
    "port",
    "user",
    "identityfile",
    "identitiesonly",
    "proxyjump",
    "proxycommand",
    "userknownhostsfile",
    "stricthostkeychecking",
    "connecttimeout",
    "serveraliveinterval",
];

/// What `ssh -G -F config host` prints for `KEYS`, in its order.
fn oracle(config: &Path, host: &str) -> Vec<String> {
    let output = Command::new(require("/usr/bin/ssh"))
        .arg("-G")
        .arg("-F")
        .arg(config)
        .arg(host)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ssh -G");
    assert!(output.status.success(), "ssh -G {host}: {output:?}");
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| KEYS.contains(&line.split(' ').next().unwrap_or("")))
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Ours in `ssh -G`'s words, with its defaults where the config says nothing.
fn ours(resolved: &HostConfig, home: &Path, user: &str) -> Vec<String> {
    let tilde = |path: &str| match path.strip_prefix("~/") {
        Some(rest) => home.join(rest).display().to_string(),
        None => path.to_string(),
    };
    let mut lines = vec![
        format!("hostname {}", resolved.host_name),
        format!("port {}", resolved.port.unwrap_or(22)),
        format!("user {}", resolved.user.as_deref().unwrap_or(user)),
        format!(
            "identitiesonly {}",
            if resolved.identities_only == Some(true) {
                "yes"
            } else {
                "no"
            }
        ),
        format!(
            "stricthostkeychecking {}",
            match resolved.strictness {
                None | Some(Strictness::Ask) => "ask",
                Some(Strictness::Yes) => "true",
                Some(Strictness::No) => "false",
                Some(Strictness::AcceptNew) => "accept-new",
            }
        ),
        match resolved.connect_timeout {
            Some(timeout) => format!("connecttimeout {}", timeout.as_secs()),
            None => "connecttimeout none".to_string(),
        },
        format!(
            "serveraliveinterval {}",
            resolved
                .server_alive_interval
                .map_or(0, |interval| interval.as_secs())
        ),
    ];
    let known_hosts = match &resolved.known_hosts_files {
        Some(files) => files.iter().map(|file| tilde(file)).collect::<Vec<_>>(),
        None => vec![tilde("~/.ssh/known_hosts"), tilde("~/.ssh/known_hosts2")],
    };
    lines.push(format!("userknownhostsfile {}", known_hosts.join(" ")));
    let mut identities = resolved.identity_files.clone();
    if identities.is_empty() {
        identities = [
            "rsa",
            "ecdsa",
            "ecdsa_sk",
            "ed25519",
            "ed25519_sk",
            "xmss",
            "dsa",
        ]
        .iter()
        .map(|kind| format!("~/.ssh/id_{kind}"))
        .collect();
    }
    lines.extend(identities.iter().map(|file| format!("identityfile {file}")));
    if let Some(jump) = resolved.jump() {
        lines.push(format!("proxyjump {jump}"));
    }
    if let Some(command) = resolved.command() {
        lines.push(format!("proxycommand {command}"));
    }
    lines.sort();
    lines
}

/// Configs (with an included file) and the hosts to resolve in each.
fn table(dir: &Path) -> Vec<(String, Vec<&'static str>)> {
    let included = dir.join("conf.d");
    fs::create_dir_all(&included).unwrap();
    fs::write(
        included.join("10-sites.conf"),
        "Host store-*\n  User gw\n  Port 2022\nHost *.plant\n  ProxyCommand ssh -W %h:%p bastion.plant\n",
    )
    .unwrap();
    fs::write(included.join("ignored.txt"), "Host *\n  User nope\n").unwrap();
    // glob(3) skips dotfiles for `*` (an editor's leftovers), and globs every component.
    fs::write(included.join(".hidden.conf"), "Host *\n  User hidden\n").unwrap();
    for (sub, text) in [
        ("a", "Host w\n  User sub-a\n"),
        ("b", "Host w\n  Port 104\n"),
    ] {
        let dir = dir.join("sub").join(sub);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("x.conf"), text).unwrap();
    }
    let fleet = format!(
        "# a fleet's config\n\
         Host pos-* !pos-9*\n  User root\n  IdentityFile ~/.ssh/fleet_%h_%r\n  ProxyJump store-gw\n\
         \n\
         Host pos-9*\n  ProxyJump none\n  IdentityFile=~/.ssh/legacy\n  IdentitiesOnly yes\n\
         Include {}/*.conf\n\
         Host store-gw\n  HostName 10.1.0.6\n  StrictHostKeyChecking accept-new\n\
         Match host 10.1.* !user admin\n  Port 2200\n  ConnectTimeout 1m30s\n\
         Match originalhost db-* localuser {}\n  User dba\n  UserKnownHostsFile ~/.ssh/db_hosts /etc/ssh/db_hosts\n\
         Match user dba\n  ServerAliveInterval 15\n\
         Host *\n  User ops\n  IdentityFile ~/.ssh/id_ed25519\n  StrictHostKeyChecking yes\n  ProxyCommand nc %h %p\n",
        included.display(),
        current_user()
    );
    let alias = "Host web\n  HostName %h.example.org\nHost WEB*\n  Port 8022\n\
                 Host *.example.org\n  Port 9022\n  \"User\" \"www data\"\n\
                 Match all\n  StrictHostKeyChecking no\n";
    vec![
        (
            fleet,
            vec![
                "pos-17",
                "pos-91",
                "POS-17",
                "store-gw",
                "store-17",
                "db-1",
                "line-3.plant",
                "other",
                "10.1.2.3",
                // The command line's user is the one `Match user` sees, and `User` keeps it.
                "admin@10.1.2.3",
                "dba@other",
                "nobody@db-1",
            ],
        ),
        (
            alias.to_string(),
            vec!["web", "WEB", "web2", "x.example.org"],
        ),
        (String::new(), vec!["plain"]),
        // Match host lowers the name too; Match user keeps both sides' case (OpenSSH's
        // match_hostname and match_pattern_list(user, patterns, 0)).
        (
            "Host dev\n  HostName Real.Example\nMatch host real.example\n  Port 15\n\
             Match originalhost dev2\n  Port 12\nMatch host dev3\n  Port 11\n\
             Match user Alice\n  ServerAliveInterval 20\nHost *\n  User ops\n"
                .to_string(),
            vec!["dev", "DEV2", "DEV3", "Alice@other", "alice@other"],
        ),
        (
            format!("Include {}/sub/*/x.conf\n", dir.display()),
            vec!["w"],
        ),
        // Quoting as OpenSSH's argv_split: single quotes, quotes inside a word, escapes.
        (
            "Host q1\n  User 'www data'\nHost q2\n  IdentityFile /k/a\"b c\"d\n  User a\\ b\n"
                .to_string(),
            vec!["q1", "q2"],
        ),
    ]
}

#[test]
fn config_resolves_like_ssh_g() {
    let dir = tempfile::tempdir().unwrap();
    let user = current_user();
    let home = home_of(&user).expect("home in /etc/passwd");
    for (index, (text, hosts)) in table(dir.path()).into_iter().enumerate() {
        let file = dir.path().join(format!("config{index}"));
        fs::write(&file, &text).unwrap();
        let source = update_orchestrator::delivery::ssh::config::ConfigSource::File(file.clone());
        let config = SshConfig::load(&source, &home, &user).unwrap();
        for host in hosts {
            let resolved = match host.split_once('@') {
                Some((login, name)) => config.resolve_as(name, Some(login)).unwrap(),
                None => config.resolve(host).unwrap(),
            };
            assert_eq!(
                ours(&resolved, &home, &user),
                oracle(&file, host),
                "{host} in\n{text}"
            );
        }
    }
}

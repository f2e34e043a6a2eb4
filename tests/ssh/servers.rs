//! Real SSH servers on 127.0.0.1 for the tests: a private OpenSSH `sshd` and a `dropbear`
//! without SFTP, each with its own generated host key, config and authorized key, killed by pid
//! when dropped. Nothing on the system is changed: dropbear reads `~/.ssh/authorized_keys` and
//! would start OpenSSH's `/usr/lib/sftp-server` (Debian's build), so it runs in a private mount
//! namespace (`unshare`) where a copy of /etc/passwd gives us a temporary home and an empty
//! directory hides `/usr/lib/openssh`. Works as root and, through user namespaces, not.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const INSTALL: &str = "apt-get install openssh-server dropbear-bin (scripts/test installs them)";

/// A running SSH server.
pub struct Server {
    child: Child,
    /// Its port on `address`.
    pub port: u16,
    /// The loopback address it listens on (127.0.0.1 unless `sshd_at` said otherwise).
    pub address: String,
    /// How to start it again (`restart`).
    command: Option<Vec<std::ffi::OsString>>,
    /// The user to log in as.
    pub user: String,
    /// Config, keys and log.
    pub dir: TempDir,
    /// The private key in its authorized_keys.
    pub client_key: PathBuf,
    /// Its host public key file (`TYPE BASE64 COMMENT`).
    pub host_public: PathBuf,
    log: PathBuf,
}

impl Server {
    /// An OpenSSH sshd running as the current user. As root, the user logs in with `/bin/sh`,
    /// as on a device (busybox): this machine's root bash sources rc files (pyenv) for every
    /// remote command, and concurrent `sha256sum` checks then queue behind pyenv's lock (shared
    /// with every other test run on the machine) past the tests' timeouts. sshd runs in a
    /// private mount namespace where a copy of /etc/passwd names `/bin/sh` and the same home
    /// (as `scripts/bench` does). Not root: the user's own shell.
    pub fn sshd() -> Server {
        Server::openssh(is_root(), "127.0.0.1", "")
    }

    /// An sshd listening on `address` (another loopback address: 127.0.0.2 ...), with `extra`
    /// lines in its config, ahead of the defaults (`PermitOpen`, `LogLevel DEBUG1`,
    /// `MaxSessions 1`, ...).
    pub fn sshd_at(address: &str, extra: &str) -> Server {
        Server::openssh(is_root(), address, extra)
    }

    fn openssh(device_shell: bool, address: &str, extra: &str) -> Server {
        let sshd = require("/usr/sbin/sshd");
        let dir = tempfile::tempdir().expect("temp dir");
        let host_key = dir.path().join("host_key");
        keygen(&host_key, "");
        let client_key = dir.path().join("client_key");
        keygen(&client_key, "");
        let authorized = dir.path().join("authorized_keys");
        fs::copy(public(&client_key), &authorized).expect("authorized_keys");
        // sshd insists on its privilege separation directory when it runs as root.
        let _ = fs::create_dir_all("/run/sshd");
        let port = free_port();
        let config = dir.path().join("sshd_config");
        // `extra` first: sshd takes the first value of a keyword (`MaxSessions 1` wins).
        let text = format!(
            "{extra}\nListenAddress {address}\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile none\nSubsystem sftp internal-sftp\nUsePAM no\nStrictModes no\n\
             MaxStartups 200\nMaxSessions 100\nKexAlgorithms curve25519-sha256\n\
             PermitRootLogin yes\nPasswordAuthentication no\n",
            host_key.display(),
            authorized.display()
        );
        fs::write(&config, text).expect("sshd_config");
        let log = dir.path().join("sshd.log");
        let command = if device_shell {
            let passwd = dir.path().join("passwd");
            let user = current_user();
            let home = home_of(&user).unwrap_or_else(|| dir.path().to_path_buf());
            fs::write(&passwd, passwd_with_home(&user, &home)).expect("passwd");
            let mut command = Command::new(require("/usr/bin/unshare"));
            // unshare and sh exec: the child's pid is sshd's.
            command
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg("mount --bind \"$1\" /etc/passwd && exec \"$2\" -D -e -f \"$3\"")
                .arg("sh")
                .args([&passwd, &sshd, &config]);
            command
        } else {
            let mut command = Command::new(sshd);
            command.arg("-D").arg("-e").arg("-f").arg(&config);
            command
        };
        let program = command.get_program().to_os_string();
        let respawn: Vec<std::ffi::OsString> = std::iter::once(program)
            .chain(command.get_args().map(|arg| arg.to_os_string()))
            .collect();
        let mut server = Server::spawn(
            command,
            (dir, address),
            port,
            current_user(),
            client_key,
            public(&host_key),
            log,
        );
        server.command = Some(respawn);
        server
    }

    /// Stops (SIGSTOP) every process the server started for its connections, not the server
    /// itself: its clients' connections go silent without closing, and new ones are served.
    /// Returns them for `thaw`.
    pub fn freeze_connections(&self) -> Vec<u32> {
        let sessions = descendants(self.child.id());
        for pid in &sessions {
            let _ = Command::new("kill")
                .arg("-STOP")
                .arg(pid.to_string())
                .status();
        }
        sessions
    }

    /// Lets processes `freeze_connections` stopped go on.
    pub fn thaw(pids: &[u32]) {
        for pid in pids {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(pid.to_string())
                .status();
        }
    }

    /// Kills the server and every process it started (its connections: clients see them
    /// drop), then starts it again on the same port with the same config and host key.
    pub fn restart(&mut self) {
        let pids = descendants(self.child.id());
        let _ = self.child.kill();
        for pid in pids {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let _ = self.child.wait();
        let spec = self.command.clone().expect("an OpenSSH server");
        let log = fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("log");
        self.child = Command::new(&spec[0])
            .args(&spec[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("restart the SSH server");
        self.wait_until_ready();
    }

    /// A dropbear server with no SFTP (like an embedded device); `with_scp: false` also hides
    /// the `scp` program, leaving only a shell.
    pub fn dropbear(with_scp: bool) -> Server {
        let dropbear = require("/usr/sbin/dropbear");
        let dropbearkey = require("/usr/bin/dropbearkey");
        let unshare = require("/usr/bin/unshare");
        let dir = tempfile::tempdir().expect("temp dir");
        let host_key = dir.path().join("host_key");
        run(Command::new(&dropbearkey)
            .args(["-t", "ed25519", "-f"])
            .arg(&host_key));
        let printed = output(Command::new(dropbearkey).arg("-y").arg("-f").arg(&host_key));
        let host_line = printed
            .lines()
            .find(|line| line.starts_with("ssh-"))
            .expect("public key");
        let host_public = dir.path().join("host_key.pub");
        fs::write(&host_public, format!("{host_line}\n")).expect("host key");
        let client_key = dir.path().join("client_key");
        keygen(&client_key, "");
        let home = dir.path().join("home");
        fs::create_dir_all(home.join(".ssh")).expect("home");
        fs::copy(public(&client_key), home.join(".ssh/authorized_keys")).expect("authorized");
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).expect("empty dir");
        // dropbear finds authorized_keys through the passwd entry: a copy whose entry for us
        // names the temporary home (and a shell) is mounted over /etc/passwd.
        let user = current_user();
        let passwd = dir.path().join("passwd");
        fs::write(&passwd, passwd_with_home(&user, &home)).expect("passwd");
        let port = free_port();
        let hide_scp = if with_scp {
            String::new()
        } else {
            "scp=$(command -v scp) && mount --bind /bin/false \"$scp\"; ".to_string()
        };
        // Not root: a user namespace makes us root to mount, then a nested one turns us back
        // into ourselves, since dropbear running as root must change groups, which an
        // unprivileged user namespace forbids.
        let (uid, gid) = (id("-u"), id("-g"));
        let as_ourselves = if is_root() {
            String::new()
        } else {
            format!("unshare --map-user={uid} --map-group={gid} ")
        };
        let script = format!(
            "set -e; mount --bind '{passwd}' /etc/passwd; \
             if [ -d /usr/lib/openssh ]; then mount --bind '{empty}' /usr/lib/openssh; fi; \
             {hide_scp}exec {as_ourselves}{dropbear} -F -E -s -p 127.0.0.1:{port} -r '{key}' -P '{pid}'",
            passwd = passwd.display(),
            empty = empty.display(),
            dropbear = dropbear.display(),
            key = host_key.display(),
            pid = dir.path().join("dropbear.pid").display(),
        );
        let mut command = Command::new(unshare);
        if !is_root() {
            command.arg("--map-root-user");
        }
        command.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
        let log = dir.path().join("dropbear.log");
        let at = (dir, "127.0.0.1");
        Server::spawn(command, at, port, user, client_key, host_public, log)
    }

    fn spawn(
        mut command: Command,
        (dir, address): (TempDir, &str),
        port: u16,
        user: String,
        client_key: PathBuf,
        host_public: PathBuf,
        log: PathBuf,
    ) -> Server {
        let log_file = fs::File::create(&log).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("start the SSH server");
        let mut server = Server {
            child,
            port,
            address: address.to_string(),
            command: None,
            user,
            dir,
            client_key,
            host_public,
            log,
        };
        server.wait_until_ready();
        server
    }

    fn wait_until_ready(&mut self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the SSH server exited ({status}):\n{}", self.log());
            }
            if let Ok(mut stream) = TcpStream::connect((self.address.as_str(), self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 4];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the SSH server did not answer within 10 s:\n{}", self.log());
    }

    /// What the server logged.
    /// The server's process id (its sessions are its descendants).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `[127.0.0.1]:PORT TYPE BASE64`: its line in a known_hosts file.
    pub fn known_hosts_line(&self) -> String {
        let key = fs::read_to_string(&self.host_public).expect("host key");
        let mut fields = key.split_whitespace();
        let (kind, base64) = (fields.next().unwrap(), fields.next().unwrap());
        format!("[{}]:{} {kind} {base64}", self.address, self.port)
    }

    /// The OpenSSH fingerprint of its host key (`SHA256:...`), as `ssh-keygen -l` prints it.
    pub fn host_fingerprint(&self) -> String {
        fingerprint(&self.host_public)
    }

    /// `ssh://USER@127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@{}:{}{}",
            self.user,
            self.address,
            self.port,
            path.display()
        )
    }

    /// Adds a public key to sshd's authorized_keys.
    pub fn authorize(&self, public_key: &Path) {
        let key = fs::read_to_string(public_key).expect("public key");
        let authorized = self.dir.path().join("authorized_keys");
        let mut keys = fs::read_to_string(&authorized).expect("authorized_keys");
        keys.push_str(&key);
        fs::write(authorized, keys).expect("authorized_keys");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every process below `pid` (children, their children, ...), from /proc.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The parent is the second field after the command's closing parenthesis.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(parent) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parents.push((child, parent));
        }
    }
    let mut found = vec![pid];
    let mut index = 0;
    while index < found.len() {
        let parent = found[index];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        index += 1;
    }
    found.remove(0);
    found
}

/// The path of a program the tests need, or a failure saying how to install it.
pub fn require(path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    assert!(path.exists(), "{} not found: {INSTALL}", path.display());
    path
}

/// Generates an ed25519 key pair at `path` and `path.pub`.
pub fn keygen(path: &Path, passphrase: &str) {
    let keygen = require("/usr/bin/ssh-keygen");
    run(Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-C", "test", "-N", passphrase, "-f"])
        .arg(path));
}

/// `path.pub`.
pub fn public(path: &Path) -> PathBuf {
    let mut public = path.as_os_str().to_owned();
    public.push(".pub");
    PathBuf::from(public)
}

/// `SHA256:...` of a public key file, by `ssh-keygen -l`.
pub fn fingerprint(public_key: &Path) -> String {
    let printed = output(
        Command::new("ssh-keygen")
            .arg("-l")
            .arg("-f")
            .arg(public_key),
    );
    let word = printed.split_whitespace().nth(1).expect("fingerprint");
    word.to_string()
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// The current user's name.
pub fn current_user() -> String {
    id("-un")
}

fn is_root() -> bool {
    id("-u") == "0"
}

fn id(flag: &str) -> String {
    output(Command::new("id").arg(flag)).trim().to_string()
}

/// `user`'s home directory in /etc/passwd.
pub fn home_of(user: &str) -> Option<PathBuf> {
    let system = fs::read_to_string("/etc/passwd").ok()?;
    let entry = system
        .lines()
        .find(|line| line.split(':').next() == Some(user))?;
    entry.split(':').nth(5).map(PathBuf::from)
}

/// /etc/passwd with `user`'s entry (added if missing) pointing at `home`, with a POSIX shell.
fn passwd_with_home(user: &str, home: &Path) -> String {
    let system = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let home = home.display();
    let ours = format!("{user}:x:{}:{}:{user}:{home}:/bin/sh", id("-u"), id("-g"));
    let mut lines: Vec<String> = system
        .lines()
        .filter(|line| line.split(':').next() != Some(user))
        .map(str::to_string)
        .collect();
    lines.push(ours);
    lines.join("\n") + "\n"
}

fn run(command: &mut Command) {
    let result = command.output().expect("run a helper program");
    assert!(result.status.success(), "{command:?}: {result:?}");
}

fn output(command: &mut Command) -> String {
    let result = command.output().expect("run a helper program");
    assert!(result.status.success(), "{command:?}: {result:?}");
    String::from_utf8_lossy(&result.stdout).into_owned()
}

//! nginx as a real-server oracle: a private `nginx -p DIR -c CONF -g 'daemon off;'` on
//! 127.0.0.1 (a free port, everything under a temp dir), killed by pid on drop.
//!
//! Locations: `/upload/NAME` stores a `PUT` body as `uploads()/NAME` (WebDAV `PUT`, answering
//! 201/204); `/locked/NAME` answers `401` (basic auth that nothing passes); `/small/NAME` answers
//! `413` to any body over 1 KiB; `/forbidden/NAME` answers `403` (`deny all`). The access log records, per request, the method, the URI, the
//! status and nginx's `$request_length` (the request line, headers and the body bytes nginx
//! read): what the device received, measured on its side.
//!
//! Owns: the nginx process and its directory. Must not: listen anywhere but 127.0.0.1, or
//! touch the system's nginx (its service, its configuration, its logs).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A running private nginx.
pub struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// One line of the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub method: String,
    pub uri: String,
    pub status: u16,
    /// nginx's `$request_length`: request line, headers and body bytes read.
    pub request_length: u64,
}

impl Nginx {
    /// Starts nginx on a free loopback port; fails the test with how to install nginx when the
    /// binary is missing (`scripts/install-deps test` installs it).
    #[track_caller]
    pub fn start() -> Nginx {
        let binary = find_nginx().unwrap_or_else(|| {
            panic!(
                "nginx not found (looked in PATH, /usr/sbin): install it with \
                 `scripts/install-deps test` (Debian package nginx)"
            )
        });
        let mut last_error = String::new();
        // A free port can be taken between finding it and nginx binding it: try a few.
        for _ in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("uo-nginx-")
                .tempdir()
                .expect("create nginx's temp dir");
            let port = free_port();
            write_config(dir.path(), port);
            let mut child = Command::new(&binary)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn nginx");
            if wait_listening(&mut child, port) {
                return Nginx { child, port, dir };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_error = fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        }
        panic!("nginx did not start; its error log:\n{last_error}");
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Where `PUT /upload/NAME` stores NAME.
    pub fn uploads(&self) -> PathBuf {
        self.dir.path().join("www/upload")
    }

    /// The access log so far, parsed.
    pub fn accesses(&self) -> Vec<Access> {
        let text = fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                // `$uri` is decoded and may hold spaces: the other fields are at the ends.
                let parse = || {
                    let (method, rest) = line.split_once(' ')?;
                    let (rest, length) = rest.rsplit_once(' ')?;
                    let (uri, status) = rest.rsplit_once(' ')?;
                    Some(Access {
                        method: method.to_string(),
                        uri: uri.to_string(),
                        status: status.parse().ok()?,
                        request_length: length.parse().ok()?,
                    })
                };
                parse().unwrap_or_else(|| panic!("access log line {line:?}"))
            })
            .collect()
    }

    /// The error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this pid only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn write_config(dir: &Path, port: u16) {
    for sub in [
        "www/upload",
        "www/locked",
        "www/small",
        "www/forbidden",
        "temp",
        "logs",
    ] {
        fs::create_dir_all(dir.join(sub)).expect("create nginx dirs");
    }
    // Nobody has this password: every request to /locked/ is refused.
    fs::write(dir.join("htpasswd"), "device:{PLAIN}never-given\n").expect("write htpasswd");
    // Running as root, nginx would hand requests to `nobody`, who cannot write the temp dir.
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root root;"
    } else {
        ""
    };
    let d = dir.display();
    let config = format!(
        "{user}
worker_processes 1;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format lengths '$request_method $uri $status $request_length';
    access_log {d}/access.log lengths;
    client_body_temp_path {d}/temp/body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        client_max_body_size 0;
        location /upload/ {{
            dav_methods PUT;
            create_full_put_path on;
        }}
        location /locked/ {{
            auth_basic \"devices\";
            auth_basic_user_file {d}/htpasswd;
            dav_methods PUT;
        }}
        location /small/ {{
            client_max_body_size 1k;
            dav_methods PUT;
        }}
        location /forbidden/ {{
            deny all;
        }}
    }}
}}
"
    );
    fs::write(dir.join("nginx.conf"), config).expect("write nginx.conf");
}

/// True once nginx accepts connections on `port`; false if it exited or took over 10 s.
fn wait_listening(child: &mut Child, port: u16) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

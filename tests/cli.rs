//! Integration tests: the real `update-orchestrator` binary against real servers on 127.0.0.1
//! (the crate's simulated `Fleet`, scripted tiny_http devices, raw sockets).
//!
//! Codemap: `util` is the harness (`Test`, `Output`, report parsing), `servers` the loopback
//! devices; every other module is one area of behaviour. A crate root's `mod` looks beside
//! it, hence the `#[path]`s into `tests/cli/`.

#[path = "cli/nginx.rs"]
mod nginx;
#[path = "cli/servers.rs"]
mod servers;
#[path = "cli/util.rs"]
mod util;

#[path = "cli/args.rs"]
mod args;
#[path = "cli/commands.rs"]
mod commands;
#[path = "cli/control.rs"]
mod control;
#[path = "cli/day_one.rs"]
mod day_one;
#[path = "cli/deliver_cmd.rs"]
mod deliver_cmd;
#[path = "cli/delta.rs"]
mod delta;
#[path = "cli/device_certs.rs"]
mod device_certs;
#[path = "cli/expect.rs"]
mod expect;
#[path = "cli/headers.rs"]
mod headers;
#[path = "cli/html_report.rs"]
mod html_report;
#[path = "cli/input_errors.rs"]
mod input_errors;
#[path = "cli/inventory.rs"]
mod inventory;
#[path = "cli/journal.rs"]
mod journal;
#[path = "cli/lifecycle.rs"]
mod lifecycle;
#[path = "cli/logging.rs"]
mod logging;
#[path = "cli/memory.rs"]
mod memory;
#[path = "cli/mtls.rs"]
mod mtls;
#[path = "cli/multipart.rs"]
mod multipart;
#[path = "cli/observe.rs"]
mod observe;
#[path = "cli/progress.rs"]
mod progress;
#[path = "cli/proxy.rs"]
mod proxy;
#[path = "cli/push.rs"]
mod push;
#[path = "cli/report.rs"]
mod report;
#[path = "cli/resume.rs"]
mod resume;
#[path = "cli/retries.rs"]
mod retries;
#[path = "cli/rollout.rs"]
mod rollout;
#[path = "cli/scale.rs"]
mod scale;
#[path = "cli/stall.rs"]
mod stall;
#[path = "cli/status_page.rs"]
mod status_page;
#[path = "cli/stopping.rs"]
mod stopping;
#[path = "cli/tls.rs"]
mod tls;

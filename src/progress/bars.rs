//! The two indicatif bars shown on an attended terminal, and the slot through which the logger
//! finds them while they are live.
//!
//! Owns: the `MultiProgress` of a run (one devices bar, one bytes bar; never a bar per device) and
//! the `LIVE_BARS` slot. Must not: decide what to show (that is `render`) or when (that is the
//! progress thread); only the progress thread creates `Bars`.

use std::sync::{Mutex, PoisonError};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::render::{bytes_bar_message, devices_bar_message};
use super::terminal_width;
use crate::tally::Snapshot;
use crate::units::human_duration;

/// The bars of the live run, if any: set when `Bars` are created, cleared when they are dropped.
static LIVE_BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// How often indicatif may redraw; the thread updates the bars about as often.
const DRAW_HZ: u8 = 10;

// The prefix is the elapsed time in the plain lines' format (indicatif's `{elapsed}` would show
// "2m" where those show "2m10s").
const DEVICES_TEMPLATE: &str = "[{prefix:>5}] [{wide_bar}] {pos}/{len} devices {msg}";
const DEVICES_TEMPLATE_COLOR: &str =
    "[{prefix:>5}] [{wide_bar:.cyan/blue}] {pos}/{len} devices {msg}";
const BYTES_TEMPLATE: &str = "{bytes}/{total_bytes} {msg}";
const BYTES_TEMPLATE_COLOR: &str = "{bytes:.green}/{total_bytes} {msg}";

/// The live bars of a run on stderr.
pub(crate) struct Bars {
    multi: MultiProgress,
    devices: ProgressBar,
    bytes: ProgressBar,
}

impl Bars {
    /// Draws empty bars on stderr and makes them the live ones for the logger.
    pub(crate) fn start(color: bool) -> Bars {
        let target = ProgressDrawTarget::stderr_with_hz(DRAW_HZ);
        let multi = MultiProgress::with_draw_target(target);
        let (devices_template, bytes_template) = if color {
            (DEVICES_TEMPLATE_COLOR, BYTES_TEMPLATE_COLOR)
        } else {
            (DEVICES_TEMPLATE, BYTES_TEMPLATE)
        };
        let devices = multi.add(ProgressBar::new(0).with_style(style(devices_template)));
        let bytes = multi.add(ProgressBar::new(0).with_style(style(bytes_template)));
        set_live(Some(multi.clone()));
        Bars {
            multi,
            devices,
            bytes,
        }
    }

    /// Shows `snapshot`. Position and length change in one update, so no frame shows one
    /// without the other.
    pub(crate) fn draw(&self, snapshot: &Snapshot) {
        let finished =
            snapshot.succeeded + snapshot.failed + snapshot.skipped + snapshot.interrupted;
        // Read at every draw: a resized terminal gets lines that fit at once.
        let width = terminal_width();
        self.devices.set_prefix(human_duration(snapshot.elapsed));
        self.devices
            .set_message(devices_bar_message(snapshot, width));
        set_progress(&self.devices, finished as u64, snapshot.total as u64);
        self.bytes.set_message(bytes_bar_message(snapshot, width));
        set_progress(&self.bytes, snapshot.bytes_done, snapshot.bytes_total);
    }

    /// Prints `line` above the bars.
    pub(crate) fn println(&self, line: &str) {
        // A failed write to stderr leaves nowhere to report it.
        let _ = self.multi.println(line);
    }

    /// Removes the bars from the terminal, leaving nothing half-drawn.
    pub(crate) fn finish(self) {
        set_live(None);
        self.devices.finish_and_clear();
        self.bytes.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl Drop for Bars {
    /// The logger must not suspend bars that are gone, even if the thread unwinds.
    fn drop(&mut self) {
        set_live(None);
    }
}

/// The bars of the live run, for the logger.
pub(crate) fn live_bars() -> Option<MultiProgress> {
    LIVE_BARS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn set_live(multi: Option<MultiProgress>) {
    *LIVE_BARS.lock().unwrap_or_else(PoisonError::into_inner) = multi;
}

fn set_progress(bar: &ProgressBar, position: u64, length: u64) {
    bar.update(|state| {
        state.set_len(length);
        state.set_pos(position);
    });
}

/// The style for `template`, or indicatif's default if the template does not parse.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(template: &str) {
        assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
    }

    #[test]
    fn templates_parse() {
        check(DEVICES_TEMPLATE);
        check(DEVICES_TEMPLATE_COLOR);
        check(BYTES_TEMPLATE);
        check(BYTES_TEMPLATE_COLOR);
    }
}

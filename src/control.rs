//! The operator's hand on a running push: pause (start no more devices; those in flight
//! finish), resume, and abort (stop like a failure-threshold abort, exit 3).
//!
//! Owns: `Control`, the state the status server's `POST /control/...`, the SIGUSR1/SIGUSR2
//! handlers and the orchestrator share, and the queue of requests not yet reported; `Token`,
//! the bearer token that authorises a request (compared in constant time, never printed).
//! Must not: do IO, sleep, or decide anything about the run: the orchestrator reads the state
//! (its gates wait while paused, its watchdog turns an abort into a stop and reports every
//! request as an event). A leaf: it imports nothing from the crate.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// What an operator asks of a running push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start no more devices; those in flight finish.
    Pause,
    /// Start devices again, where the run stopped.
    Resume,
    /// Stop the run like a failure-threshold abort (exit 3).
    Abort,
}

impl Action {
    /// The action named by the last segment of `POST /control/NAME`.
    pub fn from_name(name: &str) -> Option<Action> {
        match name {
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
            _ => None,
        }
    }

    /// Its name: `pause`, `resume` or `abort`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One request, as it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// What was asked.
    pub action: Action,
    /// Who asked: `SIGUSR1`, or `POST /control/pause from 127.0.0.1:53122`.
    pub by: String,
    /// When.
    pub at: SystemTime,
}

/// The run's control state, shared by whoever may ask and the orchestrator that obeys.
#[derive(Debug, Default)]
pub struct Control {
    paused: AtomicBool,
    aborted: AtomicBool,
    /// Requests not yet taken by the orchestrator (who reports them).
    requests: Mutex<Vec<Request>>,
    /// Set by the SIGUSR1 handler (a signal handler may only store a flag).
    pub pause_signal: Arc<AtomicBool>,
    /// Set by the SIGUSR2 handler.
    pub resume_signal: Arc<AtomicBool>,
}

impl Control {
    /// A run that is neither paused nor aborted.
    pub fn new() -> Control {
        Control::default()
    }

    /// Applies `action` at once and queues it to be reported.
    pub fn request(&self, action: Action, by: impl Into<String>) {
        match action {
            Action::Pause => self.paused.store(true, Ordering::SeqCst),
            Action::Resume => self.paused.store(false, Ordering::SeqCst),
            Action::Abort => self.aborted.store(true, Ordering::SeqCst),
        }
        let request = Request {
            action,
            by: by.into(),
            at: SystemTime::now(),
        };
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
    }

    /// Turns the flags the signal handlers set into requests.
    pub fn take_signals(&self) {
        if self.pause_signal.swap(false, Ordering::SeqCst) {
            self.request(Action::Pause, "SIGUSR1");
        }
        if self.resume_signal.swap(false, Ordering::SeqCst) {
            self.request(Action::Resume, "SIGUSR2");
        }
    }

    /// The requests since the last call, oldest first.
    pub fn take_requests(&self) -> Vec<Request> {
        std::mem::take(&mut *self.requests.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether devices may not start now.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Whether an abort was asked for.
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }
}

/// The bearer token of the control endpoints (`--control-token-env`): its value is never
/// printed, and a presented token is compared in time that does not depend on where it differs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a value read from the environment.
    pub fn new(value: String) -> Token {
        Token(value)
    }

    /// Whether an `Authorization` header's value is `Bearer TOKEN` with this token.
    pub fn authorizes(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some((scheme, presented)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let (expected, presented) = (self.0.as_bytes(), presented.trim().as_bytes());
        let differences = expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        differences == 0 && expected.len() == presented.len()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_token(header: Option<&str>, expected: bool) {
        let token = Token::new("s3cret".into());
        assert_eq!(token.authorizes(header), expected, "{header:?}");
    }

    #[test]
    fn a_token_authorizes_only_itself_as_a_bearer() {
        check_token(Some("Bearer s3cret"), true);
        check_token(Some("bearer  s3cret "), true);
        check_token(None, false);
        check_token(Some(""), false);
        check_token(Some("Bearer"), false);
        check_token(Some("Bearer s3cre"), false);
        check_token(Some("Bearer s3cret!"), false);
        check_token(Some("Bearer S3CRET"), false);
        check_token(Some("Basic s3cret"), false);
        assert_eq!(
            format!("{:?}", Token::new("s3cret".into())),
            "Token(<redacted>)"
        );
    }

    #[test]
    fn requests_apply_at_once_and_are_reported_once() {
        let control = Control::new();
        assert!(!control.is_paused() && !control.is_aborted());
        control.request(Action::Pause, "test");
        assert!(control.is_paused());
        control.pause_signal.store(true, Ordering::SeqCst);
        control.resume_signal.store(true, Ordering::SeqCst);
        control.take_signals();
        assert!(!control.is_paused(), "SIGUSR2 after SIGUSR1 resumes");
        control.request(Action::Abort, "test");
        let taken: Vec<(Action, String)> = control
            .take_requests()
            .into_iter()
            .map(|request| (request.action, request.by))
            .collect();
        let expected = [
            (Action::Pause, "test"),
            (Action::Pause, "SIGUSR1"),
            (Action::Resume, "SIGUSR2"),
            (Action::Abort, "test"),
        ]
        .map(|(action, by)| (action, by.to_string()));
        assert_eq!(taken, expected);
        assert!(control.take_requests().is_empty());
        assert!(control.is_aborted());
        assert_eq!(Action::from_name("pause"), Some(Action::Pause));
        assert_eq!(Action::from_name("stop"), None);
    }
}

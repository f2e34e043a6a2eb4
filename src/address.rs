//! How a device is addressed, below both the registry and the deliveries: the syntax of the
//! URLs and targets a registry row carries (`ssh://` targets, `pinnedpubkey` pins) and the
//! scheme of a URL.
//!
//! Owns: parsing these values into what a delivery connects to, and saying what is wrong with
//! one. Must not: do IO, or import the registry or a delivery (both import this module).

pub mod pin;
pub mod ssh;

/// Hides a password in a URL's user info (`https://user:secret@host/` → `https://user:***@host/`).
pub fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// The scheme of `url` (`http` for `http://h/x`), as written; `None` without `://`.
pub fn scheme(url: &str) -> Option<&str> {
    url.split_once("://").map(|(scheme, _)| scheme)
}

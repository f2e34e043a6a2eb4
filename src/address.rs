//! How a device is addressed, below both the registry and the deliveries: the syntax of the
//! URLs and targets a registry row carries (`ssh://` targets, `pinnedpubkey` pins) and the
//! scheme of a URL.
//!
//! Owns: parsing these values into what a delivery connects to, and saying what is wrong with
//! one. Must not: do IO, or import the registry or a delivery (both import this module).

pub mod pin;
pub mod ssh;

/// The scheme of `url` (`http` for `http://h/x`), as written; `None` without `://`.
pub fn scheme(url: &str) -> Option<&str> {
    url.split_once("://").map(|(scheme, _)| scheme)
}

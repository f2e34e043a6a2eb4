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

/// Hides every password in a jump host or a chain of them (`a,b`), where a password typed
/// unencoded may hold `/ ? # , @`, at which a URL parser would end the user info (and echo the
/// rest as a host or a path). A user name begins at the start, after `://` or after a comma;
/// its password runs from the colon after it to the last `@` before the next hop's user name.
/// A colon followed by digits and then a comma, a slash or the end is a port, not a password.
/// Returns the text to show and whether a password was found.
pub fn hide_jump_passwords(text: &str) -> (String, bool) {
    let bytes = text.as_bytes();
    let mut starts: Vec<usize> = vec![0];
    starts.extend(text.match_indices("://").map(|(i, _)| i + 3));
    starts.extend(text.match_indices(',').map(|(i, _)| i + 1));
    starts.sort_unstable();
    starts.dedup();
    let is_user = |b: u8| b.is_ascii_alphanumeric() || b"._-+%".contains(&b);
    // Each candidate: where its user name starts, and its colon.
    let candidates: Vec<(usize, usize)> = starts
        .iter()
        .filter_map(|&start| {
            let end = start + bytes[start..].iter().take_while(|&&b| is_user(b)).count();
            let colon = end > start && bytes.get(end) == Some(&b':');
            // `ssh://` is a scheme, not a user.
            (colon && !text[end..].starts_with("://")).then_some((start, end))
        })
        .collect();
    let (mut shown, mut copied, mut found) = (String::new(), 0, false);
    for (k, &(_, colon)) in candidates.iter().enumerate() {
        if colon < copied {
            continue;
        }
        // The next hop: the next user name with a colon, or the next `,ssh://`.
        let next_scheme = text[colon..]
            .to_ascii_lowercase()
            .find(",ssh://")
            .map(|i| colon + i);
        let limit = candidates
            .get(k + 1)
            .map(|&(start, _)| start)
            .into_iter()
            .chain(next_scheme)
            .min()
            .unwrap_or(text.len());
        let Some(at) = text[colon + 1..limit].rfind('@').map(|at| colon + 1 + at) else {
            continue;
        };
        let secret = &text[colon + 1..at];
        let digits = secret.bytes().take_while(u8::is_ascii_digit).count();
        let is_port = digits > 0 && matches!(secret.as_bytes().get(digits), Some(b',' | b'/'));
        if is_port {
            continue;
        }
        shown.push_str(&text[copied..=colon]);
        shown.push_str("***");
        copied = at;
        found = true;
    }
    shown.push_str(&text[copied..]);
    (shown, found)
}

/// The scheme of `url` (`http` for `http://h/x`), as written; `None` without `://`.
pub fn scheme(url: &str) -> Option<&str> {
    url.split_once("://").map(|(scheme, _)| scheme)
}

#[cfg(test)]
mod tests {
    use super::hide_jump_passwords;

    #[test]
    fn jump_passwords_are_hidden_whatever_they_hold() {
        for (text, shown, found) in [
            (
                "root:se,cret@127.0.0.1:2201",
                "root:***@127.0.0.1:2201",
                true,
            ),
            ("root:pa/ss@127.0.0.1:2201", "root:***@127.0.0.1:2201", true),
            ("ssh://root:Pa#SECRET@h:22", "ssh://root:***@h:22", true),
            ("root:p@ss?x@h", "root:***@h", true),
            ("a:pw@h1:22,b:pw2@h2:22", "a:***@h1:22,b:***@h2:22", true),
            (
                "ssh://a:pw@h1,ssh://b@h2",
                "ssh://a:***@h1,ssh://b@h2",
                true,
            ),
            // No password: ports, users without one, plain hosts.
            ("b1:22,ops@b2", "b1:22,ops@b2", false),
            ("ops@bastion:22,gw:2222", "ops@bastion:22,gw:2222", false),
            (
                "ssh://ops@b1:22,ssh://gw@b2",
                "ssh://ops@b1:22,ssh://gw@b2",
                false,
            ),
            ("bastion", "bastion", false),
            ("ssh://bastion:22/", "ssh://bastion:22/", false),
        ] {
            assert_eq!(
                hide_jump_passwords(text),
                (shown.to_string(), found),
                "{text}"
            );
        }
    }
}

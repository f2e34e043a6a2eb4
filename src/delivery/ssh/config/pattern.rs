//! OpenSSH's patterns (`*` and `?`, `!` negating, comma-separated lists) and `%` tokens.
//!
//! Owns: matching as OpenSSH does (`Host` patterns case-sensitive, `Match` lists with the
//! pattern lowercased as `match_pattern_list` does) and
//! expanding `%h %p %r %u %n %d %l %i %%`. Must not: do IO.

/// Whether `name` matches `pattern`, where `*` is any run of characters and `?` one.
pub(crate) fn wildcard(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) =
        (pattern.chars().collect(), name.chars().collect());
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// A list of patterns against `name`: `Some(true)` when one matches and no negated one does,
/// `Some(false)` when a negated one matches, `None` when none does. Case-sensitive, as `Host`.
pub(crate) fn list<'p>(patterns: impl IntoIterator<Item = &'p str>, name: &str) -> Option<bool> {
    let mut matched = None;
    for pattern in patterns {
        match pattern.strip_prefix('!') {
            Some(negated) if wildcard(negated, name) => return Some(false),
            Some(_) => {}
            None if wildcard(pattern, name) => matched = Some(true),
            None => {}
        }
    }
    matched
}

/// A comma-separated pattern list (`Match host a,b,!c`): matches when `list` says `Some(true)`.
/// The patterns are lowercased, the name is not.
pub(crate) fn comma_list(patterns: &str, name: &str) -> bool {
    let lowered = patterns.to_lowercase();
    list(lowered.split(','), name) == Some(true)
}

/// `Match host` and `Match originalhost`: as OpenSSH's `match_hostname`, the name is lowered
/// as well as the patterns (`Match host dev` matches `DEV`).
pub(crate) fn host_list(patterns: &str, name: &str) -> bool {
    comma_list(patterns, &name.to_lowercase())
}

/// `Match user` and `Match localuser`: as OpenSSH's `match_pattern_list(user, patterns, 0)`,
/// neither side's case is changed (`Match user Alice` matches `Alice`, not `alice`).
pub(crate) fn exact_list(patterns: &str, name: &str) -> bool {
    list(patterns.split(','), name) == Some(true)
}

/// The values `%` tokens stand for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tokens {
    /// `%h`: the remote host name.
    pub(crate) host: String,
    /// `%p`: the remote port.
    pub(crate) port: u16,
    /// `%r`: the remote user.
    pub(crate) remote_user: String,
    /// `%n`: the host name as given.
    pub(crate) original_host: String,
    /// `%u`: the local user.
    pub(crate) local_user: String,
    /// `%d`: the local user's home.
    pub(crate) home: String,
}

impl Tokens {
    /// `text` with its tokens replaced; an unknown token is an error naming it, as in OpenSSH.
    pub(crate) fn expand(&self, text: &str, allowed: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let token = chars.next().ok_or_else(|| {
                format!("{text:?} ends with a lone %: write %% for a percent sign")
            })?;
            if token != '%' && !allowed.contains(token) {
                return Err(format!("%{token} is not understood in {text:?}"));
            }
            match token {
                '%' => out.push('%'),
                'h' => out.push_str(&self.host),
                'p' => out.push_str(&self.port.to_string()),
                'r' => out.push_str(&self.remote_user),
                'n' => out.push_str(&self.original_host),
                'u' => out.push_str(&self.local_user),
                'd' => out.push_str(&self.home),
                'l' => out.push_str(&local_host_name()),
                'i' => out.push_str(&uid()),
                other => return Err(format!("%{other} is not understood in {text:?}")),
            }
        }
        Ok(out)
    }
}

/// The tokens `IdentityFile` and `UserKnownHostsFile` take.
pub(crate) const FILE_TOKENS: &str = "hprnudli";
/// The tokens `ProxyCommand` takes.
pub(crate) const COMMAND_TOKENS: &str = "hprn";

fn local_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().split('.').next().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn uid() -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata("/proc/self") {
            return meta.uid().to_string();
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        for (pattern, name, expected) in [
            ("*", "", true),
            ("*", "pos-17", true),
            ("pos-*", "pos-17", true),
            ("pos-*", "pos-", true),
            ("pos-?", "pos-17", false),
            ("pos-??", "pos-17", true),
            ("*.example", "a.b.example", true),
            ("*.example", "a.example.org", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("10.1.*", "10.1.0.6", true),
        ] {
            assert_eq!(wildcard(pattern, name), expected, "{pattern} {name}");
        }
    }

    #[test]
    fn lists_with_negation() {
        for (patterns, name, expected) in [
            ("pos-* !pos-9*", "pos-17", Some(true)),
            ("pos-* !pos-9*", "pos-91", Some(false)),
            ("!pos-9* pos-*", "pos-91", Some(false)),
            ("gw", "pos-1", None),
            ("!gw", "pos-1", None),
            ("POS-*", "pos-1", None),
            ("pos-*", "POS-1", None),
        ] {
            assert_eq!(
                list(patterns.split(' '), name),
                expected,
                "{patterns} {name}"
            );
        }
        assert!(comma_list("a,b*", "bee"));
        assert!(!comma_list("b*,!bee", "bee"));
        assert!(comma_list("B*", "bee"));
        assert!(!comma_list("b*", "Bee"));
    }

    #[test]
    fn expands_tokens() {
        let tokens = Tokens {
            host: "10.1.0.6".into(),
            port: 2222,
            remote_user: "root".into(),
            original_host: "pos-1".into(),
            local_user: "ops".into(),
            home: "/home/ops".into(),
        };
        let check = |text: &str, expected: &str| {
            assert_eq!(
                tokens.expand(text, FILE_TOKENS).unwrap(),
                expected,
                "{text}"
            );
        };
        check(
            "%d/.ssh/id_%r@%h:%p",
            "/home/ops/.ssh/id_root@10.1.0.6:2222",
        );
        check("%n-%u-100%%", "pos-1-ops-100%");
        assert!(tokens.expand("nc %h %x", COMMAND_TOKENS).is_err());
        assert!(tokens.expand("nc %d", COMMAND_TOKENS).is_err());
        assert!(tokens.expand("50%", COMMAND_TOKENS).is_err());
    }
}

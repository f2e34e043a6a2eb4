//! Reading OpenSSH client configuration files into items: one `keyword arguments` line each
//! (`Keyword=value` too, `"quoted arguments"`, `#` comments), `Host` and `Match` lines as
//! conditions, `Include` expanded in place (`~`, relative to `~/.ssh` or `/etc/ssh`, `*`
//! and `?` in the file name, at most 16 levels deep as OpenSSH allows).
//!
//! Owns: the syntax and the files. Must not: decide which lines apply to a host (that is
//! `config.rs`), or accept a `Match` criterion it does not understand.

use std::path::{Path, PathBuf};

/// How deep `Include` may nest (OpenSSH's `READCONF_MAX_DEPTH`).
const MAX_DEPTH: usize = 16;

/// Where a line came from, for messages: `FILE line N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.file.display(), self.line)
    }
}

/// One criterion of a `Match` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Criterion {
    /// `all`
    All,
    /// `host PATTERNS` (the host name as configured so far).
    Host(String),
    /// `originalhost PATTERNS` (the name as given).
    OriginalHost(String),
    /// `user PATTERNS` (the remote user as configured so far).
    User(String),
    /// `localuser PATTERNS`
    LocalUser(String),
}

/// A line of a configuration file that matters to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// `Host PATTERN...`: the lines after it apply when the host matches.
    Host(Vec<String>, Origin),
    /// `Match [!]CRITERION [ARG]...`: each criterion with whether it is negated.
    Match(Vec<(bool, Criterion)>, Origin),
    /// `Include`: the items of the files it names, in order.
    Include(Vec<Item>, Origin),
    /// Any other keyword, lowercased, with its arguments.
    Setting {
        keyword: String,
        arguments: Vec<String>,
        /// The rest of the line after the keyword, as written (`ProxyCommand` takes it whole).
        raw: String,
        origin: Origin,
    },
}

/// Reads `file`; `base` is where relative `Include` paths start (`~/.ssh` or `/etc/ssh`).
pub(crate) fn read_file(file: &Path, base: &Path, home: &Path) -> Result<Vec<Item>, String> {
    read_depth(file, base, home, 0)
}

/// Parses `text`, read from `file`.
pub(crate) fn parse_text(
    text: &str,
    file: &Path,
    base: &Path,
    home: &Path,
    depth: usize,
) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let origin = Origin {
            file: file.to_path_buf(),
            line: index + 1,
        };
        let (words, raw) = split(line).map_err(|message| format!("{origin}: {message}"))?;
        let Some((keyword, arguments)) = words.split_first() else {
            continue;
        };
        let keyword = keyword.to_ascii_lowercase();
        let arguments = arguments.to_vec();
        items.push(match keyword.as_str() {
            "host" if arguments.is_empty() => {
                return Err(format!("{origin}: Host needs at least one pattern"));
            }
            "host" => Item::Host(arguments, origin),
            "match" => Item::Match(criteria(&arguments, &origin)?, origin),
            "include" => {
                let mut included = Vec::new();
                for pattern in &arguments {
                    for path in glob(&expand_tilde(pattern, home), base)? {
                        included.extend(read_depth(&path, base, home, depth + 1)?);
                    }
                }
                Item::Include(included, origin)
            }
            _ => Item::Setting {
                keyword,
                arguments,
                raw,
                origin,
            },
        });
    }
    Ok(items)
}

/// `~/` at the start of `path` replaced by `home`.
pub(crate) fn expand_tilde(path: &str, home: &Path) -> String {
    match path.strip_prefix("~/") {
        Some(rest) => home.join(rest).display().to_string(),
        None if path == "~" => home.display().to_string(),
        None => path.to_string(),
    }
}

fn read_depth(file: &Path, base: &Path, home: &Path, depth: usize) -> Result<Vec<Item>, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "{}: Include nested more than {MAX_DEPTH} deep (an Include loop?)",
            file.display()
        ));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|error| format!("cannot read the SSH config {}: {error}", file.display()))?;
    parse_text(&text, file, base, home, depth)
}

/// The arguments of a `Match` line as criteria.
fn criteria(arguments: &[String], origin: &Origin) -> Result<Vec<(bool, Criterion)>, String> {
    let mut criteria = Vec::new();
    let mut words = arguments.iter();
    while let Some(word) = words.next() {
        let (negated, name) = match word.strip_prefix('!') {
            Some(name) => (true, name.to_ascii_lowercase()),
            None => (false, word.to_ascii_lowercase()),
        };
        if name == "all" {
            criteria.push((negated, Criterion::All));
            continue;
        }
        let make: fn(String) -> Criterion = match name.as_str() {
            "host" => Criterion::Host,
            "originalhost" => Criterion::OriginalHost,
            "user" => Criterion::User,
            "localuser" => Criterion::LocalUser,
            other => {
                return Err(format!(
                    "{origin}: Match {other} is not supported (only all, host, originalhost, \
                     user and localuser): give another config with --ssh-config FILE, or \
                     --ssh-config none"
                ));
            }
        };
        let Some(patterns) = words.next() else {
            return Err(format!("{origin}: Match {name} needs an argument"));
        };
        criteria.push((negated, make(patterns.clone())));
    }
    if criteria.is_empty() {
        return Err(format!("{origin}: Match needs a criterion"));
    }
    Ok(criteria)
}

/// A line's words: blank-separated, `"quoted"` words kept whole, the first `=` after the
/// keyword a separator too, `#` starting a comment; and the rest of the line after the keyword.
fn split(line: &str) -> Result<(Vec<String>, String), String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok((Vec::new(), String::new()));
    }
    let keyword_end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(keyword_end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    // A quoted keyword is allowed too.
    let keyword = keyword
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(keyword);
    let mut words = vec![keyword.to_string()];
    words.extend(argv_split(rest)?);
    Ok((words, rest.trim().to_string()))
}

/// A line's arguments as OpenSSH's `argv_split` reads them: words split at blanks; `"` or `'`
/// quote anywhere in a word (`/k/a"b c"d` is `/k/ab cd`) and are removed; `\` escapes a quote, a
/// backslash and (outside quotes) a space; a `#` that starts a word ends the line.
fn argv_split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => break,
            Some(_) => {}
        }
        let (mut word, mut quote) = (String::new(), None);
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.peek().copied() {
                    Some(next @ ('\'' | '"' | '\\')) => {
                        word.push(next);
                        chars.next();
                    }
                    Some(' ') if quote.is_none() => {
                        word.push(' ');
                        chars.next();
                    }
                    _ => word.push('\\'),
                },
                (' ' | '\t', None) => break,
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(open)) if c == open => quote = None,
                (c, _) => word.push(c),
            }
        }
        if quote.is_some() {
            return Err("unbalanced quote".to_string());
        }
        words.push(word);
    }
    Ok(words)
}

/// The files `pattern` names, sorted, as glob(3) finds them for OpenSSH: `*` and `?` in any
/// component (`sub/*/x.conf`), never matching a name that starts with `.` unless the pattern's
/// component does (an editor's `.x.conf.swp` is not read). A pattern that matches nothing names
/// no file, as in OpenSSH.
fn glob(pattern: &str, base: &Path) -> Result<Vec<PathBuf>, String> {
    let path = base.join(pattern);
    let mut found: Vec<PathBuf> = vec![PathBuf::new()];
    for component in path.components() {
        let part = component.as_os_str().to_string_lossy().into_owned();
        if !part.contains(['*', '?']) {
            for candidate in &mut found {
                candidate.push(component);
            }
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let hidden = name.starts_with('.') && !part.starts_with('.');
                if !hidden && super::pattern::wildcard(&part, &name) {
                    next.push(entry.path());
                }
            }
        }
        found = next;
    }
    found.retain(|path| path.is_file());
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_split(line: &str, expected: &[&str]) {
        assert_eq!(split(line).unwrap().0, expected, "{line:?}");
    }

    #[test]
    fn splits_lines_like_openssh() {
        check_split("", &[]);
        check_split("   # comment", &[]);
        check_split("Host a b", &["Host", "a", "b"]);
        check_split("  Port=2222", &["Port", "2222"]);
        check_split("Port = 2222", &["Port", "2222"]);
        check_split("\"User\" \"www data\"", &["User", "www data"]);
        check_split("\tUser\troot # who", &["User", "root"]);
        check_split(
            "ProxyCommand \"nc %h %p\" x",
            &["ProxyCommand", "nc %h %p", "x"],
        );
        assert!(split("IdentityFile \"a b").is_err());
        // As OpenSSH's argv_split: single quotes, quotes inside a word, escapes.
        check_split("User 'www data'", &["User", "www data"]);
        check_split("IdentityFile /k/a\"b c\"d", &["IdentityFile", "/k/ab cd"]);
        check_split("IdentityFile /k/a\\ b", &["IdentityFile", "/k/a b"]);
        check_split("IdentityFile /k/a\\\\b", &["IdentityFile", "/k/a\\b"]);
        check_split("IdentityFile /k/a\\x", &["IdentityFile", "/k/a\\x"]);
        check_split("User \"it's\" x#y", &["User", "it's", "x#y"]);
        assert!(split("User 'www data").is_err());
    }

    #[test]
    fn refuses_unknown_match_criteria() {
        let origin = Origin {
            file: PathBuf::from("cfg"),
            line: 3,
        };
        let words = |text: &str| text.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            criteria(&words("!host a,b user root"), &origin).unwrap(),
            [
                (true, Criterion::Host("a,b".into())),
                (false, Criterion::User("root".into()))
            ]
        );
        let error = criteria(&words("exec true"), &origin).unwrap_err();
        assert!(
            error.starts_with("cfg line 3: Match exec is not supported"),
            "{error}"
        );
        assert!(criteria(&words("host"), &origin).is_err());
    }
}

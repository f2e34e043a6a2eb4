//! Templates: a value filled into `--exec` is always exactly one argument to `sh -c` (checked by
//! running sh), and a value filled into a URL template never changes the URL's host or shape.

use proptest::prelude::*;
use std::process::Command;
use update_orchestrator::registry::check_url;
use update_orchestrator::template::{Escape, Template, shell_quote};

/// Values an attacker could put in a CSV: shell syntax, quotes of both kinds, newlines, globs,
/// variables, command substitutions, and any Unicode but NUL (which no argument can hold).
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "[-a-z ;|&$(){}`'\"\\\\\n\t*?~#!<>=]{0,24}",
        "[^\u{0}]{0,24}",
        Just("x'; rm -rf / #".to_string()),
        Just("$(id)`id`".to_string()),
        Just("'\\''".to_string()),
    ]
}

proptest! {
    // Each case starts a shell: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_shell_quoted_value_is_exactly_one_argument(value in hostile(), other in hostile()) {
        // `set --` makes the filled words the positional parameters: exactly one word each,
        // whose bytes are the value's.
        let template = Template::parse("set -- {v} {w}; printf '%s\\0%s\\0%s' \"$#\" \"$1\" \"$2\"")
            .expect("a valid template");
        let row = |name: &str| match name {
            "v" => Some(value.as_str()),
            "w" => Some(other.as_str()),
            _ => None,
        };
        let command = template.fill(row, Escape::Shell);
        let output = Command::new("sh").arg("-c").arg(&command).output().expect("run sh");
        prop_assert!(output.status.success(), "sh failed on {:?}: {}", command, String::from_utf8_lossy(&output.stderr));
        let expected = format!("2\0{value}\0{other}");
        prop_assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
        prop_assert!(output.stderr.is_empty(), "{}", String::from_utf8_lossy(&output.stderr));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::CASES))]

    #[test]
    fn shell_quoting_has_no_unquoted_part(value in hostile()) {
        // Outside single quotes, only the `\'` of an embedded quote may appear.
        let quoted = shell_quote(&value);
        prop_assert!(quoted.starts_with('\'') && quoted.ends_with('\''));
        let mut inside = false;
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            match (inside, c) {
                (_, '\'') => inside = !inside,
                (false, '\\') => prop_assert_eq!(chars.next(), Some('\'')),
                (false, c) => prop_assert!(false, "unquoted {:?} in {:?}", c, quoted),
                (true, _) => {}
            }
        }
        prop_assert!(!inside);
    }

    #[test]
    fn a_url_value_never_changes_host_or_path_shape(value in hostile()) {
        let template = Template::parse("http://10.0.0.1:8080/devices/{id}/update?x={id}").expect("valid");
        let url = template.fill(|_| Some(value.as_str()), Escape::Url);
        prop_assert_eq!(check_url(&url), Ok(()));
        let uri: ureq::http::Uri = url.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(uri.host(), Some("10.0.0.1"));
        prop_assert_eq!(uri.port_u16(), Some(8080));
        let segments: Vec<&str> = uri.path().split('/').collect();
        prop_assert_eq!(segments.len(), 4, "{}", uri.path());
        prop_assert_eq!(segments[3], "update");
        prop_assert!(!uri.query().unwrap_or("").contains('&'));
    }
}

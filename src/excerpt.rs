//! What a device's error answer said, made short enough for a report cell and a terminal line:
//! an HTML page's text without its tags (nor its head, scripts and styles), entities decoded,
//! whitespace collapsed, at most `EXCERPT_CHARS` characters.
//!
//! Owns: `excerpt`. Must not: do IO. A leaf: it imports nothing from the crate.

/// The longest excerpt kept, in characters (an ellipsis marks a cut).
pub const EXCERPT_CHARS: usize = 200;

/// How much of an error answer's body is read for its excerpt: enough for a web server's error
/// page, whose markup outweighs its text.
pub const EXCERPT_READ_BYTES: u64 = 8 * 1024;

/// `body` as one short line of text: markup (a body whose first non-blank character is `<`)
/// loses its tags and the text of `head`, `script` and `style`; entities are decoded, control
/// characters and runs of whitespace become one space, and the line is cut at `EXCERPT_CHARS`
/// characters with `…`.
pub fn excerpt(body: &str) -> String {
    let text = if body.trim_start().starts_with('<') {
        decode_entities(&strip_tags(body))
    } else {
        body.to_string()
    };
    let line = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() <= EXCERPT_CHARS {
        return line;
    }
    let cut: String = line.chars().take(EXCERPT_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

/// The text between the tags; each tag and comment becomes a space, and the elements whose text
/// is not shown (`head` with its `title`, `script`, `style`) are dropped whole.
fn strip_tags(html: &str) -> String {
    let mut text = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        text.push(' ');
        rest = &rest[open..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let Some(close) = rest.find('>') else {
            return text; // a tag cut off by the read limit
        };
        let name = tag_name(&rest[1..close]);
        rest = &rest[close + 1..];
        if matches!(name.as_str(), "head" | "script" | "style") {
            let end = format!("</{name}");
            rest = find_ignoring_case(rest, &end)
                .and_then(|at| rest[at..].find('>').map(|close| &rest[at + close + 1..]))
                .unwrap_or("");
        }
    }
    text.push_str(rest);
    text
}

/// The lowercase name of an opening tag (`""` for a closing tag or a declaration).
fn tag_name(inside: &str) -> String {
    inside
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn find_ignoring_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .to_ascii_lowercase()
        .find(&needle.to_ascii_lowercase())
}

/// The common named entities and numeric ones; anything else is left as written.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest[1..].find(';').filter(|&end| end <= 8).and_then(|end| {
            let name = &rest[1..=end];
            entity(name).map(|c| (c, end + 2))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    let code = match name {
        "amp" => return Some('&'),
        "lt" => return Some('<'),
        "gt" => return Some('>'),
        "quot" => return Some('"'),
        "apos" => return Some('\''),
        "nbsp" => return Some(' '),
        _ => name.strip_prefix('#')?,
    };
    let number = match code.strip_prefix(['x', 'X']) {
        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
        None => code.parse().ok()?,
    };
    char::from_u32(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(body: &str, expected: &str) {
        assert_eq!(excerpt(body), expected, "{body:?}");
    }

    /// nginx's own error pages, as it sends them.
    fn nginx_page(status: &str) -> String {
        format!(
            "<html>\r\n<head><title>{status}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n"
        )
    }

    #[test]
    fn error_pages_become_their_text() {
        check(
            &nginx_page("413 Request Entity Too Large"),
            "413 Request Entity Too Large nginx/1.22.1",
        );
        check(&nginx_page("403 Forbidden"), "403 Forbidden nginx/1.22.1");
        check(
            "<!DOCTYPE html><HTML><HEAD><STYLE>p{}</STYLE></HEAD><body><script>x<y</script>\
             <!-- a <b> comment --><p>disk&nbsp;full &amp; &lt;sad&gt; &#8212; &#x41;</p></body>",
            "disk full & <sad> — A",
        );
        check("<p>a &bogus; b & c &#xZZ;</p>", "a &bogus; b & c &#xZZ;");
        check("<p>cut off mid-tag <a hr", "cut off mid-tag");
    }

    #[test]
    fn plain_text_is_collapsed_and_kept_as_written() {
        check("bad\r\n  digest\t!\u{7}", "bad digest !");
        check("a < b & c > d", "a < b & c > d");
        check(
            r#"{"error":"<b>not html</b>"}"#,
            r#"{"error":"<b>not html</b>"}"#,
        );
        check("", "");
        check("   \n ", "");
    }

    #[test]
    fn long_text_is_cut_with_an_ellipsis() {
        let exact = "x".repeat(EXCERPT_CHARS);
        check(&exact, &exact);
        let long = format!("<p>{}</p>", "é ".repeat(EXCERPT_CHARS));
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS, "{cut}");
        assert!(cut.ends_with("é…"), "{cut}");
    }
}

//! The HTTP flags, checked: the method, `--header` (with `{env:NAME}` resolved), `--cacert`
//! read once, the client certificate, pins, the proxy, and the multipart form.
//!
//! Must not: open sockets (the delivery does).

use super::{UsageError, tls};
use crate::cli::PushArgs;
use crate::delivery::http::{HeaderTemplate, HttpOptions, Method};
use crate::delivery::multipart::Form;
use crate::delivery::proxy::Proxies;
use crate::template::Template;

/// Headers the tool sets itself, which a `--header` may not replace.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "content-digest",
    "transfer-encoding",
    "expect",
    "host",
    "connection",
];

/// The HTTP flags, checked: a known method, well-formed headers, a readable CA file, a client
/// certificate with its key, pins, a usable proxy, and no `--insecure` beside `--cacert`.
pub(super) fn http_options(args: &PushArgs) -> Result<HttpOptions, UsageError> {
    let method = method(&args.method)?;
    let headers = args
        .header
        .iter()
        .map(|header| parse_header(header, |name| std::env::var(name).ok()))
        .collect::<Result<Vec<_>, _>>()?;
    let ca_certificates = args
        .cacert
        .as_deref()
        .map(tls::read_ca_certificates)
        .transpose()?;
    if let Some(problem) = crate::delivery::proxy::check_proxy_flag(args.proxy.as_deref()) {
        return Err(UsageError(problem));
    }
    if args.insecure && args.cacert.is_some() {
        return Err(UsageError(
            "--insecure and --cacert contradict each other: --cacert verifies devices \
             against a private CA, --insecure verifies nothing; drop --insecure"
                .into(),
        ));
    }
    Ok(HttpOptions {
        method,
        headers,
        ca_certificates,
        client_certificate: tls::client_certificate(args.cert.as_deref(), args.key.as_deref())?,
        insecure: args.insecure,
        pinned_keys: tls::pinned_keys(args.pinnedpubkey.as_deref())?,
        proxies: Proxies::from_env(args.proxy.clone(), args.noproxy.clone()),
        connect_timeout: super::rollout::connect_timeout(args),
        stall_timeout: args.stall_timeout,
        response_timeout: args.response_timeout,
        concurrency: args.concurrency,
    })
}

/// `--method`: PUT or POST, in any case.
fn method(text: &str) -> Result<Method, UsageError> {
    match text.to_ascii_uppercase().as_str() {
        "PUT" => Ok(Method::Put),
        "POST" => Ok(Method::Post),
        other => Err(UsageError(format!(
            "--method {other} is not supported: use PUT or POST"
        ))),
    }
}

/// `--form-field` and `--form`, checked: a name for the file part, well-formed extra parts, and
/// no `--header` that would contradict the multipart `Content-Type`.
pub(super) fn form(
    args: &PushArgs,
    headers: &[HeaderTemplate],
) -> Result<Option<Form>, UsageError> {
    let Some(file_field) = &args.form_field else {
        if let Some(first) = args.form.first() {
            return Err(UsageError(format!(
                "--form {first:?} needs --form-field NAME: the name of the file part"
            )));
        }
        return Ok(None);
    };
    if file_field.is_empty() {
        return Err(UsageError(
            "--form-field needs the file part's name, e.g. --form-field file".into(),
        ));
    }
    if let Some(header) = headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-type"))
    {
        return Err(UsageError(format!(
            "--header {}: --form-field sets Content-Type (multipart/form-data with its boundary); \
             drop this header",
            header.name
        )));
    }
    let fields = args
        .form
        .iter()
        .map(|text| Form::parse_field(text).map_err(UsageError))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Form {
        file_field: file_field.clone(),
        fields,
    }))
}

/// Parses one `--header 'Name: value'`; `{env:NAME}` in the value is resolved with `env`.
pub fn parse_header(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<HeaderTemplate, UsageError> {
    let error = |why: &str| UsageError(format!("--header {:?}: {why}", redact_header(text)));
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| error("expected 'Name: value'"))?;
    let name = name.trim();
    let is_token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(is_token) {
        return Err(error("invalid header name"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(error("this header is set by update-orchestrator itself"));
    }
    let template = Template::parse(value.trim()).map_err(|e| error(&e.to_string()))?;
    // A line break in a value would end the header (and start another): refused here, not
    // found per device as "failed to parse header value".
    if value.contains(['\r', '\n']) {
        return Err(error("a line break cannot go in a header value"));
    }
    let broken = |name: &&str| env(name).is_some_and(|value| value.contains(['\r', '\n']));
    if let Some(name) = template.env_names().into_iter().find(broken) {
        return Err(error(&format!(
            "the variable {name} holds a line break, which cannot go in a header value"
        )));
    }
    // Set but empty: allowed (as curl sends it), but an empty credential is seldom meant.
    for variable in template.env_names() {
        if env(variable).is_some_and(|value| value.is_empty()) {
            log::warn!(
                "--header {name}: the variable {variable} is empty: the header goes out with \
                 it empty"
            );
        }
    }
    let value = template
        .resolve_env(env)
        .map_err(|e| error(&e.to_string()))?;
    Ok(HeaderTemplate {
        name: name.to_string(),
        value,
    })
}

/// A header as it may be shown in a message: the name only, so a literal token never leaks.
fn redact_header(text: &str) -> String {
    match text.split_once(':') {
        Some((name, _)) => format!("{}: ...", name.trim()),
        None => "...".to_string(),
    }
}

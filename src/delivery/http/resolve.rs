//! Name resolution for HTTP deliveries: a device named by an IP address needs none.
//!
//! ureq's default resolver spawns a thread for every lookup that has a timeout (all of ours),
//! even for `http://10.1.0.6:8080/…`, where `std` would answer from the text alone: one thread
//! start per upload attempt and per probe, which at thousands of devices in flight is CPU and
//! memory for nothing. Literal addresses are answered here; names still go to ureq's resolver
//! (with its timeout).
//!
//! Owns: turning a device URL's host into addresses. Must not: open sockets.

use std::net::{IpAddr, SocketAddr};
use ureq::Error;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// Literal IP addresses first, names through ureq's default resolver.
#[derive(Debug, Default)]
pub(crate) struct LiteralFirst(DefaultResolver);

impl Resolver for LiteralFirst {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, Error> {
        match literal(uri) {
            Some(addr) => {
                let mut found = self.0.empty();
                found.push(addr);
                Ok(found)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

/// The address of a URI whose host is an IP literal (`[…]` for IPv6), with its port or the
/// scheme's.
fn literal(uri: &Uri) -> Option<SocketAddr> {
    let authority = uri.authority()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip: IpAddr = host.parse().ok()?;
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    };
    Some(SocketAddr::new(
        ip,
        authority.port_u16().unwrap_or(default_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(uri: &str, expected: Option<&str>) {
        let uri: Uri = uri.parse().unwrap();
        let expected = expected.map(|addr| addr.parse::<SocketAddr>().unwrap());
        assert_eq!(literal(&uri), expected);
    }

    #[test]
    fn literal_addresses_need_no_lookup() {
        check("http://10.1.0.6:8080/update", Some("10.1.0.6:8080"));
        check("http://10.1.0.6/update", Some("10.1.0.6:80"));
        check("https://10.1.0.6/update", Some("10.1.0.6:443"));
        check("http://[2001:db8::7]:8080/u", Some("[2001:db8::7]:8080"));
        check("https://[::1]/u", Some("[::1]:443"));
        check("http://pos-17.fleet.example:8080/u", None);
        check("http://localhost/u", None);
    }
}

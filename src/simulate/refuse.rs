//! The port that `refuse` devices point at: a TCP socket bound on loopback that never listens,
//! so every connection to it is refused (RST), for as long as the fleet lives.
//!
//! Owns: that socket. Must not: listen, or accept anything.
//!
//! Why not "bind a listener, note its port, close it": a closed port can be taken again (by
//! anyone, or as the source port of an outgoing connection, which on loopback can then connect
//! to itself), so refusals would stop being certain. A socket that stays bound keeps the port
//! reserved, and without `listen` the kernel refuses every SYN to it.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};

/// A bound, non-listening TCP socket on 127.0.0.1.
pub(crate) struct RefusingPort {
    _socket: OwnedFd,
    addr: SocketAddr,
}

impl RefusingPort {
    /// Binds a free port on 127.0.0.1 without listening.
    pub(crate) fn bind() -> io::Result<RefusingPort> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns; it is closed on drop.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut address = sockaddr(0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `address` is a valid sockaddr_in of `len` bytes, and `fd` is open.
        let bound = unsafe { libc::bind(fd, (&raw const address).cast(), len) };
        if bound != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut got = len;
        // SAFETY: `address` has room for `got` bytes; the kernel writes the bound address.
        let named = unsafe { libc::getsockname(fd, (&raw mut address).cast(), &mut got) };
        if named != 0 {
            return Err(io::Error::last_os_error());
        }
        let port = u16::from_be(address.sin_port);
        Ok(RefusingPort {
            _socket: socket,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        })
    }

    /// Where connections are refused.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn sockaddr(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Duration;

    #[test]
    fn connections_are_refused_while_it_lives_and_the_port_stays_taken() {
        let port = RefusingPort::bind().unwrap();
        for _ in 0..3 {
            let error = TcpStream::connect_timeout(&port.addr(), Duration::from_secs(2))
                .expect_err("nothing may accept on a refusing port");
            assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
        }
        let taken = std::net::TcpListener::bind(port.addr()).expect_err("the port is held");
        assert_eq!(taken.kind(), io::ErrorKind::AddrInUse, "{taken}");
    }
}

//! Switches on TCP_NODELAY for rumqttd's listening sockets, which rumqttd creates itself and never
//! configures.
//!
//! Why: with Nagle's algorithm on, a broker that writes a PUBACK and then a PUBLISH to the same
//! socket holds the second write until the peer's delayed ACK (~40 ms). Every bonk would pay that
//! on every hop. Linux copies TCP_NODELAY from a listening socket to the sockets it accepts, so
//! setting it once on the listener fixes every later connection.
//!
//! How, without `unsafe`: rumqttd binds its listeners inside its own threads and exposes no handle.
//! This process finds them among its own file descriptors and duplicates each with
//! `pidfd_getfd(2)` (Linux 5.6+; always permitted for one's own process), which yields an owned
//! descriptor for the same socket. A socket whose local address is a listener's and that accepts
//! connections is the one. On other systems, or if anything fails, the broker still works — just
//! slower — and says so in its log.

use std::net::SocketAddr;

/// Sets TCP_NODELAY on this process's listening sockets bound to any of `addrs`. Returns the
/// addresses of the listeners found and set; an address not returned is not listening yet.
#[cfg(target_os = "linux")]
pub fn set_on_listeners(addrs: &[SocketAddr]) -> std::io::Result<Vec<SocketAddr>> {
    use rustix::net::{getsockname, sockopt};
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let pidfd = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(number) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fd) = pidfd_getfd(&pidfd, number, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let Ok(local) = getsockname(&fd) else {
            continue;
        };
        let Ok(local) = SocketAddr::try_from(local) else {
            continue;
        };
        if !addrs.contains(&local) || !sockopt::socket_acceptconn(&fd).unwrap_or(false) {
            continue;
        }
        sockopt::set_tcp_nodelay(&fd, true)?;
        found.push(local);
    }
    Ok(found)
}

/// Not supported off Linux: the broker works with Nagle's algorithm on.
#[cfg(not(target_os = "linux"))]
pub fn set_on_listeners(_addrs: &[SocketAddr]) -> std::io::Result<Vec<SocketAddr>> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

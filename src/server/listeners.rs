//! Listening sockets, bound before the shards start so that every shard shares the main
//! port (SO_REUSEPORT: the kernel spreads connections across shards) and each shard also
//! has a port of its own, for clients that route straight to the shard owning a partition.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

use super::error::ListenError;

/// Connections a listening socket queues before the kernel refuses more.
const LISTEN_BACKLOG: i32 = 1024;

/// Sockets bound for every shard. `main[i]` and `own[i]` belong to shard `i`.
pub struct BoundListeners {
    pub main_address: SocketAddr,
    pub main: Vec<OwnedFd>,
    pub own_addresses: Vec<SocketAddr>,
    pub own: Vec<OwnedFd>,
}

/// Socket buffer sizes (0 keeps the kernel's default).
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketBuffers {
    pub send_bytes: usize,
    pub receive_bytes: usize,
}

/// A listening socket on `address` with SO_REUSEADDR (a broker restarted after `kill -9`
/// binds again while its old connections linger in TIME_WAIT).
pub(crate) fn bind_one(
    address: SocketAddr,
    reuse_port: bool,
    buffers: SocketBuffers,
) -> Result<Socket, ListenError> {
    let domain = if address.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let fail = |operation: &'static str, source: std::io::Error| ListenError::Socket {
        operation,
        address,
        source,
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| fail("create a socket for", e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| fail("set SO_REUSEADDR on", e))?;
    if reuse_port {
        socket
            .set_reuse_port(true)
            .map_err(|e| fail("set SO_REUSEPORT on", e))?;
    }
    if buffers.send_bytes > 0 {
        socket
            .set_send_buffer_size(buffers.send_bytes)
            .map_err(|e| fail("size the send buffer of", e))?;
    }
    if buffers.receive_bytes > 0 {
        socket
            .set_recv_buffer_size(buffers.receive_bytes)
            .map_err(|e| fail("size the receive buffer of", e))?;
    }
    socket
        .set_nodelay(true)
        .map_err(|e| fail("set TCP_NODELAY on", e))?;
    socket.bind(&address.into()).map_err(|e| fail("bind", e))?;
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(|e| fail("listen on", e))?;
    Ok(socket)
}

fn local_address(socket: &Socket, bound: SocketAddr) -> Result<SocketAddr, ListenError> {
    let fail = |source| ListenError::Socket {
        operation: "read the local address of",
        address: bound,
        source,
    };
    socket
        .local_addr()
        .map_err(fail)?
        .as_socket()
        .ok_or_else(|| {
            fail(std::io::Error::other(
                "the bound address is not an IP address",
            ))
        })
}

/// Binds the main address once per shard, and one own port per shard: consecutive from
/// `first_own_port`, or ephemeral when it is `None`.
pub fn bind_listeners(
    main_address: SocketAddr,
    shard_count: usize,
    first_own_port: Option<u16>,
    buffers: SocketBuffers,
) -> Result<BoundListeners, ListenError> {
    let first = bind_one(main_address, true, buffers)?;
    let main_address = local_address(&first, main_address)?;
    let mut main = vec![OwnedFd::from(first)];
    for _ in 1..shard_count {
        main.push(OwnedFd::from(bind_one(main_address, true, buffers)?));
    }
    let mut own = Vec::with_capacity(shard_count);
    let mut own_addresses = Vec::with_capacity(shard_count);
    for shard in 0..shard_count {
        let port = match first_own_port {
            Some(first) => u16::try_from(shard)
                .ok()
                .and_then(|shard| first.checked_add(shard))
                .ok_or(ListenError::PortOverflow { first, shard_count })?,
            None => 0,
        };
        let address = SocketAddr::new(main_address.ip(), port);
        let socket = bind_one(address, false, buffers)?;
        own_addresses.push(local_address(&socket, address)?);
        own.push(OwnedFd::from(socket));
    }
    Ok(BoundListeners {
        main_address,
        main,
        own_addresses,
        own,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_shares_the_main_port_and_has_its_own() {
        let bound = bind_listeners(
            "127.0.0.1:0".parse().unwrap(),
            3,
            None,
            SocketBuffers::default(),
        )
        .unwrap();
        assert_eq!(bound.main.len(), 3);
        assert_ne!(bound.main_address.port(), 0);
        let mut ports: Vec<u16> = bound.own_addresses.iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3);
        assert!(!ports.contains(&bound.main_address.port()));
        // The main port is taken: a plain bind (without SO_REUSEPORT) fails.
        assert!(std::net::TcpListener::bind(bound.main_address).is_err());
    }
}

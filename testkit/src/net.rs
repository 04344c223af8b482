//! Free loopback ports, chosen by the kernel.
//!
//! A port is bound on 127.0.0.1 with port 0, read and released, so the
//! program the test starts next can bind it. [`free_ports`] holds all its
//! listeners until it has read every port, so the ports are distinct.

use std::net::TcpListener;

/// `n` distinct free ports on 127.0.0.1.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a bound address").port())
        .collect()
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `127.0.0.1:<a free port>`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

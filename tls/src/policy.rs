//! Secure by default: plaintext only on loopback.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Checks a listen address against the TLS flags: without them, only a
/// loopback address may be served, unless `--insecure`. The error is the
/// one line the program prints before exiting 2.
pub fn check_listen(listen: &str, tls: bool, insecure: bool) -> Result<(), String> {
    if tls || insecure {
        return Ok(());
    }
    let addrs: Vec<SocketAddr> = match listen.to_socket_addrs() {
        Ok(a) => a.collect(),
        // The bind that follows names an unusable address itself.
        Err(_) => return Ok(()),
    };
    if !addrs.is_empty() && addrs.iter().all(|a| is_loopback(a.ip())) {
        return Ok(());
    }
    Err(format!(
        "refusing to serve plaintext on {listen}, which is not a loopback address: give --tls-ca, --tls-cert and --tls-key (or --insecure to accept anyone who can reach it)"
    ))
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_listen;

    #[test]
    fn plaintext_only_on_loopback_unless_insecure() {
        assert!(check_listen("127.0.0.1:7001", false, false).is_ok());
        assert!(check_listen("127.0.0.7:7001", false, false).is_ok());
        assert!(check_listen("[::1]:7001", false, false).is_ok());
        assert!(check_listen("localhost:7001", false, false).is_ok());
        let e = check_listen("0.0.0.0:7001", false, false).unwrap_err();
        assert!(e.contains("--tls-cert") && e.contains("--insecure"), "{e}");
        assert!(check_listen("10.1.2.3:7001", false, false).is_err());
        assert!(check_listen("0.0.0.0:7001", true, false).is_ok());
        assert!(check_listen("0.0.0.0:7001", false, true).is_ok());
    }
}

//! Where the supervisors are (`--addr` / `SUPCTL_ADDR`) and what to do when
//! a request fails: every error supctl prints ends with the next step.
//!
//! `--addr` takes a comma-separated list of `host:port`, `http://host:port`
//! or `https://host:port` (a trailing `/` is fine; without a port, 7001).
//! The scheme must agree with the TLS flags: `https://` needs them,
//! `http://` refuses them; a bare `host:port` takes the one that fits.

use admin_api::{ClientError, StatusCode};
use anyhow::{Result, bail};

/// Where a supervisor listens when the address names no port.
pub const DEFAULT_PORT: u16 = 7001;
/// The environment variables an operator sets instead of the flags.
pub const ADDR_ENV: &str = "SUPCTL_ADDR";
pub const TOKEN_ENV: &str = "SUPCTL_TOKEN";

/// The `host:port` of every address of `--addr`, checked against the TLS
/// flags (`tls`: they were given).
pub fn parse_addrs(list: &str, tls: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let (scheme, rest) = match raw.split_once("://") {
            Some((s, rest)) => (Some(s.to_ascii_lowercase()), rest),
            None => (None, raw),
        };
        match (scheme.as_deref(), tls) {
            (None, _) | (Some("https"), true) | (Some("http"), false) => {}
            (Some("https"), false) => bail!(
                "--addr {raw}: https:// needs the TLS flags (--tls-ca, --tls-cert and --tls-key, or SUPCTL_TLS_CA, SUPCTL_TLS_CERT and SUPCTL_TLS_KEY); for a plaintext cluster use http:// or host:port"
            ),
            (Some("http"), true) => bail!(
                "--addr {raw}: http:// with the TLS flags: a TLS cluster is reached over https:// (or host:port); leave out the --tls-* flags for a plaintext cluster"
            ),
            (Some(other), _) => {
                bail!(
                    "--addr {raw}: unknown scheme {other}:// (use https://, http:// or host:port)"
                )
            }
        }
        let host_port = rest.strip_suffix('/').unwrap_or(rest);
        if host_port.is_empty() || host_port.contains('/') || host_port.contains('@') {
            bail!(
                "--addr {raw}: not an address (host:port, http://host:port or https://host:port)"
            );
        }
        out.push(if has_port(host_port) {
            host_port.to_string()
        } else {
            format!("{host_port}:{DEFAULT_PORT}")
        });
    }
    if out.is_empty() {
        bail!(
            "no supervisor address: give --addr host:port (comma-separated, any replica) or set {ADDR_ENV}"
        );
    }
    Ok(out)
}

/// `host:port`, `[v6]:port`: a port is named.
fn has_port(host_port: &str) -> bool {
    let Some((host, port)) = host_port.rsplit_once(':') else {
        return false;
    };
    let bracketed_v6 = host.starts_with('[') && host.ends_with(']');
    (bracketed_v6 || !host.contains(':')) && !port.is_empty() && port.parse::<u16>().is_ok()
}

/// What the failed command was talking to, for the hints.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The supervisor addresses tried.
    pub addrs: Vec<String>,
    /// A token was given (`--token` / `SUPCTL_TOKEN`).
    pub token: bool,
    /// The TLS flags were given.
    pub tls: bool,
}

/// The error as supctl prints it: the message, and the next step on its
/// own line when there is one.
pub fn explain(e: &anyhow::Error, ctx: &Context) -> String {
    let mut text = format!("{e:#}");
    if let Some(ClientError::Unreachable(details)) = find::<ClientError>(e) {
        text = format!(
            "no supervisor reachable at {} ({details})",
            ctx.addrs.join(", ")
        );
    }
    match hint(e, ctx) {
        Some(h) => format!("{text}\nhint: {h}"),
        None => text,
    }
}

/// The first error of `T` in `e`'s chain.
fn find<T: std::error::Error + Send + Sync + 'static>(e: &anyhow::Error) -> Option<&T> {
    e.chain().find_map(|c| c.downcast_ref::<T>())
}

/// The next step after `e`, if supctl knows one.
pub fn hint(e: &anyhow::Error, ctx: &Context) -> Option<String> {
    if let Some(c) = find::<ClientError>(e) {
        return client_hint(c, ctx);
    }
    if let Some(d) = find::<depmgr::Error>(e) {
        return depmgr_hint(d);
    }
    None
}

fn client_hint(e: &ClientError, ctx: &Context) -> Option<String> {
    match e {
        ClientError::Unreachable(_) => Some(format!(
            "check that a supervisor runs there, or point supctl at one with --addr or {ADDR_ENV} (host:port, http://host:port or https://host:port, comma-separated: any replica will do){}",
            if ctx.tls {
                ""
            } else {
                "; a TLS cluster also needs --tls-ca, --tls-cert and --tls-key"
            }
        )),
        ClientError::Api { status, message } => match *status {
            StatusCode::UNAUTHORIZED if ctx.token => Some(format!(
                "the admin token was refused: set {TOKEN_ENV} (or --token) to the supervisors' --admin-token"
            )),
            StatusCode::UNAUTHORIZED => Some(format!(
                "the cluster wants the admin token: set {TOKEN_ENV} (or --token){}",
                if ctx.tls {
                    ""
                } else {
                    ", or use an operator certificate (--tls-ca, --tls-cert, --tls-key)"
                }
            )),
            StatusCode::FORBIDDEN => Some(format!(
                "this identity may not do that: use the admin token ({TOKEN_ENV}) rather than the read token, or an operator certificate"
            )),
            StatusCode::NOT_FOUND if is_package(message) => Some(push_hint(message)),
            StatusCode::NOT_FOUND if message.contains("unknown module") => {
                Some("`supctl modules` lists the modules".into())
            }
            StatusCode::NOT_FOUND if message.contains("unknown node") => {
                Some("`supctl nodes` lists the nodes".into())
            }
            StatusCode::SERVICE_UNAVAILABLE => Some(
                "the cluster has no leader or no quorum now: `supctl status` against each replica shows which are up".into(),
            ),
            _ => None,
        },
        ClientError::BadAnswer { .. } => Some(format!(
            "is {} a supervisor's admin address? (`supctl probe <url>/ready` checks one)",
            ctx.addrs.join(", ")
        )),
    }
}

fn is_package(message: &str) -> bool {
    message.contains("depmgr") || message.contains("package")
}

/// The push hint, unless the server's message already says it.
fn push_hint(message: &str) -> String {
    if message.contains("supctl package push") {
        "push the package, then run this again".into()
    } else {
        "push it with `supctl package push <dir>` (the directory with its manifest.toml), then run this again".into()
    }
}

fn depmgr_hint(e: &depmgr::Error) -> Option<String> {
    match e {
        depmgr::Error::Http { status: 404, message } | depmgr::Error::NotFound(message)
            if is_package(message) =>
        {
            Some(push_hint(message))
        }
        depmgr::Error::Http { status: 401 | 403, .. } => Some(
            "uploads need an operator certificate (--tls-ca, --tls-cert, --tls-key from `supctl ca issue <dir> operator <name>`)".into(),
        ),
        depmgr::Error::Transport(_) => Some(format!(
            "check that depmgr runs there, or point supctl at it with --depmgr or {}",
            depmgr::client::URL_ENV
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_urls_and_host_ports() {
        assert_eq!(
            parse_addrs("127.0.0.1:7001, http://10.0.0.2:7002/,h3", false).expect("plain"),
            ["127.0.0.1:7001", "10.0.0.2:7002", "h3:7001"]
        );
        assert_eq!(
            parse_addrs("https://a:1,b:2,HTTPS://[::1]:3,[::1]", true).expect("tls"),
            ["a:1", "b:2", "[::1]:3", "[::1]:7001"]
        );
        let e = parse_addrs("https://a:1", false).expect_err("https without TLS");
        assert!(e.to_string().contains("needs the TLS flags"), "{e}");
        let e = parse_addrs("http://a:1", true).expect_err("http with TLS");
        assert!(e.to_string().contains("reached over https://"), "{e}");
        let e = parse_addrs("ftp://a:1", false).expect_err("ftp");
        assert!(e.to_string().contains("unknown scheme ftp://"), "{e}");
        let e = parse_addrs("http://a:1/v1", false).expect_err("a path");
        assert!(e.to_string().contains("not an address"), "{e}");
        let e = parse_addrs(" , ", false).expect_err("nothing");
        assert!(e.to_string().contains(ADDR_ENV), "{e}");
    }

    fn ctx(token: bool) -> Context {
        Context {
            addrs: vec!["a:1".into(), "b:2".into()],
            token,
            tls: false,
        }
    }

    #[test]
    fn unreachable_lists_the_addresses_and_names_the_variable() {
        let e = anyhow::Error::new(ClientError::Unreachable(
            "a:1: connection refused; b:2: connection refused".into(),
        ));
        let text = explain(&e, &ctx(false));
        assert!(
            text.starts_with("no supervisor reachable at a:1, b:2 (a:1: connection refused"),
            "{text}"
        );
        assert!(
            text.contains("\nhint: ") && text.contains(ADDR_ENV),
            "{text}"
        );
    }

    #[test]
    fn unauthorized_names_the_token_variable() {
        let e = anyhow::Error::new(ClientError::Api {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong admin token".into(),
        });
        let h = hint(&e, &ctx(false)).expect("hint");
        assert!(h.contains(TOKEN_ENV) && h.contains("wants"), "{h}");
        let h = hint(&e, &ctx(true)).expect("hint");
        assert!(h.contains(TOKEN_ENV) && h.contains("refused"), "{h}");
    }

    #[test]
    fn an_unknown_package_says_push_it() {
        let e = anyhow::Error::new(ClientError::Api {
            status: StatusCode::NOT_FOUND,
            message: "version web@9.9.9 is not in depmgr".into(),
        });
        let h = hint(&e, &ctx(false)).expect("hint");
        assert!(h.contains("supctl package push"), "{h}");
        let e = anyhow::Error::new(depmgr::Error::Http {
            status: 404,
            message: "package web@9.9.9 is not stored".into(),
        })
        .context("showing web@9.9.9");
        let h = hint(&e, &ctx(false)).expect("hint");
        assert!(h.contains("supctl package push"), "{h}");
        let e = anyhow::Error::new(ClientError::Api {
            status: StatusCode::NOT_FOUND,
            message: "unknown module \"x\"".into(),
        });
        assert!(
            hint(&e, &ctx(false))
                .expect("hint")
                .contains("supctl modules")
        );
        let e = anyhow::anyhow!("something else");
        assert_eq!(hint(&e, &ctx(false)), None);
    }
}

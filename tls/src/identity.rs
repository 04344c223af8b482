//! Identities: a [`Role`] and a name, written in a certificate as the URI
//! SAN `spiffe://supcluster/<role>/<name>`.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The trust domain of every identity.
pub const TRUST_DOMAIN: &str = "supcluster";

/// What a certificate holder is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A supervisor replica; its name is its Raft id.
    Supervisor,
    /// A node manager; its name is its node.
    Agent,
    /// The dependency manager.
    Depmgr,
    /// A person or tool using the admin API and uploading packages.
    Operator,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Supervisor, Role::Agent, Role::Depmgr, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Supervisor => "supervisor",
            Role::Agent => "agent",
            Role::Depmgr => "depmgr",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}: use supervisor, agent, depmgr or operator"))
    }
}

/// Who a certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl Identity {
    /// An identity whose name follows the cluster's rules for names: 1 to
    /// 64 characters from `[A-Za-z0-9._-]`, starting with a letter or a
    /// digit; a supervisor's name is its numeric id.
    pub fn new(role: Role, name: &str) -> Result<Identity, String> {
        check_name(name)?;
        if role == Role::Supervisor && name.parse::<u64>().is_err() {
            return Err(format!(
                "a supervisor's name is its numeric id, not {name:?}"
            ));
        }
        Ok(Identity {
            role,
            name: name.to_string(),
        })
    }

    /// `spiffe://supcluster/<role>/<name>`.
    pub fn uri(&self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}/{}", self.role, self.name)
    }

    /// Reads an identity URI; `None` when it is not one of ours.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?;
        let rest = rest.strip_prefix('/')?;
        let (role, name) = rest.split_once('/')?;
        Identity::new(role.parse().ok()?, name).ok()
    }

    /// The identity of a DER certificate: its one `spiffe://supcluster/`
    /// URI SAN. A certificate with none, or with two, names no one.
    pub fn from_der(der: &[u8]) -> Result<Identity> {
        use x509_parser::prelude::*;
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| Error::Cert(format!("unreadable certificate: {e}")))?;
        let mut found = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name
                    && uri.starts_with("spiffe://")
                {
                    found.push(*uri);
                }
            }
        }
        match found.as_slice() {
            [uri] => Identity::from_uri(uri).ok_or_else(|| {
                Error::Cert(format!(
                    "certificate names {uri:?}, not spiffe://{TRUST_DOMAIN}/<role>/<name>"
                ))
            }),
            [] => Err(Error::Cert(format!(
                "certificate {:?} has no spiffe://{TRUST_DOMAIN}/ URI SAN (issue it with `supctl ca issue`)",
                cert.subject().to_string()
            ))),
            _ => Err(Error::Cert(format!(
                "certificate names {} identities; it must name one",
                found.len()
            ))),
        }
    }

    /// A supervisor's Raft id.
    pub fn supervisor_id(&self) -> Option<u64> {
        match self.role {
            Role::Supervisor => self.name.parse().ok(),
            _ => None,
        }
    }

    /// True when this is `role`.
    pub fn is(&self, role: Role) -> bool {
        self.role == role
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.role, self.name)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("name {name:?} must be 1 to 64 characters"));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(format!("name {name:?} must start with a letter or a digit"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?} contains {c:?}; use letters, digits, '.', '_' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_strangers_are_refused() {
        let id = Identity::new(Role::Agent, "node-a").expect("valid");
        assert_eq!(id.uri(), "spiffe://supcluster/agent/node-a");
        assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        assert_eq!(Identity::from_uri("spiffe://other/agent/a"), None);
        assert_eq!(Identity::from_uri("spiffe://supcluster/root/a"), None);
        assert_eq!(Identity::from_uri("spiffe://supcluster/agent/../x"), None);
        assert_eq!(Identity::from_uri("spiffe://supcluster/agent/a/b"), None);
        assert!(Identity::new(Role::Supervisor, "one").is_err());
        assert_eq!(
            Identity::new(Role::Supervisor, "3")
                .expect("valid")
                .supervisor_id(),
            Some(3)
        );
        assert!("admin".parse::<Role>().unwrap_err().contains("operator"));
    }
}

//! Raft from a member this replica does not know yet.
//!
//! With TLS a replica admits Raft messages only from the members of the
//! membership it knows ([`crate::app::App::is_raft_peer`]). A replica that
//! was down while a new member joined would then refuse that member for
//! ever, even when it leads and its appends are the only way to catch up.
//! So when a supervisor certificate of the cluster CA names an id this
//! replica does not know, it asks the replicas it does trust whether that
//! id is one of their members: first the members it knows, then the ids of
//! `--peers` (the operator's word at start). Each is asked
//! `GET /raft/membership` over mutual TLS and its answer counts only when
//! it comes from the certificate `supervisor/<id>` of the replica asked. One
//! "yes" admits the id for [`ADMITTED_FOR`]; near the end it is asked again.
//!
//! This gives no one more power than they had: a member this replica knows
//! may send it Raft messages anyway, and an id in `--peers` is admitted
//! while the replica has no membership. A supervisor certificate that no
//! trusted replica counts as a member stays refused (it is a stray or a
//! removed replica, or an impostor).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::raft::SupervisorId;

/// How long one "yes" admits an id.
pub const ADMITTED_FOR: Duration = Duration::from_secs(60);
/// Asked again when less than this is left of an admission.
const RENEW_BEFORE: Duration = Duration::from_secs(15);
/// At most one round of questions per unknown id in this time.
const ASK_EVERY: Duration = Duration::from_secs(1);
/// Each question's deadline.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this many unknown ids are tracked (a bound on the maps).
const MAX_TRACKED: usize = 64;

/// `GET /raft/membership`: the members a replica knows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MembershipAnswer {
    /// The replica that answers.
    pub id: SupervisorId,
    /// Voters and learners of the membership it has (latest, maybe not yet
    /// committed).
    pub members: Vec<SupervisorId>,
}

/// Ids admitted on another replica's word, and when each was last asked
/// about.
pub struct Vouches {
    admitted: Mutex<HashMap<SupervisorId, Instant>>,
    asked: Mutex<HashMap<SupervisorId, Instant>>,
    /// Presents this replica's certificate, accepts supervisors, reports
    /// the server's certificate (checked against the replica asked).
    http: reqwest::Client,
}

impl Vouches {
    pub fn new(tls: Option<&Arc<tls::Tls>>) -> Vouches {
        let http = tls::client::http_builder(tls, &[tls::Role::Supervisor])
            .tls_info(true)
            .connect_timeout(Duration::from_secs(1))
            .timeout(ASK_TIMEOUT)
            .build()
            .expect("building an HTTP client with static settings");
        Vouches {
            admitted: Mutex::new(HashMap::new()),
            asked: Mutex::new(HashMap::new()),
            http,
        }
    }

    /// Whether `id` is admitted now; asks again in the background when the
    /// admission is about to end.
    pub fn admitted(&self, app: &Arc<App>, id: SupervisorId) -> bool {
        let until = self
            .admitted
            .lock()
            .expect("vouches lock poisoned")
            .get(&id)
            .copied();
        match until {
            Some(until) if until > Instant::now() => {
                if until - Instant::now() < RENEW_BEFORE {
                    self.ask(app, id);
                }
                true
            }
            _ => false,
        }
    }

    /// Asks the trusted replicas about `id` in the background (at most one
    /// round a second per id).
    pub fn ask(&self, app: &Arc<App>, id: SupervisorId) {
        let now = Instant::now();
        {
            let mut asked = self.asked.lock().expect("vouches lock poisoned");
            if asked
                .get(&id)
                .is_some_and(|at| now.duration_since(*at) < ASK_EVERY)
            {
                return;
            }
            if asked.len() >= MAX_TRACKED {
                asked.retain(|_, at| now.duration_since(*at) < ASK_EVERY);
                if asked.len() >= MAX_TRACKED {
                    return;
                }
            }
            asked.insert(id, now);
        }
        let app = app.clone();
        app.tasks.clone().spawn(async move {
            let known = app.member_addrs();
            let askees = askees(app.id, id, &known, &app.config.peers.0);
            for (voucher, addr) in askees {
                match app.vouches.question(&app, voucher, &addr, id).await {
                    Ok(true) => {
                        tracing::info!(
                            supervisor = id,
                            voucher,
                            "supervisor {id} admitted for Raft: a member of supervisor {voucher}'s membership, not yet of this replica's"
                        );
                        let mut admitted = app.vouches.admitted.lock().expect("vouches lock poisoned");
                        if admitted.len() >= MAX_TRACKED {
                            let now = Instant::now();
                            admitted.retain(|_, until| *until > now);
                        }
                        if admitted.len() < MAX_TRACKED {
                            admitted.insert(id, Instant::now() + ADMITTED_FOR);
                        }
                        return;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::info!(voucher, "could not ask supervisor {voucher} about supervisor {id}: {e}"),
                }
            }
        });
    }

    /// Whether the replica `voucher` at `addr` counts `id` as a member.
    async fn question(
        &self,
        app: &App,
        voucher: SupervisorId,
        addr: &str,
        id: SupervisorId,
    ) -> Result<bool, String> {
        let url = format!("{}://{addr}/raft/membership", app.scheme());
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if app.tls.is_some() {
            let holder = resp
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|i| i.peer_certificate())
                .and_then(|der| tls::Identity::from_der(der).ok())
                .and_then(|i| i.supervisor_id());
            if holder != Some(voucher) {
                return Err(format!(
                    "{url} is not served by supervisor {voucher}'s certificate"
                ));
            }
        }
        if !resp.status().is_success() {
            return Err(format!("{url}: {}", resp.status()));
        }
        let answer: MembershipAnswer = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
        Ok(answer.id == voucher && answer.members.contains(&id))
    }
}

/// Whom to ask about `subject`, in order: the members this replica knows,
/// then the ids of `--peers` it does not know as members; never itself or
/// the subject.
pub fn askees(
    me: SupervisorId,
    subject: SupervisorId,
    members: &[(SupervisorId, String)],
    peers: &std::collections::BTreeMap<SupervisorId, String>,
) -> Vec<(SupervisorId, String)> {
    let mut out: Vec<(SupervisorId, String)> = Vec::new();
    let candidates = members
        .iter()
        .cloned()
        .chain(peers.iter().map(|(id, a)| (*id, a.clone())));
    for (id, addr) in candidates {
        if id != me && id != subject && !out.iter().any(|(o, _)| *o == id) {
            out.push((id, addr));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn list(v: &[(u64, &str)]) -> Vec<(u64, String)> {
        v.iter().map(|(i, a)| (*i, a.to_string())).collect()
    }

    #[test]
    fn members_first_then_peers_never_self_or_subject() {
        let members = list(&[(1, "m1"), (2, "m2"), (3, "m3")]);
        let peers: BTreeMap<u64, String> = [(1, "p1"), (3, "p3"), (4, "p4"), (5, "p5")]
            .into_iter()
            .map(|(i, a)| (i, a.to_string()))
            .collect();
        assert_eq!(
            askees(3, 5, &members, &peers),
            list(&[(1, "m1"), (2, "m2"), (4, "p4")]),
            "members' addresses win over --peers' for the same id"
        );
        assert_eq!(askees(3, 5, &[], &BTreeMap::new()), list(&[]));
    }
}

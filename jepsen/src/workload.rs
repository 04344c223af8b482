//! Clients that deploy, remove and read modules through the admin API,
//! each operation recorded with its outcome and times.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use testkit::spec::ModuleSpec;

use crate::admin::{AdminClient, ClientError};
use crate::history::{Fencing, Nanos, Op, OpKind, Outcome, ReadValue, Record, now_ns};

/// How long a client waits for one answer before calling it unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Modules deployed and not removed: clients deploy while fewer are live.
pub const MIN_LIVE: usize = 3;
/// Modules deployed and not removed, at most.
const MAX_LIVE: usize = 8;

/// What the clients share: the names in play and the history so far.
#[derive(Default)]
pub struct Shared {
    /// Every module name whose deploy was invoked, with whether a remove was
    /// invoked and whether its deploy was acknowledged.
    pub modules: Vec<(String, bool, bool)>,
    pub ops: Vec<Record>,
    /// Modules no client removes for now (a crash-loop fault targets them).
    pub protected: std::collections::BTreeSet<String>,
}

/// The package every module runs (pushed by the harness).
pub const PACKAGE: &str = "probe";

pub fn spec(name: &str, fencing: Fencing) -> serde_json::Value {
    ModuleSpec::new(name)
        .package(PACKAGE, "1.0.0")
        .restart(2, 100, 500)
        .max_nodes(3)
        .fencing(match fencing {
            Fencing::AtMostOne => "at-most-one",
            Fencing::AtLeastOne => "at-least-one",
        })
        .json()
}

/// A write's outcome from the client's result: acknowledged, refused (4xx:
/// definitely not applied), or unknown (timeout, lost connection, 5xx).
fn write_outcome<T>(r: &Result<T, ClientError>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(ClientError::Api { status, .. }) if status.is_client_error() => Outcome::Fail,
        Err(_) => Outcome::Unknown,
    }
}

/// One client: `client` numbers its module names; `addrs` are the
/// supervisors, one picked at random per operation (no retry elsewhere, so
/// each recorded operation is one request).
pub async fn client(
    client: u32,
    seed: u64,
    addrs: Vec<String>,
    operator: Option<Arc<tls::Tls>>,
    shared: Arc<Mutex<Shared>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(client) << 32));
    let admins: Vec<AdminClient> = addrs
        .iter()
        .map(|a| {
            AdminClient::with_tls(vec![a.clone()], None, operator.as_ref()).with_timeout(OP_TIMEOUT)
        })
        .collect();
    let mut next = 0u32;
    while !stop.is_cancelled() {
        let admin = &admins[rng.gen_range(0..admins.len())];
        let roll: f64 = rng.r#gen();
        let (live, removable, known) = {
            let s = shared.lock().expect("shared state");
            let live = s.modules.iter().filter(|m| !m.1).count();
            let removable: Vec<String> = s
                .modules
                .iter()
                .filter(|m| !m.1 && m.2 && !s.protected.contains(&m.0))
                .map(|m| m.0.clone())
                .collect();
            let known: Vec<String> = s.modules.iter().map(|m| m.0.clone()).collect();
            (live, removable, known)
        };
        let op = if (roll < 0.06 && live < MAX_LIVE) || live < MIN_LIVE {
            next += 1;
            let name = format!("m{client}-{next}");
            let fencing = if rng.gen_bool(0.25) {
                Fencing::AtLeastOne
            } else {
                Fencing::AtMostOne
            };
            shared
                .lock()
                .expect("shared state")
                .modules
                .push((name.clone(), false, false));
            let invoke_ns = now_ns();
            let r = admin.deploy(&spec(&name, fencing)).await;
            let outcome = write_outcome(&r);
            if outcome == Outcome::Ok {
                let mut s = shared.lock().expect("shared state");
                if let Some(m) = s.modules.iter_mut().find(|m| m.0 == name) {
                    m.2 = true;
                }
            }
            finish(
                client,
                name,
                OpKind::Deploy { fencing },
                invoke_ns,
                outcome,
                None,
                r.as_ref().ok().map(|d| d.epoch),
                r.err(),
            )
        } else if roll < 0.075 && !removable.is_empty() {
            let name = removable[rng.gen_range(0..removable.len())].clone();
            {
                let mut s = shared.lock().expect("shared state");
                if let Some(m) = s.modules.iter_mut().find(|m| m.0 == name) {
                    m.1 = true;
                }
            }
            let invoke_ns = now_ns();
            let r = admin.remove(&name).await;
            let outcome = write_outcome(&r);
            finish(
                client,
                name,
                OpKind::Remove,
                invoke_ns,
                outcome,
                None,
                None,
                r.err(),
            )
        } else {
            let name = known[rng.gen_range(0..known.len())].clone();
            let invoke_ns = now_ns();
            let r = admin.module(&name).await;
            let (outcome, read, err) = match r {
                Ok(v) => (
                    Outcome::Ok,
                    Some(ReadValue::Present {
                        node: v.node,
                        epoch: v.epoch,
                        state: v.state,
                    }),
                    None,
                ),
                Err(ClientError::Api { status, .. }) if status == StatusCode::NOT_FOUND => {
                    (Outcome::Ok, Some(ReadValue::Absent), None)
                }
                // A read that failed has no effect: it is recorded as a
                // failure and the checkers ignore it.
                Err(e) => (Outcome::Fail, None, Some(e)),
            };
            finish(
                client,
                name,
                OpKind::Read,
                invoke_ns,
                outcome,
                read,
                None,
                err,
            )
        };
        shared.lock().expect("shared state").ops.push(op);
        let pause = rng.gen_range(50..150);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn finish(
    client: u32,
    module: String,
    kind: OpKind,
    invoke_ns: Nanos,
    outcome: Outcome,
    read: Option<ReadValue>,
    epoch: Option<u64>,
    err: Option<ClientError>,
) -> Record {
    Record::Op(Op {
        client,
        module,
        kind,
        invoke_ns,
        complete_ns: now_ns(),
        outcome,
        read,
        epoch,
        error: err.map(|e| e.to_string()),
    })
}

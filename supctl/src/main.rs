//! `supctl`: the operator's command line for the supervisor cluster.
//!
//! Output is a readable table by default, JSON with `--json`, and any of
//! `-o table|wide|json|yaml` (`output`). The admin token, when the cluster
//! wants one, comes from `SUPCTL_TOKEN`. `deploy`, `update`, `rollback` and
//! `drain` wait until the change settled (`wait`). Every error ends with
//! the next step (`connect`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[cfg(test)]
mod cli_tests;
mod connect;
mod describe;
mod dev;
mod logs;
mod output;
mod plan;
mod push;
mod snapshot;
mod versions;
mod wait;
mod why;

use admin_api::AdminClient;
use admin_api::EventView;
use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand};
use output::Output;

#[derive(Debug, Parser)]
#[command(name = "supctl", version, about = "Operate a supervisor cluster")]
struct Cli {
    /// Supervisor address(es), comma-separated, any replica will do:
    /// host:port, http://host:port or https://host:port (https with the
    /// TLS flags).
    #[arg(
        long,
        env = "SUPCTL_ADDR",
        default_value = "127.0.0.1:7001",
        global = true
    )]
    addr: String,
    /// Print JSON instead of tables (the same as `-o json`).
    #[arg(long, global = true)]
    json: bool,
    /// Output format: table (the default), wide (more columns), json or
    /// yaml.
    #[arg(short = 'o', long = "output", value_enum, global = true)]
    output: Option<output::Format>,
    /// Admin token (sent as a bearer token).
    #[arg(long, env = "SUPCTL_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The cluster CA (PEM): with --tls-cert and --tls-key, talk TLS and
    /// accept only supervisors (and depmgr) holding certificates of it.
    #[arg(long, env = "SUPCTL_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// This operator's certificate (PEM), issued by `supctl ca issue <dir>
    /// operator <name>`.
    #[arg(long, env = "SUPCTL_TLS_CERT", global = true)]
    tls_cert: Option<PathBuf>,
    /// This operator's private key (PEM).
    #[arg(long, env = "SUPCTL_TLS_KEY", global = true)]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Cluster, leader, nodes and modules at a glance.
    Status,
    /// Nodes and their modules.
    Nodes,
    /// Modules and where they run.
    Modules,
    /// The event record of every decision: the newest events, or those
    /// after --after; -f follows the live stream (Server-Sent Events),
    /// moving to another supervisor when one goes away.
    Events {
        /// Keep printing new events as they come (the event stream).
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only events after this index (default: the newest --limit).
        #[arg(long)]
        after: Option<u64>,
        /// Most events listed (before following); without --after, the
        /// newest 50 unless told.
        #[arg(long)]
        limit: Option<usize>,
        /// Only events of these modules (comma-separated).
        #[arg(long)]
        module: Option<String>,
        /// Only events of these nodes (comma-separated).
        #[arg(long)]
        node: Option<String>,
        /// Only events of these kinds (comma-separated, e.g.
        /// failure_detected,restored).
        #[arg(long)]
        kind: Option<String>,
    },
    /// Deploy a module from a spec file (.json or .toml); waits until it
    /// runs healthy on a node (or failed: exit 1 with the reason).
    Deploy {
        spec: PathBuf,
        /// Return once the deploy is committed, without waiting.
        #[arg(long)]
        detach: bool,
        /// Stop waiting after this long (90s, 2m, 1h; a bare number is
        /// seconds): exit 1 saying it is still in progress.
        #[arg(long, default_value = wait::DEFAULT_TIMEOUT, value_parser = wait::parse_duration)]
        timeout: Duration,
    },
    /// Replace a module's spec (from a .json or .toml file): a rollout to a
    /// new revision, health-gated; waits until it has settled and fails if
    /// the new revision was reverted.
    Update {
        spec: PathBuf,
        /// Return once the update is committed, without waiting.
        #[arg(long)]
        detach: bool,
        /// Give up waiting after this long (300, 90s, 5m; a bare number is
        /// seconds); the rollout goes on.
        #[arg(long, default_value = "300", value_parser = wait::parse_duration)]
        timeout: Duration,
    },
    /// Go back to the previous good revision (or --revision N); waits like
    /// update.
    Rollback {
        module: String,
        #[arg(long)]
        revision: Option<u32>,
        /// Return once the rollback is committed, without waiting.
        #[arg(long)]
        detach: bool,
        /// Give up waiting after this long (as for update).
        #[arg(long, default_value = "300", value_parser = wait::parse_duration)]
        timeout: Duration,
    },
    /// A module's revisions, with their outcome and counters.
    History { module: String },
    /// A module's output (stdout and stderr): the last lines, and with -f
    /// what it prints next.
    Logs(logs::LogsArgs),
    /// Why a module is where it is: the chain of decisions that led there,
    /// newest first, back to its deploy.
    Why { module: String },
    /// What the cluster would do, without doing it: which modules would
    /// move where (and how long each is down), wait or fail.
    Plan {
        #[command(subcommand)]
        what: plan::What,
    },
    /// Backups of the replicated state.
    Snapshot {
        #[command(subcommand)]
        what: SnapshotCmd,
    },
    /// Update every module using <package> to <version>: <package>@<version>.
    /// The cluster drives it (a fleet rollout, `POST /v1/rollouts`): supctl
    /// follows it until every module settled or it paused, and may stop
    /// without stopping it.
    Rollout {
        package: String,
        /// Modules updated at a time (each waits for its health gate).
        #[arg(long, default_value_t = 1)]
        max_parallel: u32,
        /// Pause (start no further module) once more than this many failed.
        #[arg(long, default_value_t = 0)]
        max_failures: u32,
        /// Return once the rollout is committed, without following it.
        #[arg(long)]
        detach: bool,
        /// Stop following after this many seconds (the rollout goes on).
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
    /// Fleet rollouts: list them, show one, pause, resume or cancel one.
    Rollouts {
        #[command(subcommand)]
        cmd: Option<RolloutsCmd>,
    },
    /// Package versions the cluster stopped using; `lift` one.
    Quarantine {
        #[command(subcommand)]
        cmd: Option<QuarantineCmd>,
    },
    /// Stop and remove a module (it shows `stopped` until its copy is).
    Remove { module: String },
    /// Move a node's modules away and keep new ones off it; waits until
    /// every module that can move runs elsewhere (exit 1 naming those left
    /// on the node or without one).
    Drain {
        node: String,
        /// Return once the drain is committed, without waiting.
        #[arg(long)]
        detach: bool,
        /// Stop waiting after this long (90s, 2m, 1h; a bare number is
        /// seconds): exit 1 saying it is still in progress.
        #[arg(long, default_value = wait::DEFAULT_TIMEOUT, value_parser = wait::parse_duration)]
        timeout: Duration,
    },
    /// Let a drained node take modules again (modules moved away stay
    /// where they are; new placements and failovers may go to it).
    Undrain { node: String },
    /// Clear a failed module (its counters and tried nodes) once the cause
    /// is fixed: it is placed again.
    Reset { module: String },
    /// Describe a module: placement, state and reason, counters, its
    /// agent's process, and its recent events.
    Module {
        name: String,
        /// How many recent events to show.
        #[arg(long, default_value_t = 10)]
        events: usize,
    },
    /// Describe a node (`supctl node <id>`), or forget a down one
    /// (`supctl node rm <id>`).
    #[command(args_conflicts_with_subcommands = true)]
    Node {
        /// The node to describe.
        id: Option<String>,
        /// How many recent events to show.
        #[arg(long, default_value_t = 10)]
        events: usize,
        #[command(subcommand)]
        cmd: Option<NodeCmd>,
    },
    /// A whole local cluster on loopback (3 supervisors, depmgr, 3 agents,
    /// a demo module) until Ctrl-C.
    Dev {
        /// Where the cluster keeps its data (reused by the next run).
        #[arg(long, default_value = ".dev-cluster")]
        dir: PathBuf,
    },
    /// Configuration packages in the dependency manager (depmgr).
    #[command(subcommand)]
    Package(depmgr::cli::PackageCmd),
    /// The cluster's certificate authority: make it, issue certificates.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Print a shell completion script: `supctl completions bash >
    /// /etc/bash_completion.d/supctl` (zsh: into a directory of $fpath as
    /// `_supctl`; fish: ~/.config/fish/completions/supctl.fish).
    Completions { shell: clap_complete::Shell },
    /// GET a URL of any program of the cluster (e.g.
    /// https://10.0.0.1:7001/ready) and exit 0 on a 2xx answer, 1
    /// otherwise, printing the status and body: a health check for
    /// containers and scripts. With the TLS flags the server may hold a
    /// certificate of any role of the CA.
    Probe {
        url: String,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCmd {
    /// Save a backup of the replicated state to <file> (`GET /v1/snapshot`);
    /// `supervisor --restore-from <file>` re-creates a cluster from it.
    Save { file: PathBuf },
}

/// `supctl probe`: one GET, 2xx or not.
async fn probe(url: &str, timeout_ms: u64, tls: Option<&std::sync::Arc<tls::Tls>>) -> Result<()> {
    use tls::Role;
    let http = tls::client::http_builder(
        tls,
        &[Role::Supervisor, Role::Agent, Role::Depmgr, Role::Operator],
    )
    .timeout(std::time::Duration::from_millis(timeout_ms))
    .build()
    .context("building the HTTP client")?;
    let resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {}", admin_api::client::error_chain(&e)))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body = body.trim();
    if status.is_success() {
        println!("{status} {body}");
        Ok(())
    } else {
        anyhow::bail!("{url}: {status} {body}")
    }
}

/// `supctl rollouts pause|resume|cancel <id>`: the action, then the rollout.
async fn rollout_action(c: &AdminClient, id: u64, action: &str) -> Result<()> {
    versions::print_rollout(&c.rollout_action(id, action).await?);
    Ok(())
}

#[derive(Debug, Subcommand)]
enum RolloutsCmd {
    /// The fleet rollouts kept, newest first (the default).
    List,
    /// One rollout: its modules by where they stand.
    Show { id: u64 },
    /// Start no further module (those updated keep their rollouts).
    Pause { id: u64 },
    /// Go on with a paused rollout (failures so far are forgiven).
    Resume { id: u64 },
    /// Start no further module, for good.
    Cancel { id: u64 },
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Forget a node that is down (its modules are placed again elsewhere;
    /// its agent, if it ever comes back, registers as a new node).
    Rm { node: String },
}

#[derive(Debug, Subcommand)]
enum QuarantineCmd {
    /// List the quarantined package versions (the default).
    List,
    /// Lift the quarantine of <package>@<version>: modules waiting for it
    /// are placed again.
    Lift { package: String },
}

#[derive(Debug, Subcommand)]
enum CaCmd {
    /// Create a CA: <dir>/ca.pem and <dir>/ca.key (refuses to replace one).
    Init { dir: PathBuf },
    /// Issue a certificate and key signed by the CA in <dir>:
    /// <dir>/<name>.pem and <dir>/<name>.key, naming
    /// spiffe://supcluster/<role>/<name>. Issuing again for the same
    /// identity replaces them (rotation: then send the daemon SIGHUP).
    Issue {
        dir: PathBuf,
        /// supervisor (name = its id), agent (name = its node), depmgr or
        /// operator.
        role: tls::Role,
        name: String,
        /// A DNS name or IP address the holder is reached at (repeatable);
        /// informational: cluster clients check identities, not host names.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Validity in days (a negative number issues an already expired
        /// certificate, for testing refusals).
        #[arg(long, default_value_t = tls::ca::DEFAULT_DAYS, allow_negative_numbers = true)]
        days: i64,
    },
}

fn ca(cmd: &CaCmd) -> Result<()> {
    match cmd {
        CaCmd::Init { dir } => {
            tls::ca::init(dir)?;
            println!(
                "CA written: {} and {} (keep the key secret)",
                tls::ca::ca_cert_path(dir).display(),
                tls::ca::ca_key_path(dir).display()
            );
        }
        CaCmd::Issue {
            dir,
            role,
            name,
            hosts,
            days,
        } => {
            let identity = tls::Identity::new(*role, name).map_err(anyhow::Error::msg)?;
            let cert = tls::ca::issue(dir, &identity, hosts, *days)?;
            println!(
                "{} issued: {} and {}",
                identity.uri(),
                cert.display(),
                tls::ca::key_path(dir, name).display()
            );
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = connect::Context {
        addrs: cli
            .addr
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect(),
        token: cli.token.is_some(),
        tls: cli.tls_ca.is_some() || cli.tls_cert.is_some() || cli.tls_key.is_some(),
    };
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("supctl: {}", connect::explain(&e, &ctx));
            ExitCode::FAILURE
        }
    }
}

/// The operator identity of `--tls-ca/--tls-cert/--tls-key`, if given.
fn tls(cli: &Cli) -> Result<Option<std::sync::Arc<tls::Tls>>> {
    let files = tls::TlsFiles::from_flags(
        cli.tls_ca.clone(),
        cli.tls_cert.clone(),
        cli.tls_key.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    files
        .map(|f| tls::Tls::load(f).context("loading the TLS flags"))
        .transpose()
}

fn client(cli: &Cli, tls: Option<&std::sync::Arc<tls::Tls>>) -> Result<AdminClient> {
    let addrs = connect::parse_addrs(&cli.addr, tls.is_some())?;
    Ok(AdminClient::with_tls(addrs, cli.token.clone(), tls))
}

/// The name of the module of a spec.
fn spec_name(spec: &std::path::Path, value: &serde_json::Value) -> Result<String> {
    Ok(value
        .get("name")
        .and_then(|n| n.as_str())
        .with_context(|| format!("{}: the spec has no name", spec.display()))?
        .to_string())
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Ca(cmd) => return ca(cmd),
        Cmd::Dev { dir } => return dev::run(dir).await,
        Cmd::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "supctl", &mut script);
            // Into a pipe that closed early (`| head`): nothing to say.
            return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            };
        }
        _ => {}
    }
    let out = Output::new(cli.output, cli.json);
    let tls = tls(&cli)?;
    if let Cmd::Package(cmd) = &cli.cmd {
        return match cmd {
            depmgr::cli::PackageCmd::Push { dir, addr } => {
                push::push(dir, &addr.depmgr, tls.as_ref()).await
            }
            _ => depmgr::cli::run_with_tls(cmd.clone(), tls.clone()).await,
        };
    }
    if let Cmd::Probe { url, timeout_ms } = &cli.cmd {
        return probe(url, *timeout_ms, tls.as_ref()).await;
    }
    let c = client(&cli, tls.as_ref())?;
    match &cli.cmd {
        // Answered above, before the client is made.
        Cmd::Dev { .. }
        | Cmd::Ca(_)
        | Cmd::Completions { .. }
        | Cmd::Package(_)
        | Cmd::Probe { .. } => return Ok(()),
        Cmd::Status => {
            let cluster = c.cluster().await?;
            let nodes = c.nodes().await?;
            let modules = c.modules().await?;
            if out.structured() {
                return out.print(
                    &serde_json::json!({"cluster": cluster, "nodes": nodes, "modules": modules}),
                );
            }
            let leader = cluster.leader.map_or("none".to_string(), |l| l.to_string());
            println!(
                "cluster: leader {leader}, term {}, applied {}, {} members",
                cluster.term,
                cluster.last_applied,
                cluster.members.len()
            );
            let members = cluster
                .members
                .iter()
                .map(|m| {
                    let role = if Some(m.id) == cluster.leader {
                        "leader"
                    } else if m.voter {
                        "voter"
                    } else {
                        "learner"
                    };
                    vec![m.id.to_string(), m.addr.clone(), role.to_string()]
                })
                .collect();
            print!(
                "{}",
                output::table(&["SUPERVISOR", "ADDR", "ROLE"], members, &["SUPERVISOR"])
            );
            println!();
            print!("{}", output::nodes(&nodes, out.wide()));
            println!();
            print!("{}", output::modules(&modules, out.wide()));
        }
        Cmd::Nodes => {
            let nodes = c.nodes().await?;
            if out.structured() {
                return out.print(&nodes);
            }
            print!("{}", output::nodes(&nodes, out.wide()));
        }
        Cmd::Modules => {
            let modules = c.modules().await?;
            if out.structured() {
                return out.print(&modules);
            }
            print!("{}", output::modules(&modules, out.wide()));
        }
        Cmd::Events {
            follow,
            after,
            limit,
            module,
            node,
            kind,
        } => {
            let filter = admin_api::EventFilter {
                module: module.clone(),
                node: node.clone(),
                kind: kind.clone(),
            };
            // The newest 50 unless told: a screenful, not the whole record.
            let limit = limit.or(after.is_none().then_some(50));
            return events(&c, &filter, *after, limit, *follow, out).await;
        }
        Cmd::Deploy {
            spec,
            detach,
            timeout,
        } => {
            let value = read_spec(spec)?;
            let after = wait::newest_event(&c).await;
            let d = c.deploy(&value).await?;
            if out.structured() {
                return out.print(&d);
            }
            if *detach {
                println!("deployed {} (epoch {})", d.name, d.epoch);
                return Ok(());
            }
            let goal = wait::Goal::Deploy {
                name: d.name.clone(),
                epoch: d.epoch,
            };
            println!("{}", wait::wait(&c, &goal, after, *timeout).await?);
        }
        Cmd::Update {
            spec,
            detach,
            timeout,
        } => {
            let value = read_spec(spec)?;
            let name = spec_name(spec, &value)?;
            let after = wait::newest_event(&c).await;
            let u = c.update(&name, &value).await?;
            if out.structured() {
                return out.print(&u);
            }
            if *detach {
                println!("{name}: rollout to revision {} started", u.revision);
                return Ok(());
            }
            eprintln!("{name}: rolling out revision {}", u.revision);
            let goal = wait::Goal::Rollout {
                name: name.clone(),
                revision: u.revision,
            };
            println!("{}", wait::wait(&c, &goal, after, *timeout).await?);
        }
        Cmd::Rollback {
            module,
            revision,
            detach,
            timeout,
        } => {
            let after = wait::newest_event(&c).await;
            let u = c.rollback(module, *revision).await?;
            if out.structured() {
                return out.print(&u);
            }
            if *detach {
                println!("{module}: rollback to revision {} started", u.revision);
                return Ok(());
            }
            eprintln!("{module}: rolling back to revision {}", u.revision);
            let goal = wait::Goal::Rollout {
                name: module.clone(),
                revision: u.revision,
            };
            println!("{}", wait::wait(&c, &goal, after, *timeout).await?);
        }
        Cmd::Why { module } => why::why(&c, module, out).await?,
        Cmd::Logs(a) => logs::logs(&c, a).await?,
        Cmd::Snapshot {
            what: SnapshotCmd::Save { file },
        } => snapshot::save(&c, file, out).await?,
        Cmd::Plan { what } => plan::plan(&c, &plan::request(what, read_spec)?, out).await?,
        Cmd::History { module } => {
            let h = c.history(module).await?;
            if out.structured() {
                return out.print(&h);
            }
            print!("{}", output::history(&h, out.wide()));
        }
        Cmd::Rollout {
            package,
            max_parallel,
            max_failures,
            detach,
            timeout,
        } => {
            versions::fleet_rollout(
                &c,
                package,
                *max_parallel,
                *max_failures,
                *detach || out.structured(),
                Duration::from_secs(*timeout),
            )
            .await?;
        }
        Cmd::Rollouts { cmd } => match cmd {
            None | Some(RolloutsCmd::List) => {
                let list = c.rollouts().await?;
                if out.structured() {
                    out.print(&list)?;
                } else {
                    print!("{}", output::rollouts(&list, out.wide()));
                }
            }
            Some(RolloutsCmd::Show { id }) => {
                let f = c.rollout(*id).await?;
                if out.structured() {
                    out.print(&f)?;
                } else {
                    versions::print_rollout(&f);
                }
            }
            Some(RolloutsCmd::Pause { id }) => rollout_action(&c, *id, "pause").await?,
            Some(RolloutsCmd::Resume { id }) => rollout_action(&c, *id, "resume").await?,
            Some(RolloutsCmd::Cancel { id }) => rollout_action(&c, *id, "cancel").await?,
        },
        Cmd::Quarantine { cmd } => match cmd {
            None | Some(QuarantineCmd::List) => {
                let q = c.quarantined().await?;
                if out.structured() {
                    return out.print(&q);
                }
                print!("{}", output::quarantined(&q, out.wide()));
            }
            Some(QuarantineCmd::Lift { package }) => {
                let (name, version) = versions::parse_package(package)?;
                let l = c.lift_quarantine(&name, &version).await?;
                if out.structured() {
                    return out.print(&l);
                }
                println!("{name}@{version}: quarantine lifted");
            }
        },
        Cmd::Remove { module } => {
            let r = c.remove(module).await?;
            if out.structured() {
                return out.print(&r);
            }
            if r.state == "stopped" {
                println!(
                    "{module}: stopped; it disappears once its copy on {} is known stopped",
                    r.waiting_for.join(", ")
                );
            } else {
                println!("removed {module}");
            }
        }
        Cmd::Undrain { node } => {
            let r = c.undrain(node).await?;
            if out.structured() {
                return out.print(&r);
            }
            println!("{node}: {}; it takes modules again", r.status);
        }
        Cmd::Reset { module } => {
            let r = c.reset(module).await?;
            if out.structured() {
                return out.print(&r);
            }
            println!(
                "{module}: reset ({}); counters and tried nodes cleared, it is placed again",
                r.state
            );
        }
        Cmd::Module { name, events } => {
            describe::module(&c, name, *events, out, tls.as_ref()).await?;
        }
        Cmd::Node { cmd, id, events } => match (cmd, id) {
            (Some(NodeCmd::Rm { node }), _) => {
                let r = c.remove_node(node).await?;
                if out.structured() {
                    return out.print(&r);
                }
                if r.unplaced.is_empty() {
                    println!("{node}: removed");
                } else {
                    println!(
                        "{node}: removed; placed again elsewhere: {}",
                        r.unplaced.join(", ")
                    );
                }
            }
            (None, Some(id)) => {
                describe::node(&c, id, *events, out, tls.as_ref()).await?;
            }
            (None, None) => bail!(
                "name a node: `supctl node <id>` describes it, `supctl node rm <id>` forgets a down one"
            ),
        },
        Cmd::Drain {
            node,
            detach,
            timeout,
        } => {
            // What the drain will move, asked before it starts.
            let goal = if *detach || out.structured() {
                None
            } else {
                Some(wait::drain_goal(&c, node).await?)
            };
            let after = wait::newest_event(&c).await;
            let r = c.drain(node).await?;
            if out.structured() {
                return out.print(&r);
            }
            let Some(goal) = goal else {
                println!("draining {node}: its modules move away one by one");
                return Ok(());
            };
            println!("{}", wait::wait(&c, &goal, after, *timeout).await?);
        }
    }
    Ok(())
}

/// A spec file (.json or .toml) as JSON.
fn read_spec(spec: &std::path::Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(spec).with_context(|| format!("reading {}", spec.display()))?;
    Ok(match spec.extension().and_then(|e| e.to_str()) {
        Some("toml") => {
            let v: toml::Value =
                toml::from_str(&text).with_context(|| format!("parsing {}", spec.display()))?;
            serde_json::to_value(v)?
        }
        Some("json") | None => {
            serde_json::from_str(&text).with_context(|| format!("parsing {}", spec.display()))?
        }
        Some(other) => bail!(
            "{}: unknown spec format .{other} (use .json or .toml)",
            spec.display()
        ),
    })
}

/// `hh:mm:ss.mmmZ` of a time in ms since the epoch.
pub(crate) fn time_of_day(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03}Z", at_ms % 1000)
}

/// `supctl events`: lists (a table), then with `follow` reads the event
/// stream (a line per event), each event once (the stream resumes after
/// the last one printed, on another supervisor when one goes away).
async fn events(
    c: &AdminClient,
    filter: &admin_api::EventFilter,
    after: Option<u64>,
    limit: Option<usize>,
    follow: bool,
    out: Output,
) -> Result<()> {
    let show = |e: &EventView| -> Result<()> {
        if out.structured() {
            print!("{}", out.render_item(e)?);
        } else {
            println!("{}", output::event_line(e));
        }
        Ok(())
    };
    // The newest event now, before listing: the stream starts after it or
    // after the last event listed, whichever is later, so nothing falls
    // between the list and the stream.
    let newest = if follow && after.is_none() {
        let none = admin_api::EventFilter::default();
        let last = c.events_where(None, Some(1), &none).await?;
        last.last().map_or(0, |e| e.index)
    } else {
        0
    };
    let listed = c.events_where(after, limit, filter).await?;
    let mut position = after.unwrap_or(newest);
    for e in &listed {
        position = position.max(e.index);
    }
    if out.structured() {
        for e in &listed {
            show(e)?;
        }
    } else if !listed.is_empty() {
        print!("{}", output::events(&listed, out.wide()));
    }
    if !follow {
        return Ok(());
    }
    let mut stream = c.follow_events(position, filter.clone());
    let mut reconnects = 0;
    loop {
        let item = stream.next().await;
        let ended: Vec<String> = stream.reconnects.drain(..).collect();
        for why in ended {
            reconnects += 1;
            eprintln!("supctl: event stream: {why} (reconnect {reconnects})");
        }
        match item {
            Ok(admin_api::StreamItem::Event(e)) => show(&e)?,
            Ok(admin_api::StreamItem::Gap(g)) => eprintln!(
                "supctl: {} events after {} were dropped from the cluster's record before they could be read; going on from event {}",
                g.missed, g.after, g.first_kept
            ),
            Err(e) if e.status().is_none() => {
                eprintln!("supctl: event stream: {e} (retrying in 1 s)");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

//! `supctl dev`: a whole local cluster on loopback, for trying the product.
//!
//! Starts depmgr, 3 supervisors and 3 node managers as child processes
//! (binaries next to `supctl`), data under `./.dev-cluster` (or `--dir`),
//! publishes the demo package (the `demo-module` program: serves HTTP and
//! can be told to crash), deploys the demo module, prints where everything
//! listens and how to break things, and runs until Ctrl-C (or SIGTERM),
//! when it stops every process cleanly. A second run reuses the data and
//! the ports recorded in `<dir>/cluster.json`.
//!
//! Everything runs over mutual TLS, as a real deployment does: the first
//! run makes a CA in `<dir>/tls/` and a certificate per program (depmgr,
//! supervisors `1`-`3`, agents `a`-`c`, the operator `ops`), and writes
//! `<dir>/env`, which sets `SUPCTL_ADDR`, `SUPCTL_TLS_*` and `DEPMGR_URL`
//! for `supctl` (`source .dev-cluster/env`).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;

use admin_api::AdminClient;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tls::{Identity, Role, Tls, TlsFiles};

/// Ports of a dev cluster, kept across runs (Raft remembers its peers'
/// addresses, so a second run must use the same ones).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Layout {
    depmgr: u16,
    supervisors: Vec<u16>,
    agents: BTreeMap<String, u16>,
    demo: u16,
}

const AGENTS: [&str; 3] = ["a", "b", "c"];

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The preferred port when free, or any free port.
fn pick(preferred: u16, taken: &mut Vec<u16>) -> Result<u16> {
    let port = if port_free(preferred) && !taken.contains(&preferred) {
        preferred
    } else {
        loop {
            let p = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            if !taken.contains(&p) {
                break p;
            }
        }
    };
    taken.push(port);
    Ok(port)
}

impl Layout {
    fn load_or_create(dir: &Path) -> Result<Layout> {
        let file = dir.join("cluster.json");
        if file.exists() {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let layout: Layout = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a dev cluster layout", file.display()))?;
            for (what, port) in layout.all() {
                if !port_free(port) {
                    bail!(
                        "port {port} for {what} is in use: is another `supctl dev` running on {}?",
                        dir.display()
                    );
                }
            }
            return Ok(layout);
        }
        let mut taken = Vec::new();
        let layout = Layout {
            depmgr: pick(7000, &mut taken)?,
            supervisors: (1..=3)
                .map(|i| pick(7000 + i, &mut taken))
                .collect::<Result<_>>()?,
            agents: AGENTS
                .iter()
                .enumerate()
                .map(|(i, a)| Ok((a.to_string(), pick(7101 + i as u16, &mut taken)?)))
                .collect::<Result<_>>()?,
            demo: pick(8080, &mut taken)?,
        };
        std::fs::write(&file, serde_json::to_string_pretty(&layout)?)
            .with_context(|| format!("writing {}", file.display()))?;
        Ok(layout)
    }

    fn all(&self) -> Vec<(String, u16)> {
        let mut v = vec![
            ("depmgr".to_string(), self.depmgr),
            ("the demo module".to_string(), self.demo),
        ];
        v.extend(
            self.supervisors
                .iter()
                .enumerate()
                .map(|(i, p)| (format!("supervisor {}", i + 1), *p)),
        );
        v.extend(self.agents.iter().map(|(a, p)| (format!("agent {a}"), *p)));
        v
    }

    fn supervisor_addrs(&self) -> Vec<String> {
        self.supervisors
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }
}

struct Running {
    name: String,
    child: Child,
}

/// The child processes; SIGTERM on drop (agents first), SIGKILL after 10 s.
struct Children(Vec<Running>);

impl Children {
    fn spawn(&mut self, name: &str, program: &Path, args: &[String], logs: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(format!("{name}.log")))?;
        // Their own process group: Ctrl-C reaches supctl only, which then
        // stops them in order (agents first).
        let child = Command::new(program)
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.0.push(Running {
            name: name.to_string(),
            child,
        });
        Ok(())
    }

    fn pid(&self, name: &str) -> Option<u32> {
        self.0.iter().find(|r| r.name == name).map(|r| r.child.id())
    }

    /// Reports children that exited since the last call.
    fn reap(&mut self) {
        for r in &mut self.0 {
            if let Ok(Some(status)) = r.child.try_wait() {
                println!(
                    "[dev] {} (pid {}) exited: {status}; the cluster reacts; `supctl events --follow` shows how",
                    r.name,
                    r.child.id()
                );
            }
        }
        self.0
            .retain_mut(|r| !matches!(r.child.try_wait(), Ok(Some(_))));
    }

    fn stop_all(&mut self) {
        // Agents first (they stop their modules), then supervisors, depmgr.
        self.0
            .sort_by_key(|r| (!r.name.starts_with("agent"), r.name.starts_with("depmgr")));
        for r in &mut self.0 {
            let pid = nix::unistd::Pid::from_raw(r.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Ok(Some(s)) = r.child.try_wait() {
                    break Some(s);
                }
                if Instant::now() > deadline {
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(25));
            };
            match status {
                Some(s) => println!("[dev] stopped {} ({s})", r.name),
                None => println!("[dev] {} did not stop within 10 s: killed", r.name),
            }
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating supctl")?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found next to supctl: build everything with `cargo build --release --workspace --bins`",
            path.display()
        );
    }
    Ok(path)
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; see the logs");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The dev cluster's CA, and certificates issued on demand (kept across
/// runs; one that no longer loads, e.g. expired, is issued again).
struct DevCa {
    dir: PathBuf,
}

impl DevCa {
    fn open(dir: &Path) -> Result<DevCa> {
        if !tls::ca::ca_cert_path(dir).exists() {
            tls::ca::init(dir)?;
        }
        Ok(DevCa {
            dir: dir.to_path_buf(),
        })
    }

    fn files(&self, role: Role, name: &str) -> Result<TlsFiles> {
        let files = TlsFiles {
            ca: tls::ca::ca_cert_path(&self.dir),
            cert: tls::ca::cert_path(&self.dir, name),
            key: tls::ca::key_path(&self.dir, name),
        };
        if Tls::load(files.clone()).is_err() {
            let id = Identity::new(role, name).map_err(anyhow::Error::msg)?;
            tls::ca::issue(
                &self.dir,
                &id,
                &["127.0.0.1".into(), "localhost".into()],
                365,
            )?;
        }
        Ok(files)
    }

    /// `--tls-ca <ca> --tls-cert <cert> --tls-key <key>` of `role/name`.
    fn flags(&self, role: Role, name: &str) -> Result<Vec<String>> {
        Ok(self.files(role, name)?.to_flags())
    }
}

/// Runs the dev cluster until Ctrl-C.
pub async fn run(dir: &Path) -> Result<()> {
    let (supervisor, agent, depmgr, demo) = (
        sibling("supervisor")?,
        sibling("agent")?,
        sibling("depmgr")?,
        sibling("demo-module")?,
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let layout = Layout::load_or_create(&dir)?;
    let d = |name: &str| dir.join(name).display().to_string();
    let ca = DevCa::open(&dir.join("tls"))?;
    let operator_files = ca.files(Role::Operator, "ops")?;
    let operator = Tls::load(operator_files.clone())?;
    let mut children = Children(Vec::new());

    let depmgr_url = format!("https://127.0.0.1:{}", layout.depmgr);
    let mut args: Vec<String> = vec![
        "--listen".into(),
        format!("127.0.0.1:{}", layout.depmgr),
        "--data-dir".into(),
        d("depmgr"),
    ];
    args.extend(ca.flags(Role::Depmgr, "depmgr")?);
    children.spawn("depmgr", &depmgr, &args, &logs)?;
    let peers = layout
        .supervisors
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    for (i, port) in layout.supervisors.iter().enumerate() {
        let id = i + 1;
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            d(&format!("supervisor-{id}")),
            "--peers".into(),
            peers.clone(),
            "--depmgr".into(),
            depmgr_url.clone(),
        ];
        args.extend(ca.flags(Role::Supervisor, &id.to_string())?);
        children.spawn(&format!("supervisor-{id}"), &supervisor, &args, &logs)?;
    }
    let sups = layout.supervisor_addrs().join(",");
    for (name, port) in &layout.agents {
        let mut args: Vec<String> = vec![
            "--node".into(),
            name.clone(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            d(&format!("agent-{name}")),
            "--supervisors".into(),
            sups.clone(),
            "--label".into(),
            format!("zone={name}"),
        ];
        args.extend(ca.flags(Role::Agent, name)?);
        children.spawn(&format!("agent-{name}"), &agent, &args, &logs)?;
    }

    let env_file = write_env(&dir, &layout, &operator_files)?;
    let admin = AdminClient::with_tls(
        layout.supervisor_addrs(),
        std::env::var("SUPCTL_TOKEN").ok(),
        Some(&operator),
    )
    .with_timeout(Duration::from_secs(5));
    let leader = wait_for("a leader", Duration::from_secs(30), || async {
        admin.cluster().await.ok()?.leader
    })
    .await?;
    wait_for("the three nodes", Duration::from_secs(30), || async {
        let nodes = admin.nodes().await.ok()?;
        (nodes.iter().filter(|n| n.status == "ready").count() == AGENTS.len()).then_some(())
    })
    .await?;

    // The demo package: the demo-module program, probed over HTTP.
    let pkg = dir.join("demo-package");
    std::fs::create_dir_all(&pkg)?;
    let manifest = format!(
        "name = \"demo\"\nversion = \"1.0.0\"\ncommand = \"{}\"\nargs = [\"--port\", \"{port}\"]\n\n[health]\nhttp = \"http://127.0.0.1:{port}/health\"\ninterval_ms = 500\ntimeout_ms = 500\nfailure_threshold = 2\n",
        demo.display(),
        port = layout.demo
    );
    std::fs::write(pkg.join("manifest.toml"), manifest)?;
    let packages = depmgr::client::Client::with_tls(
        &depmgr_url,
        depmgr::client::Timeouts::default(),
        Some(&operator),
    )?;
    match wait_for("depmgr", Duration::from_secs(20), || async {
        Some(packages.push_dir(&pkg).await)
    })
    .await?
    {
        Ok((answer, _)) => println!(
            "[dev] published demo@1.0.0 (sha256 {})",
            &answer.digest[..12]
        ),
        Err(e) => println!(
            "[dev] demo@1.0.0 is already stored with other contents ({e}); using the stored one"
        ),
    }
    let spec = serde_json::json!({
        "name": "demo",
        "package": {"name": "demo", "version": "1.0.0"},
        "restart": {"attempts": 2, "backoff_ms": 200, "min_healthy_ms": 1000},
        "failover": {"max_nodes": 2},
        "fencing": "at-most-one",
    });
    match admin.deploy(&spec).await {
        Ok(d) => println!("[dev] deployed module demo (epoch {})", d.epoch),
        Err(e) if e.status() == Some(reqwest::StatusCode::CONFLICT) => {
            println!("[dev] module demo already deployed (kept from the last run)")
        }
        Err(e) => return Err(e).context("deploying the demo module"),
    }
    let demo_view = wait_for(
        "the demo module to run",
        Duration::from_secs(60),
        || async {
            let m = admin.module("demo").await.ok()?;
            (m.state == "running").then_some(m)
        },
    )
    .await?;
    let node = demo_view.node.clone().unwrap_or_default();
    let module_pid = module_pid(&layout, &node, &operator).await;

    println!();
    println!(
        "supervisor cluster running over mutual TLS; data in {}, logs in {}, CA and certificates in {}",
        dir.display(),
        logs.display(),
        ca.dir.display()
    );
    for (i, p) in layout.supervisors.iter().enumerate() {
        let id = i as u64 + 1;
        let role = if id == leader { "leader" } else { "follower" };
        println!(
            "  supervisor {id}  127.0.0.1:{p}  pid {}  ({role})",
            children.pid(&format!("supervisor-{id}")).unwrap_or(0)
        );
    }
    println!(
        "  depmgr        {depmgr_url}  pid {}",
        children.pid("depmgr").unwrap_or(0)
    );
    for (a, p) in &layout.agents {
        println!(
            "  agent {a}       127.0.0.1:{p}  pid {}",
            children.pid(&format!("agent-{a}")).unwrap_or(0)
        );
    }
    println!(
        "  module demo   running on node {node} (epoch {}), pid {}: curl http://127.0.0.1:{}/",
        demo_view.epoch.unwrap_or(0),
        module_pid.map_or("?".into(), |p| p.to_string()),
        layout.demo
    );
    println!();
    println!("talk to it (sets SUPCTL_ADDR, SUPCTL_TLS_CA/CERT/KEY and DEPMGR_URL):");
    println!("  source {}", env_file.display());
    println!("watch it:");
    println!("  supctl status");
    println!("  supctl events --follow");
    println!("break it (and watch it heal):");
    println!(
        "  curl http://127.0.0.1:{}/crash     the module exits: restored in place within a heartbeat",
        layout.demo
    );
    println!("  kill -9 <module pid>                 the same, from outside");
    println!(
        "  kill -9 <pid of agent {node}>             node {node} goes down after ~5.5 s; demo fails over to another node (new epoch)"
    );
    println!(
        "  kill -9 <pid of the leader>          a new leader within ~1 s; no counter or placement is lost"
    );
    println!("Ctrl-C stops everything cleanly; running `supctl dev` again reuses the data.");
    println!();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => children.reap(),
        }
    }
    println!("\n[dev] stopping the cluster");
    children.stop_all();
    Ok(())
}

/// Writes `<dir>/env`: what `supctl` needs to reach this cluster.
fn write_env(dir: &Path, layout: &Layout, operator: &TlsFiles) -> Result<PathBuf> {
    let path = dir.join("env");
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let text = format!(
        "# supctl dev: source this file to talk to the dev cluster\n\
         export SUPCTL_ADDR={}\n\
         export SUPCTL_TLS_CA={}\n\
         export SUPCTL_TLS_CERT={}\n\
         export SUPCTL_TLS_KEY={}\n\
         export DEPMGR_URL=https://127.0.0.1:{}\n",
        layout.supervisor_addrs().join(","),
        q(&operator.ca),
        q(&operator.cert),
        q(&operator.key),
        layout.depmgr
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

async fn module_pid(layout: &Layout, node: &str, operator: &Arc<Tls>) -> Option<u64> {
    let port = layout.agents.get(node)?;
    let status: serde_json::Value = tls::client::http_builder(Some(operator), &[Role::Agent])
        .build()
        .ok()?
        .get(format!("https://127.0.0.1:{port}/v1/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    status["modules"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == "demo")?["pid"]
        .as_u64()
}

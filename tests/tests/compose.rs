//! The docker-compose cluster, end to end (issue 6, "Compose test").
//!
//! When a Docker engine is reachable: builds the image with
//! `tests/compose/build-images.sh`, starts `docker-compose.yml` under a unique
//! project name (its own subnet and host ports, so it runs beside any other
//! compose cluster), pushes `tests/compose/demo` to depmgr and deploys it with
//! `supctl`, `docker kill`s the leader's container and then the container of
//! the agent running the module, and checks through the admin API that the
//! cluster has a new leader and that the module runs on another node (and,
//! inside that node's container, that the module's heartbeat file names the
//! new node and epoch). The project is always torn down with `down -v`, by a
//! guard whose `Drop` runs even when an assertion fails.
//!
//! The cluster runs as the compose file says, over mutual TLS with an admin
//! token: its `certs` service issues them into a temp dir of the test
//! (`SUPCLUSTER_CERTS`), and every request of the test and of supctl
//! presents the operator certificate and the token from there.
//!
//! Without a reachable engine (or without a compose tool) it prints why and
//! returns.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use testkit::bins::bin_dir;
use testkit::net::free_ports;
use testkit::process::output_within;

/// Building the binaries from nothing takes minutes (RocksDB); `.ci/test`
/// builds them before the tests, so here this is only a safety net.
const BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const COMPOSE_TIMEOUT: Duration = Duration::from_secs(120);
const READY_DEADLINE: Duration = Duration::from_secs(60);
const RUNNING_DEADLINE: Duration = Duration::from_secs(30);
const LEADER_DEADLINE: Duration = Duration::from_secs(20);
const FAILOVER_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

const MODULE: &str = "demo";

#[test]
fn compose_cluster_survives_leader_and_node_loss() {
    let compose = match preflight() {
        Ok(compose) => compose,
        Err(reason) => {
            println!("compose test skipped: {reason}");
            return;
        }
    };
    if let Err(e) = run(compose) {
        panic!("compose test failed: {e:#}");
    }
}

fn log(start: Instant, msg: impl AsRef<str>) {
    println!(
        "[compose {:6.1}s] {}",
        start.elapsed().as_secs_f64(),
        msg.as_ref()
    );
}

fn run(compose: Vec<String>) -> Result<()> {
    let start = Instant::now();
    let root = repo_root();

    // 1. The image.
    let t = Instant::now();
    let image = build_image(&root)?;
    log(
        start,
        format!("image {image} built in {:.1}s", t.elapsed().as_secs_f64()),
    );

    // 2. The cluster, under its own project name, subnet and host ports.
    let net = free_subnet()?;
    let certs = tempfile::tempdir()?;
    let ports = free_ports(4);
    let (depmgr_port, sup_ports) = (ports[0], [ports[1], ports[2], ports[3]]);
    let project = format!(
        "supct{}x{}",
        std::process::id(),
        SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 1_000_000
    );
    let mut cluster = Cluster {
        compose,
        project,
        file: root.join("docker-compose.yml"),
        env: vec![
            ("SUPCLUSTER_IMAGE".into(), image),
            ("SUPCLUSTER_NET".into(), net.clone()),
            ("SUPCLUSTER_BIND".into(), "127.0.0.1".into()),
            ("SUPCLUSTER_DEPMGR_PORT".into(), depmgr_port.to_string()),
            ("SUPCLUSTER_SUP1_PORT".into(), sup_ports[0].to_string()),
            ("SUPCLUSTER_SUP2_PORT".into(), sup_ports[1].to_string()),
            ("SUPCLUSTER_SUP3_PORT".into(), sup_ports[2].to_string()),
            (
                "SUPCLUSTER_CERTS".into(),
                certs.path().display().to_string(),
            ),
        ],
        passed: false,
        torn_down: false,
    };
    log(
        start,
        format!(
            "project {}: subnet {net}.0/24, depmgr on 127.0.0.1:{depmgr_port}, supervisors on 127.0.0.1:{}/{}/{}",
            cluster.project, sup_ports[0], sup_ports[1], sup_ports[2]
        ),
    );
    let t = Instant::now();
    cluster.compose_ok(&["up", "-d", "--no-build"], COMPOSE_TIMEOUT)?;
    log(
        start,
        format!("docker-compose up -d in {:.1}s", t.elapsed().as_secs_f64()),
    );

    let operator = Operator::read(certs.path())?;
    log(
        start,
        format!(
            "certs service issued the CA, certificates and token in {}",
            certs.path().display()
        ),
    );
    let http = Http::new(&operator)?;
    let sup_addr = |id: u64| format!("127.0.0.1:{}", sup_ports[(id - 1) as usize]);
    let all_ids = [1u64, 2, 3];

    // 3. Ready: one leader all three agree on, three nodes ready.
    let t = Instant::now();
    let leader = poll("a leader all supervisors agree on", READY_DEADLINE, || {
        agreed_leader(&http, &all_ids.map(sup_addr))
    })?;
    poll("nodes a, b, c ready", READY_DEADLINE, || {
        let nodes = http.get(&sup_addr(1), "/v1/nodes")?;
        let ready = node_names(&nodes, "ready");
        Ok((ready == ["a", "b", "c"]).then_some(()))
    })?;
    log(
        start,
        format!(
            "cluster ready in {:.1}s: leader {leader}, nodes a, b, c ready",
            t.elapsed().as_secs_f64()
        ),
    );

    // Every container's health check (`supctl probe` over mutual TLS:
    // /ready of the supervisors, /health of the others) passes.
    let t = Instant::now();
    let services = [
        "depmgr",
        "supervisor1",
        "supervisor2",
        "supervisor3",
        "agent-a",
        "agent-b",
        "agent-c",
    ];
    poll("every container healthy", READY_DEADLINE, || {
        for service in services {
            if cluster.health(service)? != "healthy" {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })?;
    log(
        start,
        format!(
            "all {} health checks pass after {:.1}s more",
            services.len(),
            t.elapsed().as_secs_f64()
        ),
    );

    // 4. Publish and deploy with supctl, from the host, through the published ports.
    let supctl = || operator.supctl();
    let out = output_within(
        supctl()
            .arg("package")
            .arg("push")
            .arg(root.join("tests/compose/demo"))
            .arg("--depmgr")
            .arg(format!("https://127.0.0.1:{depmgr_port}")),
        COMPOSE_TIMEOUT,
    )?;
    ensure_success("supctl package push", &out)?;
    log(start, format!("supctl package push: {}", stdout_line(&out)));
    let out = output_within(
        supctl()
            .arg("--addr")
            .arg(sup_addr(1))
            .arg("deploy")
            .arg(root.join("tests/compose/demo.json")),
        COMPOSE_TIMEOUT,
    )?;
    ensure_success("supctl deploy", &out)?;
    log(start, format!("supctl deploy: {}", stdout_line(&out)));
    let t = Instant::now();
    let (node0, epoch0) = poll("demo running", RUNNING_DEADLINE, || {
        running_module(&http, &sup_addr(1))
    })?;
    let beat = poll(
        "demo's heartbeat file in its container",
        RUNNING_DEADLINE,
        || cluster.heartbeat(&node0, epoch0),
    )?;
    log(
        start,
        format!(
            "demo running on node {node0} (epoch {epoch0}) after {:.1}s; in agent-{node0}: {beat}",
            t.elapsed().as_secs_f64()
        ),
    );

    // 5. Kill the leader's container.
    let leader_service = format!("supervisor{leader}");
    let survivors: Vec<String> = all_ids
        .iter()
        .filter(|&&id| id != leader)
        .map(|&id| sup_addr(id))
        .collect();
    cluster.kill(&leader_service)?;
    let t = Instant::now();
    let new_leader = poll("a new leader", LEADER_DEADLINE, || {
        Ok(agreed_leader(&http, &survivors)?.filter(|&l| l != leader))
    })?;
    log(
        start,
        format!(
            "docker kill {leader_service}: leader {leader} -> {new_leader} after {:.1}s",
            t.elapsed().as_secs_f64()
        ),
    );
    // While the agents look for the new leader their lease may run out: the
    // agent then fences the module and the new leader restores it. Wait until
    // that has settled: the module's agent follows the new leader and runs the
    // module, and no restore or failover of it is under way.
    let t = Instant::now();
    let new_leader_addr = format!("{net}.1{new_leader}:700{new_leader}");
    let (node1, epoch1, agent_view) = poll(
        "demo running and settled under the new leader",
        RUNNING_DEADLINE,
        || {
            let Some((node, epoch)) = running_module(&http, &survivors[0])? else {
                return Ok(None);
            };
            if !module_settled(&http, &survivors[0])? {
                return Ok(None);
            }
            let status = agent_status(&http, &net, &node)?;
            let runs = status["modules"].as_array().into_iter().flatten().any(|m| {
                m["name"] == MODULE && m["state"] == "running" && m["epoch"].as_u64() == Some(epoch)
            });
            let follows = status["leader"].as_str() == Some(new_leader_addr.as_str());
            Ok((runs && follows).then_some((node, epoch, status)))
        },
    )?;
    let view = http.get(&survivors[0], &format!("/v1/modules/{MODULE}"))?;
    log(
        start,
        format!(
            "settled after {:.1}s: demo running on node {node1} (epoch {epoch1}, restore_attempts {}); agent-{node1} follows {} with lease_ms_left {}",
            t.elapsed().as_secs_f64(),
            view["restore_attempts"],
            agent_view["leader"],
            agent_view["lease_ms_left"]
        ),
    );

    // 6. Kill the container of the agent running the module.
    let agent_service = format!("agent-{node1}");
    cluster.kill(&agent_service)?;
    let t = Instant::now();
    let (node2, epoch2) = poll("demo running on another node", FAILOVER_DEADLINE, || {
        Ok(running_module(&http, &survivors[0])?.filter(|(node, _)| *node != node1))
    })?;
    let elapsed = t.elapsed();
    ensure!(
        epoch2 > epoch1,
        "the failover kept epoch {epoch2} (was {epoch1})"
    );
    let nodes = http.get(&survivors[1], "/v1/nodes")?;
    ensure!(
        node_names(&nodes, "down").contains(&node1),
        "node {node1} is not down: {nodes}"
    );
    log(
        start,
        format!(
            "docker kill {agent_service}: demo {node1} (epoch {epoch1}) -> {node2} (epoch {epoch2}) after {:.1}s; node {node1} down",
            elapsed.as_secs_f64()
        ),
    );
    let beat = poll(
        "demo's heartbeat file on the new node",
        RUNNING_DEADLINE,
        || cluster.heartbeat(&node2, epoch2),
    )?;
    log(start, format!("in agent-{node2}: {beat}"));

    // The cluster still has the new leader (no election came in between).
    let leader_now = poll("the leader", LEADER_DEADLINE, || {
        agreed_leader(&http, &survivors)
    })?;
    ensure!(
        leader_now != leader,
        "the killed supervisor {leader} leads again"
    );
    let out = output_within(
        supctl()
            .arg("--addr")
            .arg(survivors.join(","))
            .arg("events"),
        COMPOSE_TIMEOUT,
    )?;
    ensure_success("supctl events", &out)?;
    println!("{}", String::from_utf8_lossy(&out.stdout).trim_end());
    log(
        start,
        format!("leader before {leader}, after {leader_now}; node before {node1}, after {node2}"),
    );

    cluster.passed = true;
    let t = Instant::now();
    cluster.teardown()?;
    log(
        start,
        format!(
            "docker-compose down -v in {:.1}s; total {:.1}s",
            t.elapsed().as_secs_f64(),
            start.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------- the cluster

/// One compose project; `Drop` tears it down (`down -v`) unless that was done,
/// printing the containers' last log lines first when the test did not pass.
struct Cluster {
    compose: Vec<String>,
    project: String,
    file: PathBuf,
    env: Vec<(String, String)>,
    passed: bool,
    torn_down: bool,
}

impl Cluster {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.compose[0]);
        cmd.args(&self.compose[1..])
            .arg("--file")
            .arg(&self.file)
            .arg("--project-name")
            .arg(&self.project)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn compose_ok(&self, args: &[&str], timeout: Duration) -> Result<Output> {
        let out = output_within(&mut self.command(args), timeout)?;
        ensure_success(
            &format!("{} {}", self.compose.join(" "), args.join(" ")),
            &out,
        )?;
        Ok(out)
    }

    fn container(&self, service: &str) -> Result<String> {
        let out = self.compose_ok(&["ps", "-q", service], COMPOSE_TIMEOUT)?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        ensure!(!id.is_empty(), "no container for service {service}");
        Ok(id)
    }

    /// The health status Docker reports for `service`'s container
    /// (`starting`, `healthy`, `unhealthy`).
    fn health(&self, service: &str) -> Result<String> {
        let id = self.container(service)?;
        let out = output_within(
            Command::new("docker").args(["inspect", "--format", "{{.State.Health.Status}}", &id]),
            COMPOSE_TIMEOUT,
        )?;
        ensure_success(&format!("docker inspect {service}"), &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn kill(&self, service: &str) -> Result<()> {
        let id = self.container(service)?;
        let out = output_within(Command::new("docker").args(["kill", &id]), COMPOSE_TIMEOUT)?;
        ensure_success(&format!("docker kill {service}"), &out)
    }

    /// The demo module's heartbeat line in `agent-<node>`'s container, once it
    /// names that node and epoch.
    fn heartbeat(&self, node: &str, epoch: u64) -> Result<Option<String>> {
        let id = self.container(&format!("agent-{node}"))?;
        let out = output_within(
            Command::new("docker").args(["exec", &id, "cat", &format!("/tmp/{MODULE}.heartbeat")]),
            COMPOSE_TIMEOUT,
        )?;
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let wanted = format!("node={node} epoch={epoch} ");
        Ok((out.status.success() && line.contains(&wanted)).then_some(line))
    }

    fn teardown(&mut self) -> Result<()> {
        self.torn_down = true;
        self.compose_ok(
            &["down", "--volumes", "--remove-orphans", "--timeout", "3"],
            COMPOSE_TIMEOUT,
        )?;
        // Nothing of the project is left: no container, no volume, no network.
        let label = format!("label=com.docker.compose.project={}", self.project);
        for what in [
            vec!["ps", "-a", "-q", "--filter", &label],
            vec!["volume", "ls", "-q", "--filter", &label],
            vec!["network", "ls", "-q", "--filter", &label],
        ] {
            let out = output_within(Command::new("docker").args(&what), COMPOSE_TIMEOUT)?;
            ensure_success("docker ls", &out)?;
            let left = String::from_utf8_lossy(&out.stdout).trim().to_string();
            ensure!(
                left.is_empty(),
                "left after down -v: docker {what:?}: {left}"
            );
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        if !self.passed {
            println!("--- last log lines of project {} ---", self.project);
            match output_within(
                &mut self.command(&["logs", "--no-color", "--tail", "30"]),
                COMPOSE_TIMEOUT,
            ) {
                Ok(out) => println!("{}", String::from_utf8_lossy(&out.stdout)),
                Err(e) => println!("(no logs: {e:#})"),
            }
        }
        match self.teardown() {
            Ok(()) => println!("project {} torn down (down -v)", self.project),
            Err(e) => println!("TEARDOWN OF PROJECT {} FAILED: {e:#}", self.project),
        }
    }
}

// ------------------------------------------------------------------- the API

/// The operator's credentials the `certs` service issued.
struct Operator {
    dir: PathBuf,
    tls: std::sync::Arc<tls::Tls>,
    token: String,
}

impl Operator {
    fn read(dir: &Path) -> Result<Operator> {
        let files = tls::TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("ops.pem"),
            key: dir.join("ops.key"),
        };
        let tls = tls::Tls::load(files).context("the operator certificate of the certs service")?;
        let token = std::fs::read_to_string(dir.join("token"))
            .context("the admin token of the certs service")?
            .trim()
            .to_string();
        ensure!(token.len() >= 32, "the admin token is too short: {token:?}");
        Ok(Operator {
            dir: dir.to_path_buf(),
            tls,
            token,
        })
    }

    /// `supctl` with the operator's certificate and the token.
    fn supctl(&self) -> Command {
        let mut cmd = Command::new(bin_dir().join("supctl"));
        cmd.env("SUPCTL_TLS_CA", self.dir.join("ca.pem"))
            .env("SUPCTL_TLS_CERT", self.dir.join("ops.pem"))
            .env("SUPCTL_TLS_KEY", self.dir.join("ops.key"))
            .env("SUPCTL_TOKEN", &self.token);
        cmd
    }
}

struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    token: String,
}

impl Http {
    fn new(operator: &Operator) -> Result<Self> {
        Ok(Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: tls::client::http_builder(
                Some(&operator.tls),
                &[tls::Role::Supervisor, tls::Role::Agent],
            )
            .timeout(Duration::from_secs(2))
            .build()?,
            token: operator.token.clone(),
        })
    }

    fn get(&self, addr: &str, path: &str) -> Result<Value> {
        let url = format!("https://{addr}{path}");
        self.rt.block_on(async {
            let resp = self
                .client
                .get(&url)
                .bearer_auth(&self.token)
                .send()
                .await?;
            let status = resp.status();
            let body = resp.text().await?;
            ensure!(status.is_success(), "GET {url}: {status}: {body}");
            serde_json::from_str(&body).with_context(|| format!("GET {url}: {body}"))
        })
    }
}

/// `GET /v1/status` of `agent-<node>`, from the host through the bridge
/// network (the agents publish no host port), with the operator's
/// certificate.
fn agent_status(http: &Http, net: &str, node: &str) -> Result<Value> {
    let host = match node {
        "a" => 21,
        "b" => 22,
        "c" => 23,
        other => bail!("no agent service for node {other}"),
    };
    http.get(&format!("{net}.{host}:7100"), "/v1/status")
}

/// The leader every one of `addrs` names, once they all name the same one.
fn agreed_leader(http: &Http, addrs: &[String]) -> Result<Option<u64>> {
    let mut leader = None;
    for addr in addrs {
        let cluster = http.get(addr, "/v1/cluster")?;
        let Some(l) = cluster["leader"].as_u64() else {
            return Ok(None);
        };
        if leader.is_some_and(|prev| prev != l) {
            return Ok(None);
        }
        leader = Some(l);
    }
    Ok(leader)
}

/// `(node, epoch)` of the demo module while it is `running`.
fn running_module(http: &Http, addr: &str) -> Result<Option<(String, u64)>> {
    let m = http.get(addr, &format!("/v1/modules/{MODULE}"))?;
    if m["state"] != "running" {
        return Ok(None);
    }
    let node = m["node"]
        .as_str()
        .ok_or_else(|| anyhow!("running without a node: {m}"))?;
    let epoch = m["epoch"]
        .as_u64()
        .ok_or_else(|| anyhow!("no epoch: {m}"))?;
    Ok(Some((node.to_string(), epoch)))
}

/// Whether the last event of the demo module leaves nothing under way (no
/// failure detected, restore ordered or failover started without its outcome).
fn module_settled(http: &Http, addr: &str) -> Result<bool> {
    let events = http.get(addr, "/v1/events")?;
    let last = events
        .as_array()
        .into_iter()
        .flatten()
        .rfind(|e| e["module"] == MODULE)
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string());
    Ok(matches!(
        last.as_deref(),
        Some("installed" | "restored" | "failover_completed")
    ))
}

/// Names of the nodes in `status`, sorted.
fn node_names(nodes: &Value, status: &str) -> Vec<String> {
    let mut names: Vec<String> = nodes
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["status"] == status)
        .filter_map(|n| n["id"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Calls `f` every `POLL` until it yields a value or `deadline` passes; the
/// error names the condition and the last observation.
fn poll<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let end = Instant::now() + deadline;
    loop {
        let last = match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= end {
            bail!("{what}: not within {deadline:?}; last: {last}");
        }
        thread::sleep(POLL);
    }
}

// ------------------------------------------------------ engine, image, host

/// The compose command, when an engine is reachable; otherwise why not.
fn preflight() -> Result<Vec<String>, String> {
    let out = output_within(
        Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]),
        Duration::from_secs(20),
    )
    .map_err(|e| format!("no docker CLI ({e:#})"))?;
    if !out.status.success() {
        return Err(format!(
            "no Docker engine reachable: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let engine = String::from_utf8_lossy(&out.stdout).trim().to_string();
    for compose in [vec!["docker", "compose"], vec!["docker-compose"]] {
        let mut cmd = Command::new(compose[0]);
        cmd.args(&compose[1..]).arg("version");
        match output_within(&mut cmd, Duration::from_secs(20)) {
            Ok(out) if out.status.success() => {
                println!(
                    "Docker engine {engine}; compose: {} ({})",
                    compose.join(" "),
                    stdout_line(&out)
                );
                return Ok(compose.into_iter().map(str::to_string).collect());
            }
            _ => {}
        }
    }
    Err(format!(
        "Docker engine {engine} is reachable but neither `docker compose` nor `docker-compose` runs"
    ))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Runs the build script (which builds the release binaries into this test's
/// target dir and imports the image); returns the image name it prints.
fn build_image(root: &Path) -> Result<String> {
    let target = bin_dir()
        .parent()
        .expect("release dir has a parent")
        .to_path_buf();
    let out = output_within(
        Command::new(root.join("tests/compose/build-images.sh")).env("CARGO_TARGET_DIR", target),
        BUILD_TIMEOUT,
    )?;
    ensure_success("tests/compose/build-images.sh", &out)?;
    let image = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    ensure!(!image.is_empty(), "build-images.sh printed no image name");
    Ok(image)
}

/// `a.b.c` with `a.b.c.0/24` overlapping no Docker network's subnet.
fn free_subnet() -> Result<String> {
    let out = output_within(
        Command::new("docker").args(["network", "ls", "-q"]),
        COMPOSE_TIMEOUT,
    )?;
    ensure_success("docker network ls", &out)?;
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut used = Vec::new();
    if !ids.is_empty() {
        let out = output_within(
            Command::new("docker")
                .args([
                    "network",
                    "inspect",
                    "--format",
                    "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
                ])
                .args(&ids),
            COMPOSE_TIMEOUT,
        )?;
        // A network removed meanwhile makes inspect fail for it; the rest is printed.
        used.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(parse_cidr),
        );
    }
    let seed = std::process::id() as u64
        + SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos() as u64;
    for i in 0..256u64 {
        let third = ((seed + i) % 240 + 8) as u32;
        let lo = u32::from_be_bytes([10, 213, third as u8, 0]);
        let hi = lo + 255;
        if used.iter().all(|&(a, b)| b < lo || a > hi) {
            return Ok(format!("10.213.{third}"));
        }
    }
    bail!("no free /24 in 10.213.0.0/16 among Docker's networks")
}

/// `(first, last)` address of an IPv4 CIDR.
fn parse_cidr(s: &str) -> Option<(u32, u32)> {
    let (ip, len) = s.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let first = u32::from(ip) & mask;
    Some((first, first | !mask))
}

// ---------------------------------------------------------- command output

fn ensure_success(what: &str, out: &Output) -> Result<()> {
    ensure!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn stdout_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

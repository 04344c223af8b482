//! The web dashboard (`/ui/`) in a real headless Chromium, driven over
//! WebDriver (Debian's `chromium` and `chromium-driver`, installed by
//! `.ci/setup`), against a real 3-supervisor cluster with TLS and an admin
//! token: the page asks for the token, shows the replicas and the leader,
//! shows a module's crash and its restore within 2 s without a reload
//! (the live event stream), and its drain button moves the module. The
//! screenshots go to `<target>/tmp/dashboard/` (docs/dashboard.md shows
//! them).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_tests::{Options, TestCluster, spec};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use testkit::eventually;

const TOKEN: &str = "dashboard-test-token";
const T: Duration = Duration::from_secs(30);

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("chromedriver: {e} (install chromium and chromium-driver: .ci/setup does)")
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver) -> Client {
    let mut args = vec![
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1100",
        // The cluster's certificates come from its own test CA.
        "--ignore-certificate-errors",
    ];
    if std::env::var_os("DASHBOARD_TEST_HEADFUL").is_some() {
        args.remove(0);
    }
    let mut options = json!({ "args": args });
    if Path::new("/usr/bin/chromium").exists() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    let caps = json!({
        "browserName": "chrome",
        "acceptInsecureCerts": true,
        "goog:chromeOptions": options,
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with Chromium")
}

/// Evaluates `js` (a function body returning JSON) in the page.
async fn page(c: &Client, js: &str) -> Value {
    c.execute(js, vec![]).await.expect("script")
}

/// Waits until `js` returns something other than null/false, and returns it.
async fn until(c: &Client, what: &str, timeout: Duration, js: &str) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = page(c, js).await;
        if !(v.is_null() || v == Value::Bool(false)) {
            return v;
        }
        if Instant::now() >= deadline {
            let shot = screenshot(c, &format!("timeout-{}", what.replace(' ', "-"))).await;
            panic!(
                "{what}: not within {timeout:?} (screenshot {})",
                shot.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let path = shots_dir().join(format!("{name}.png"));
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(&path, png).expect("write screenshot");
    path
}

async fn module_pid(c: &TestCluster, node: &str, module: &str) -> u32 {
    eventually("the module's pid", T, || async {
        let s = c.agent_status(node).await?;
        let m = s["modules"]
            .as_array()?
            .iter()
            .find(|m| m["name"] == module && m["state"] == "running")?
            .clone();
        m["pid"].as_u64().map(|p| p as u32)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_live_and_drains_a_node() {
    let c = TestCluster::start(Options {
        supervisor_flags: vec!["--admin-token".into(), TOKEN.into()],
        ..Options::default()
    })
    .await;
    c.push_test_package("web").await;
    c.admin()
        .deploy(&spec("web", None, 3, 2))
        .await
        .expect("deploy");
    let web = c
        .wait_module("web", "web running", T, |m| m.state == "running")
        .await;
    let home = web.node.clone().expect("placed");

    let driver = Driver::start();
    let b = browser(&driver).await;
    let url = format!("https://{}/ui/", c.supervisors.addrs[0]);
    b.goto(&url).await.expect("open the dashboard");

    // The page asks for the token, and keeps it for the tab.
    let input = b
        .wait()
        .at_most(T)
        .for_element(Locator::Css("#token-input"))
        .await
        .expect("the token prompt");
    until(
        &b,
        "the token prompt shown",
        T,
        "return document.querySelector('#token-dialog').open",
    )
    .await;
    input.send_keys(TOKEN).await.expect("type the token");
    b.find(Locator::Css("#token-save"))
        .await
        .expect("the save button")
        .click()
        .await
        .expect("save");

    // Three replicas, one of them the leader, all ready.
    let replicas = until(
        &b,
        "three ready replicas and a leader",
        T,
        r#"const r = [...document.querySelectorAll('#replicas [data-replica]')];
           const ready = r.filter(e => e.dataset.ready === 'true').length;
           const leaders = r.filter(e => e.dataset.leader === 'true').map(e => e.dataset.replica);
           return r.length === 3 && ready === 3 && leaders.length === 1 ? leaders : null;"#,
    )
    .await;
    let leader = c
        .cluster_view(0)
        .await
        .and_then(|v| v.leader)
        .expect("a leader");
    assert_eq!(replicas, json!([leader.to_string()]));
    until(
        &b,
        "web running in the module table",
        T,
        &format!(
            "const r = document.querySelector('#modules tr[data-module=\"web\"]'); \
             return r && r.dataset.state === 'running' && r.querySelector('td.node').textContent === '{home}';"
        ),
    )
    .await;
    until(
        &b,
        "the live stream",
        T,
        "return document.querySelector('#live').textContent === 'live'",
    )
    .await;
    let load_id = page(&b, "return window.dashboardLoadId").await;
    screenshot(&b, "overview").await;

    // A crash through the agent: the page shows the failure and the
    // restore order within 2 s, without a reload.
    let pid = module_pid(&c, &home, "web").await;
    let seen_before = page(
        &b,
        "return Math.max(0, ...[...document.querySelectorAll('#events li')].map(li => Number(li.dataset.index)))",
    )
    .await
    .as_u64()
    .expect("an index");
    let crashed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the module");
    let shown = |kind: &str| {
        format!(
            "return [...document.querySelectorAll('#events li[data-kind=\"{kind}\"][data-module=\"web\"]')]
               .some(li => Number(li.dataset.index) > {seen_before});"
        )
    };
    until(
        &b,
        "the failure",
        Duration::from_secs(2),
        &shown("failure_detected"),
    )
    .await;
    until(
        &b,
        "the restore order",
        Duration::from_secs(2),
        &shown("restore_ordered"),
    )
    .await;
    let to_restore = crashed.elapsed();
    assert!(
        to_restore <= Duration::from_secs(2),
        "failure and restore shown {to_restore:?} after the crash"
    );
    until(&b, "the module restored", T, &shown("restored")).await;
    until(
        &b,
        "web running again in the table",
        T,
        &format!(
            "const r = document.querySelector('#modules tr[data-module=\"web\"]'); \
             return r && r.dataset.state === 'running' && r.querySelector('td.node').textContent === '{home}';"
        ),
    )
    .await;
    assert_eq!(
        page(&b, "return window.dashboardLoadId").await,
        load_id,
        "the page was not reloaded"
    );

    // The module's detail: facts, and the crash and restore on its
    // timeline.
    b.find(Locator::Css("#modules tr[data-module=\"web\"]"))
        .await
        .expect("web's row")
        .click()
        .await
        .expect("open web");
    until(
        &b,
        "the timeline marks",
        T,
        "return document.querySelectorAll('#timeline circle[data-kind=\"failure_detected\"]').length >= 1 \
         && document.querySelectorAll('#timeline circle[data-kind=\"restored\"]').length >= 1",
    )
    .await;
    screenshot(&b, "module").await;

    // Drain from the page (two clicks: the button asks to confirm): the
    // module moves off its node.
    let drain = format!("#nodes button[data-drain=\"{home}\"]");
    for _ in 0..2 {
        b.find(Locator::Css(&drain))
            .await
            .expect("the drain button")
            .click()
            .await
            .expect("click drain");
    }
    until(
        &b,
        "the node draining",
        T,
        &format!(
            "const r = document.querySelector('#nodes tr[data-node=\"{home}\"]'); return r && r.dataset.status === 'draining';"
        ),
    )
    .await;
    let moved_to = until(
        &b,
        "web moved off the drained node",
        T,
        &format!(
            "const r = document.querySelector('#modules tr[data-module=\"web\"]'); \
             const n = r && r.querySelector('td.node').textContent; \
             return r && r.dataset.state === 'running' && n !== '{home}' && n !== '—' ? n : null;"
        ),
    )
    .await;
    let web = c.admin().module("web").await.expect("web");
    assert_eq!(
        Some(moved_to.as_str().unwrap_or_default()),
        web.node.as_deref()
    );
    until(
        &b,
        "the drain in the event feed",
        T,
        "return !!document.querySelector('#events li[data-kind=\"drain_moved\"][data-module=\"web\"]')",
    )
    .await;
    screenshot(&b, "drained").await;
    assert_eq!(page(&b, "return window.dashboardLoadId").await, load_id);
    b.close().await.expect("close the browser");
}

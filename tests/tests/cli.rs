//! supctl as an operator sees it, against a real cluster: `deploy` waits
//! until the module settled, under a terminal (a pseudo-terminal made
//! here) with a spinner and a line per step, and without one with plain
//! lines; a module whose command does not exist fails the deploy (exit 1)
//! naming the reason; `drain` waits until the node's modules moved; `-o
//! yaml`, dated tables, and the hints of errors.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cluster_tests::{Options, TestCluster};
use testkit::spec::ModuleSpec;

/// What a program printed on a terminal, and how it exited.
struct TtyRun {
    success: bool,
    /// stdout and stderr as the terminal got them (escape sequences and
    /// all; `\n` arrives as `\r\n`).
    screen: String,
}

/// Runs `cmd` with stdout and stderr on a new pseudo-terminal (120
/// columns), reading everything it prints until it exits.
fn run_on_tty(mut cmd: Command) -> TtyRun {
    let size = nix::pty::Winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(&size, None::<&nix::sys::termios::Termios>).expect("openpty");
    let slave: OwnedFd = pty.slave;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(slave.try_clone().expect("dup the terminal")))
        .stderr(Stdio::from(slave))
        .env("TERM", "xterm-256color");
    let mut child = cmd.spawn().expect("spawn on the terminal");
    // The terminal's last descriptor in this process goes with `cmd`: the
    // reader sees the end once the child has exited.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut screen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every descriptor of the terminal's other side closed.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            screen.extend_from_slice(&buf[..n]);
        }
        screen
    });
    let status = child.wait().expect("wait for supctl");
    let screen = reader.join().expect("the reader");
    TtyRun {
        success: status.success(),
        screen: String::from_utf8_lossy(&screen).into_owned(),
    }
}

/// The lines a terminal would show at the end, roughly: escape sequences
/// dropped, and of each line what the last carriage return left.
fn visible_lines(screen: &str) -> Vec<String> {
    let mut plain = String::new();
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, ended by a letter.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
        .split('\n')
        .filter_map(|line| {
            line.split('\r')
                .rfind(|seg| !seg.trim().is_empty())
                .map(|seg| seg.trim().to_string())
        })
        .collect()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes a spec file `<name>.json` into the cluster's dir.
fn spec_file(c: &TestCluster, name: &str, spec: serde_json::Value) -> PathBuf {
    let path = c.dir.path().join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).expect("spec file");
    path
}

/// A package `name@1.0.0` whose command is an absolute path that does not
/// exist (accepted by depmgr: an absolute command is the node's own).
fn missing_command_package(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).expect("package dir");
    std::fs::write(
        dir.join("manifest.toml"),
        format!("name = \"{name}\"\nversion = \"1.0.0\"\ncommand = \"/nonexistent/{name}-bin\"\n"),
    )
    .expect("manifest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_waits_with_progress_on_a_terminal_and_plain_lines_elsewhere() {
    let c = TestCluster::start(Options {
        supervisors: 1,
        agents: vec!["a".into(), "b".into()],
        ..Options::default()
    })
    .await;
    c.push_test_package("web").await;

    // On a terminal: a spinner (escape sequences redraw its line), a line
    // per step done, and the settled state.
    let spec = spec_file(
        &c,
        "web",
        ModuleSpec::new("web")
            .restart(2, 100, 500)
            .node(Some("b"))
            .json(),
    );
    let mut cmd = c.supctl();
    cmd.arg("deploy").arg(&spec).args(["--timeout", "60s"]);
    let run = tokio::task::spawn_blocking(move || run_on_tty(cmd))
        .await
        .expect("tty run");
    let screen = &run.screen;
    assert!(run.success, "supctl deploy on a terminal failed:\n{screen}");
    assert!(screen.contains('\u{1b}'), "no spinner drawn:\n{screen:?}");
    for step in ["✓ placed on b (epoch ", "installing", "running on b"] {
        assert!(screen.contains(step), "{step:?} not shown:\n{screen}");
    }
    let lines = visible_lines(screen);
    let last = lines.last().cloned().unwrap_or_default();
    assert!(
        last.starts_with("deployed web (epoch ") && last.ends_with("): running on b (web@1.0.0)"),
        "the last line is not the settled state: {last:?}\n{screen}"
    );
    let m = c.admin().module("web").await.expect("web");
    assert_eq!(
        (m.state.as_str(), m.node.as_deref()),
        ("running", Some("b"))
    );

    // Not a terminal: the steps as plain lines on stderr, the result alone
    // on stdout.
    let spec = spec_file(
        &c,
        "api",
        ModuleSpec::new("api")
            .package("web", "1.0.0")
            .restart(2, 100, 500)
            .node(Some("a"))
            .json(),
    );
    let out = c
        .supctl()
        .arg("deploy")
        .arg(&spec)
        .output()
        .expect("supctl deploy");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let epoch = c
        .admin()
        .module("api")
        .await
        .expect("api")
        .epoch
        .expect("placed");
    assert!(
        stdout.starts_with("deployed api (epoch ")
            && stdout.ends_with("running on a (web@1.0.0)\n")
            && stdout.lines().count() == 1,
        "{stdout:?}"
    );
    assert!(
        stderr.contains(&format!("  api: placed on a (epoch {epoch})\n")),
        "{stderr}"
    );
    assert!(stderr.contains("  api: running on a\n"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\r') && !stdout.contains('\u{1b}'),
        "escape sequences off a terminal: {stderr:?}"
    );

    // --detach: the old answer, at once.
    let spec = spec_file(
        &c,
        "later",
        ModuleSpec::new("later")
            .package("web", "1.0.0")
            .node(Some("a"))
            .json(),
    );
    let out = c
        .supctl()
        .arg("deploy")
        .arg(&spec)
        .arg("--detach")
        .output()
        .expect("supctl deploy --detach");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.starts_with("deployed later (epoch ") && stdout.trim_end().ends_with(')'),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "--detach waits for nothing: {stderr}");

    // Tables with dates, -o wide and -o yaml.
    let out = c.supctl().args(["modules"]).output().expect("modules");
    let (stdout, _) = text(&out);
    let header = stdout.lines().next().unwrap_or_default();
    assert!(header.starts_with("MODULE  "), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("web ")), "{stdout}");
    let out = c
        .supctl()
        .args(["-o", "wide", "modules"])
        .output()
        .expect("wide");
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains("FENCING") && stdout.contains("at-most-one"),
        "{stdout}"
    );
    let out = c
        .supctl()
        .args(["-o", "yaml", "module", "web"])
        .output()
        .expect("yaml");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("name: web\n") && stdout.contains("state: running\n"),
        "{stdout}"
    );
    let out = c
        .supctl()
        .args(["events", "--module", "web"])
        .output()
        .expect("events");
    let (stdout, _) = text(&out);
    let year = stdout
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    assert!(
        year.len() == 10 && year.as_bytes()[4] == b'-' && year.as_bytes()[7] == b'-',
        "no date in the events table:\n{stdout}"
    );

    // Drain b: web moves to a; supctl waits and says where.
    let out = c
        .supctl()
        .args(["drain", "b", "--timeout", "60s"])
        .output()
        .expect("supctl drain");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout, "drained b: moved web to a\n", "{stderr}");
    let m = c.admin().module("web").await.expect("web");
    assert_eq!(
        (m.state.as_str(), m.node.as_deref()),
        ("running", Some("a"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_whose_command_does_not_exist_fails_naming_why() {
    let c = TestCluster::start(Options {
        supervisors: 1,
        agents: vec!["a".into()],
        ..Options::default()
    })
    .await;
    let pkg = c.dir.path().join("pkg-ghost");
    missing_command_package(&pkg, "ghost");
    // Pushed with supctl: the streamed push prints what depmgr stored.
    let out = c
        .supctl()
        .args(["package", "push"])
        .arg(&pkg)
        .args(["--depmgr", &c.depmgr_url])
        .output()
        .expect("supctl package push");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("ghost@1.0.0 stored: sha256 "),
        "{stdout}"
    );

    let spec = spec_file(
        &c,
        "ghost",
        ModuleSpec::new("ghost")
            .restart(1, 100, 500)
            .max_nodes(1)
            .json(),
    );
    let out = c
        .supctl()
        .arg("deploy")
        .arg(&spec)
        .args(["--timeout", "60s"])
        .output()
        .expect("supctl deploy");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "no settled state to print: {stdout}");
    assert!(stderr.contains("supctl: ghost failed: "), "{stderr}");
    assert!(
        stderr.contains("command /nonexistent/ghost-bin does not exist"),
        "the reason is not named:\n{stderr}"
    );
    // The steps it went through were shown.
    assert!(stderr.contains("  ghost: placed on a"), "{stderr}");
    let m = c.admin().module("ghost").await.expect("ghost");
    assert_eq!(m.state, "failed");

    // A package depmgr does not have: the hint says to push it.
    let spec = spec_file(&c, "nowhere", ModuleSpec::new("nowhere").json());
    let out = c
        .supctl()
        .arg("deploy")
        .arg(&spec)
        .output()
        .expect("deploy");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("supctl package push"), "{stderr}");

    // Nothing listening: the addresses tried and the variable to set.
    let nobody = testkit::free_addr();
    let out = Command::new(c.bins.join("supctl"))
        .args(["--addr", &format!("http://{nobody}"), "modules"])
        .env_remove("SUPCTL_ADDR")
        .output()
        .expect("supctl");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("no supervisor reachable at http://{nobody}"))
            && stderr.contains("SUPCTL_ADDR"),
        "{stderr}"
    );
}

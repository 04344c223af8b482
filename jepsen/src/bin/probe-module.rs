//! `probe-module`: the module the partition tests supervise.
//!
//! While it runs it appends `alive <module> <node> <epoch> <pid> <ns>` to the
//! ledger file `$PROBE_LEDGER` every 50 ms (`ns` on `CLOCK_MONOTONIC`, the
//! clock every network namespace shares), and it stops writing the moment it
//! is stopped (it has no signal handlers). If `$PROBE_CRASH_DIR/<module>@<node>`
//! exists when it starts, it appends `crash <module> <node> <epoch> <ns>` and
//! exits with status 1: a crash-looping module on that node.

use std::io::Write;
use std::time::Duration;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("probe-module: {name} is not set");
        std::process::exit(2)
    })
}

fn main() {
    let module = env("MODULE_NAME");
    let node = env("MODULE_NODE");
    let epoch = env("MODULE_EPOCH");
    let ledger = env("PROBE_LEDGER");
    let crash_dir = env("PROBE_CRASH_DIR");
    let mut file = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ledger)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("probe-module: opening the ledger {ledger}: {e}");
            std::process::exit(2)
        }
    };
    let now = jepsen::history::now_ns;
    if std::path::Path::new(&crash_dir)
        .join(format!("{module}@{node}"))
        .exists()
    {
        let _ = file.write_all(format!("crash {module} {node} {epoch} {}\n", now()).as_bytes());
        eprintln!("probe-module: told to crash on {node}");
        std::process::exit(1);
    }
    let pid = std::process::id();
    loop {
        // One write per line: O_APPEND keeps lines of concurrent probes whole.
        let line = format!("alive {module} {node} {epoch} {pid} {}\n", now());
        if let Err(e) = file.write_all(line.as_bytes()) {
            eprintln!("probe-module: writing the ledger: {e}");
            std::process::exit(2);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

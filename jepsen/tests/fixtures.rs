//! Golden histories: every `tests/fixtures/<name>.jsonl` (a recorded history,
//! one record per line, as the harness writes `history.jsonl`) goes through
//! the checkers, and the verdict must equal the one in
//! `<name>.expected.json`.
//!
//! The expected file also says, in words written by a person, what the
//! history shows (`about`) and which checkers it is about and whether their
//! guarantees hold there (`checkers`, `holds`). The verdict must agree with
//! that claim, so regenerating the verdicts (`UPDATE_FIXTURES=1 cargo test
//! --release -p jepsen --test fixtures`, which rewrites only `verdict`)
//! cannot quietly turn a violation into a pass. Review every rewritten
//! verdict before committing it. See `tests/fixtures/README.md`.

use std::path::{Path, PathBuf};

use jepsen::checker::{
    AT_MOST_ONE, Bounds, CONVERGENCE, COVERAGE, LINEARIZABLE, LOST_OR_RESURRECTED, Violation,
    at_most_one, check_all, convergence, coverage, linearizable, lost_or_resurrected,
};
use jepsen::history::{self, Record};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every checker, by name, with its standalone function.
type CheckerFn = fn(&[Record], &Bounds) -> Vec<Violation>;
const CHECKERS: [(&str, CheckerFn); 5] = [
    (LOST_OR_RESURRECTED, lost_or_resurrected),
    (AT_MOST_ONE, at_most_one),
    (CONVERGENCE, convergence),
    (LINEARIZABLE, linearizable),
    (COVERAGE, coverage),
];

/// `<name>.expected.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Expected {
    /// The checkers this fixture is about.
    checkers: Vec<String>,
    /// Whether their guarantees hold (no violation from any of them) or are
    /// broken (at least one violation from each).
    holds: bool,
    /// What the history shows, and why the verdict is right.
    about: String,
    /// Bounds other than the defaults, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bounds: Option<Bounds>,
    /// The whole report of `check_all`, as JSON.
    verdict: Value,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The fixture names, sorted.
fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/ is readable")
        .map(|e| e.expect("a directory entry").file_name())
        .filter_map(|n| n.to_str()?.strip_suffix(".jsonl").map(str::to_string))
        .collect();
    names.sort();
    names
}

fn read_expected(name: &str) -> Result<Expected, String> {
    let path = fixtures_dir().join(format!("{name}.expected.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "reading {}: {e} (write one with `checkers`, `holds` and `about`, then run with UPDATE_FIXTURES=1 and review the verdict)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
}

/// Where two JSON values differ, as `path: expected …, got …` lines.
fn diff(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for k in e.keys().chain(a.keys().filter(|k| !e.contains_key(*k))) {
                let p = format!("{path}.{k}");
                match (e.get(k), a.get(k)) {
                    (Some(x), Some(y)) => diff(&p, x, y, out),
                    (Some(x), None) => out.push(format!("{p}: expected {x}, got nothing")),
                    (None, Some(y)) => out.push(format!("{p}: expected nothing, got {y}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            for i in 0..e.len().max(a.len()) {
                let p = format!("{path}[{i}]");
                match (e.get(i), a.get(i)) {
                    (Some(x), Some(y)) => diff(&p, x, y, out),
                    (Some(x), None) => out.push(format!("{p}: expected {x}, got nothing")),
                    (None, Some(y)) => out.push(format!("{p}: expected nothing, got {y}")),
                    (None, None) => {}
                }
            }
        }
        (e, a) if e != a => out.push(format!("{path}: expected {e}, got {a}")),
        _ => {}
    }
}

/// Checks one fixture (or, with `update`, rewrites its verdict); why it
/// failed otherwise.
fn check_fixture(name: &str, update: bool) -> Result<(), String> {
    let dir = fixtures_dir();
    let text = std::fs::read_to_string(dir.join(format!("{name}.jsonl")))
        .map_err(|e| format!("reading the history: {e}"))?;
    let records = history::parse(&text)?;
    let mut expected = read_expected(name)?;
    let bounds = expected.bounds.unwrap_or_default();
    let report = check_all(&records, &bounds);
    let mut why = Vec::new();

    // Each checker alone says what `check_all` says for it.
    for (checker, f) in CHECKERS {
        let alone = f(&records, &bounds);
        let together: Vec<&Violation> = report
            .violations
            .iter()
            .filter(|v| v.checker == checker)
            .collect();
        if alone.iter().collect::<Vec<_>>() != together {
            why.push(format!(
                "{checker} alone found {} violations, check_all {}",
                alone.len(),
                together.len()
            ));
        }
    }

    // The verdict agrees with what the fixture claims.
    if expected.checkers.is_empty() {
        why.push("`checkers` names no checker".to_string());
    }
    for c in &expected.checkers {
        let Some(&n) = report.by_checker.get(c.as_str()) else {
            why.push(format!("`checkers` names {c:?}, which is no checker"));
            continue;
        };
        match (expected.holds, n) {
            (true, 0) | (false, 1..) => {}
            (true, n) => why.push(format!(
                "claimed to hold for {c}, but it found {n} violations: {:?}",
                report
                    .violations
                    .iter()
                    .filter(|v| v.checker == c.as_str())
                    .map(|v| &v.message)
                    .collect::<Vec<_>>()
            )),
            (false, _) => why.push(format!("claimed to break {c}, but it found nothing")),
        }
    }

    let actual = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    if update {
        if expected.verdict != actual {
            expected.verdict = actual;
            let text = serde_json::to_string_pretty(&expected).map_err(|e| e.to_string())? + "\n";
            std::fs::write(dir.join(format!("{name}.expected.json")), text)
                .map_err(|e| e.to_string())?;
            eprintln!("{name}: verdict rewritten; review it");
        }
    } else {
        let mut d = Vec::new();
        diff("verdict", &expected.verdict, &actual, &mut d);
        if !d.is_empty() {
            let n = d.len();
            why.push(format!(
                "the verdict differs from the expected one in {n} places:\n      {}{}",
                d.iter()
                    .take(12)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n      "),
                if n > 12 { "\n      …" } else { "" }
            ));
        }
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(why.join("\n    "))
    }
}

#[test]
fn every_fixture_gets_its_expected_verdict() {
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    let names = fixture_names();
    assert!(
        !names.is_empty(),
        "no fixture in {}",
        fixtures_dir().display()
    );
    let failed: Vec<String> = names
        .iter()
        .filter_map(|n| {
            check_fixture(n, update)
                .err()
                .map(|why| format!("  {n}:\n    {why}"))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failed.len(),
        names.len(),
        failed.join("\n")
    );
}

/// Every checker has a fixture where it holds and one where it is broken.
#[test]
fn fixtures_cover_every_checker_both_ways() {
    let mut missing = Vec::new();
    let expected: Vec<Expected> = fixture_names()
        .iter()
        .map(|n| read_expected(n).unwrap_or_else(|e| panic!("{n}: {e}")))
        .collect();
    for (checker, _) in CHECKERS {
        for holds in [true, false] {
            if !expected
                .iter()
                .any(|e| e.holds == holds && e.checkers.iter().any(|c| c == checker))
            {
                missing.push(format!(
                    "{checker} {}",
                    if holds { "holding" } else { "broken" }
                ));
            }
        }
    }
    assert!(missing.is_empty(), "no fixture with {missing:?}");
}

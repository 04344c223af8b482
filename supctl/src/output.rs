//! How supctl prints: `-o table` (the default: tables whose columns are as
//! wide as their content), `-o wide` (the same with more columns), `-o json`
//! (the admin API's JSON, as `--json` always did) and `-o yaml` (the same
//! data as YAML). Times are UTC dates, `2026-12-02 14:03:07`.

use admin_api::views::{FleetRolloutView, QuarantineView, RevisionView};
use admin_api::{EventView, ModuleView, NodeView};
use anyhow::Result;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde::Serialize;

/// `-o`: the output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Tables sized to their content.
    #[default]
    Table,
    /// Tables with every column.
    Wide,
    /// The admin API's JSON (as `--json`).
    Json,
    /// The same data as YAML.
    Yaml,
}

/// The chosen format, and how to print data in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub format: Format,
}

impl Output {
    /// From `-o` and `--json` (`--json` wins: it is `-o json`).
    pub fn new(format: Option<Format>, json: bool) -> Output {
        let format = if json {
            Format::Json
        } else {
            format.unwrap_or_default()
        };
        Output { format }
    }

    /// JSON or YAML: data, not text for people.
    pub fn structured(&self) -> bool {
        matches!(self.format, Format::Json | Format::Yaml)
    }

    pub fn wide(&self) -> bool {
        self.format == Format::Wide
    }

    /// Prints `v` as JSON or YAML (as JSON for the table formats too: the
    /// caller asks only when [`Output::structured`]).
    pub fn print<T: Serialize + ?Sized>(&self, v: &T) -> Result<()> {
        print!("{}", self.render(v)?);
        Ok(())
    }

    /// `v` as the chosen structured format, ending in a newline.
    pub fn render<T: Serialize + ?Sized>(&self, v: &T) -> Result<String> {
        Ok(match self.format {
            Format::Yaml => {
                let mut s = serde_norway::to_string(v)?;
                if !s.ends_with('\n') {
                    s.push('\n');
                }
                s
            }
            _ => format!("{}\n", serde_json::to_string_pretty(v)?),
        })
    }

    /// One item of a stream (`events -f`): a JSON line, or a YAML document.
    pub fn render_item<T: Serialize + ?Sized>(&self, v: &T) -> Result<String> {
        Ok(match self.format {
            Format::Yaml => format!("---\n{}", self.render(v)?),
            _ => format!("{}\n", serde_json::to_string(v)?),
        })
    }
}

/// A table without borders, columns as wide as their widest cell, two
/// spaces between columns; `right` names the columns aligned right
/// (numbers).
pub fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[&str]) -> String {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if header.get(i).is_some_and(|h| right.contains(h)) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = t.trim_fmt();
    out.push('\n');
    out
}

/// `yyyy-mm-dd hh:mm:ss` (UTC) of a time in ms since the Unix epoch.
pub fn datetime(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (y, m, d) = civil_date((secs / 86_400) as i64);
    let (h, min, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{s:02}")
}

/// The date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub(crate) fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_string()
}

pub fn nodes(nodes: &[NodeView], wide: bool) -> String {
    let mut header = vec!["NODE", "ADDR", "STATUS", "LABELS", "MODULES"];
    if wide {
        header.push("LEASE LEFT");
    }
    let rows = nodes
        .iter()
        .map(|n| {
            let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut row = vec![
                n.id.clone(),
                n.addr.clone(),
                n.status.clone(),
                or_dash(Some(&labels.join(","))),
                or_dash(Some(&n.modules.join(","))),
            ];
            if wide {
                row.push(n.lease_left_ms.map_or("-".into(), |ms| format!("{ms} ms")));
            }
            row
        })
        .collect();
    table(&header, rows, &["LEASE LEFT"])
}

pub fn modules(modules: &[ModuleView], wide: bool) -> String {
    let mut header = vec![
        "MODULE",
        "NODE",
        "STATE",
        "EPOCH",
        "RESTORES",
        "FAILOVERS",
        "PACKAGE",
    ];
    if wide {
        header.extend([
            "REVISION",
            "ROLLOUT",
            "FENCING",
            "PLACED BY",
            "INSTALLED",
            "TRIED",
            "UPDATED",
        ]);
    }
    header.push("REASON");
    let rows = modules
        .iter()
        .map(|m| {
            let mut row = vec![
                m.name.clone(),
                or_dash(m.node.as_deref()),
                m.state.clone(),
                m.epoch.map_or("-".to_string(), |e| e.to_string()),
                m.restore_attempts.to_string(),
                m.failovers.to_string(),
                m.package.to_string(),
            ];
            if wide {
                row.extend([
                    m.revision.to_string(),
                    m.rollout.as_ref().map_or("-".into(), |r| {
                        format!("{} -> {} {}", r.from, r.to, r.state)
                    }),
                    serde_json::to_value(m.fencing)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    or_dash(m.placed_by.as_deref()),
                    or_dash(m.installed_version.as_deref()),
                    or_dash(Some(&m.tried_nodes.join(","))),
                    datetime(m.updated_ms),
                ]);
            }
            row.push(m.reason.clone().unwrap_or_default());
            row
        })
        .collect();
    table(
        &header,
        rows,
        &["EPOCH", "RESTORES", "FAILOVERS", "REVISION"],
    )
}

pub fn events(events: &[EventView], wide: bool) -> String {
    let mut header = vec!["INDEX", "TIME", "KIND", "MODULE", "NODE"];
    if wide {
        header.extend(["LOG INDEX", "CAUSE"]);
    }
    header.push("DETAIL");
    let rows = events
        .iter()
        .map(|e| {
            let mut row = vec![
                e.index.to_string(),
                datetime(e.at_ms),
                e.kind.clone(),
                or_dash(e.module.as_deref()),
                or_dash(e.node.as_deref()),
            ];
            if wide {
                row.push(e.log_index.to_string());
                row.push(e.cause.map_or("-".into(), |c| format!("#{c}")));
            }
            row.push(detail(e));
            row
        })
        .collect();
    table(&header, rows, &["INDEX", "LOG INDEX"])
}

/// An event's detail, `k=v k=v`.
pub fn detail(e: &EventView) -> String {
    let detail: Vec<String> = e.detail.iter().map(|(k, v)| format!("{k}={v}")).collect();
    detail.join(" ")
}

/// One event on one line (a followed stream, where a table cannot know
/// its widths in advance).
pub fn event_line(e: &EventView) -> String {
    format!(
        "{:>6}  {}  {:<20} {:<14} {:<12} {}",
        e.index,
        datetime(e.at_ms),
        e.kind,
        e.module.as_deref().unwrap_or("-"),
        e.node.as_deref().unwrap_or("-"),
        detail(e)
    )
}

pub fn history(revisions: &[RevisionView], wide: bool) -> String {
    let mut header = vec![
        "REVISION",
        "PACKAGE",
        "OUTCOME",
        "GOOD",
        "RESTORES",
        "FAILOVERS",
        "SINCE",
    ];
    if wide {
        header.push("FENCING");
    }
    let rows = revisions
        .iter()
        .map(|r| {
            let mut row = vec![
                r.revision.to_string(),
                r.package.to_string(),
                r.outcome.clone(),
                if r.good { "yes" } else { "no" }.to_string(),
                r.restores.to_string(),
                r.failovers.to_string(),
                datetime(r.at_ms),
            ];
            if wide {
                let spec = serde_json::to_value(&r.spec).unwrap_or_default();
                row.push(or_dash(spec["fencing"].as_str()));
            }
            row
        })
        .collect();
    table(&header, rows, &["REVISION", "RESTORES", "FAILOVERS"])
}

pub fn rollouts(list: &[FleetRolloutView], wide: bool) -> String {
    let mut header = vec![
        "ID", "PACKAGE", "STATE", "PENDING", "ACTIVE", "UPDATED", "FAILED", "SKIPPED", "STARTED",
    ];
    if wide {
        header.extend(["MAX PARALLEL", "MAX FAILURES", "CHANGED", "REASON"]);
    }
    let rows = list
        .iter()
        .map(|f| {
            let mut row = vec![
                f.id.to_string(),
                f.package.to_string(),
                f.state.clone(),
                f.pending.len().to_string(),
                f.active.len().to_string(),
                f.completed.len().to_string(),
                f.failed.len().to_string(),
                f.skipped.len().to_string(),
                datetime(f.started_ms),
            ];
            if wide {
                row.extend([
                    f.max_parallel.to_string(),
                    f.max_failures.to_string(),
                    datetime(f.updated_ms),
                    f.reason.clone().unwrap_or_default(),
                ]);
            }
            row
        })
        .collect();
    table(
        &header,
        rows,
        &[
            "ID",
            "PENDING",
            "ACTIVE",
            "UPDATED",
            "FAILED",
            "SKIPPED",
            "MAX PARALLEL",
            "MAX FAILURES",
        ],
    )
}

pub fn quarantined(list: &[QuarantineView], wide: bool) -> String {
    let mut header = vec!["PACKAGE", "SINCE", "MODULES"];
    if wide {
        header.push("NODES");
    }
    header.push("REASON");
    let rows = list
        .iter()
        .map(|q| {
            let mut row = vec![
                q.package.to_string(),
                datetime(q.since_ms),
                or_dash(Some(&q.modules.join(","))),
            ];
            if wide {
                row.push(or_dash(Some(&q.nodes.join(","))));
            }
            row.push(q.reason.clone());
            row
        })
        .collect();
    table(&header, rows, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_are_utc_dates() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00");
        // 2026-12-02 14:03:07.250 UTC.
        assert_eq!(datetime(1_796_220_187_250), "2026-12-02 14:03:07");
        // A leap day.
        assert_eq!(datetime(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(datetime(4_107_542_399_000), "2100-02-28 23:59:59");
    }

    #[test]
    fn tables_fit_their_content() {
        let out = table(
            &["NAME", "N"],
            vec![
                vec!["a".into(), "1".into()],
                vec!["longer-name".into(), "100".into()],
            ],
            &["N"],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            ["NAME           N", "a              1", "longer-name  100"],
            "{out}"
        );
    }

    fn module(name: &str, node: Option<&str>) -> ModuleView {
        serde_json::from_value(serde_json::json!({
            "name": name, "node": node, "epoch": 7, "state": "running",
            "restore_attempts": 0, "failovers": 1,
            "package": {"name": "web", "version": "1.0.0"}, "fencing": "at-most-one",
            "reason": null, "tried_nodes": [], "placed_by": "initial",
            "installed_version": "1.0.0", "updated_ms": 1_796_220_187_250u64
        }))
        .expect("module view")
    }

    #[test]
    fn wide_adds_columns() {
        let ms = [
            module("web", Some("a")),
            module("a-much-longer-module", None),
        ];
        let narrow = modules(&ms, false);
        let wide = modules(&ms, true);
        assert!(narrow.starts_with("MODULE "), "{narrow}");
        assert!(!narrow.contains("FENCING"), "{narrow}");
        assert!(
            wide.contains("FENCING") && wide.contains("2026-12-02 14:03:07"),
            "{wide}"
        );
        // Every line's NODE column starts where the header's does.
        let at = narrow.find("NODE").expect("NODE");
        for line in narrow.lines().skip(1) {
            assert!(
                line[at..].starts_with('a') || line[at..].starts_with('-'),
                "{narrow}"
            );
        }
    }

    #[test]
    fn json_and_yaml() {
        let o = Output::new(Some(Format::Yaml), false);
        assert!(o.structured());
        let yaml = o.render(&module("web", Some("a"))).expect("yaml");
        assert!(
            yaml.contains("name: web\n") && yaml.contains("node: a\n"),
            "{yaml}"
        );
        let j = Output::new(Some(Format::Yaml), true);
        assert_eq!(j.format, Format::Json, "--json wins");
        let json = j.render(&module("web", None)).expect("json");
        assert!(json.contains("\"name\": \"web\""), "{json}");
        assert_eq!(Output::new(None, false).format, Format::Table);
        assert!(!Output::new(Some(Format::Wide), false).structured());
    }
}

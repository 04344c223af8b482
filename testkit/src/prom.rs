//! Reading a `/metrics` page (Prometheus text format 0.0.4) in tests: the
//! `# TYPE` of each family and every sample, parsed, so a test can check
//! that a histogram has its `_bucket`, `_sum` and `_count` series and that
//! a counter moved, without matching whole lines.

use std::collections::BTreeMap;
use std::time::Duration;

/// `GET http://<addr>/metrics`, parsed: `None` while it does not answer
/// (a 5 s timeout); panics on a page that is not Prometheus text (its
/// content type or its lines), which is a bug, not a moment to wait out.
pub async fn scrape(addr: &str) -> Option<Metrics> {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/metrics"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|t| t.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        kind.starts_with("text/plain"),
        "/metrics content type {kind:?}"
    );
    let text = resp.text().await.ok()?;
    Some(Metrics::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}")))
}

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed page.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Family name → its type (`counter`, `gauge`, `histogram`, ...).
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses `text`; an error names the first line that is not a comment
    /// or a well-formed sample.
    pub fn parse(text: &str) -> Result<Metrics, String> {
        let mut m = Metrics::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line == "# EOF" {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("bad TYPE line: {line}"))?;
                m.types.insert(name.to_string(), kind.trim().to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            m.samples.push(sample(line)?);
        }
        Ok(m)
    }

    /// The value of the sample `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Whether `family` is declared a histogram and has `_bucket` series
    /// (with a `+Inf` one), `_sum` and `_count`; the `+Inf` bucket equals
    /// the count.
    pub fn check_histogram(&self, family: &str) -> Result<(), String> {
        if self.types.get(family).map(String::as_str) != Some("histogram") {
            return Err(format!(
                "{family} is not declared a histogram: {:?}",
                self.types.get(family)
            ));
        }
        let bucket = format!("{family}_bucket");
        let buckets: Vec<&Sample> = self.samples.iter().filter(|s| s.name == bucket).collect();
        if buckets.len() < 2 {
            return Err(format!("{family}: {} buckets", buckets.len()));
        }
        let inf = self
            .value(&bucket, &[("le", "+Inf")])
            .ok_or_else(|| format!("{family}: no +Inf bucket"))?;
        let count = self
            .value(&format!("{family}_count"), &[])
            .ok_or_else(|| format!("{family}: no _count"))?;
        self.value(&format!("{family}_sum"), &[])
            .ok_or_else(|| format!("{family}: no _sum"))?;
        if inf != count {
            return Err(format!("{family}: +Inf bucket {inf} != count {count}"));
        }
        Ok(())
    }

    /// The `_count` of histogram `family` (0 when absent).
    pub fn count(&self, family: &str) -> f64 {
        self.value(&format!("{family}_count"), &[]).unwrap_or(0.0)
    }
}

fn sample(line: &str) -> Result<Sample, String> {
    let bad = || format!("bad sample line: {line}");
    let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| bad())?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series.to_string(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').ok_or_else(bad)?;
            let mut labels = BTreeMap::new();
            for pair in body.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(bad)?;
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .ok_or_else(bad)?;
                labels.insert(k.to_string(), v.to_string());
            }
            (name.to_string(), labels)
        }
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_and_histograms() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n\
                    # TYPE h histogram\nh_sum 1.5\nh_count 2\n\
                    h_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                    g{state=\"running\",x=\"y\"} 4\n# EOF\n";
        let m = Metrics::parse(text).expect("parse");
        assert_eq!(m.value("a_total", &[]), Some(3.0));
        assert_eq!(m.value("g", &[("state", "running")]), Some(4.0));
        assert_eq!(m.count("h"), 2.0);
        m.check_histogram("h").expect("histogram");
        assert!(m.check_histogram("a_total").is_err());
        assert!(Metrics::parse("nonsense").is_err());
    }
}

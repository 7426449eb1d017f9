//! Turns the raw JSON lines of a run into `results.json` and a Markdown table: median, min
//! and max per scenario, case and system, the ratio to the peer, and each goal from the
//! issue, met or missed.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde_json::{Value, json};

/// The figure a scenario's rows show: which measurement field, and its unit.
struct Metric {
    field: &'static str,
    unit: &'static str,
}

fn metric_of(scenario: &str) -> Metric {
    match scenario {
        "S7" => Metric {
            field: "us",
            unit: "µs",
        },
        "S9" => Metric {
            field: "rss_kib",
            unit: "KiB RSS",
        },
        "S5" => Metric {
            field: "p99_ms",
            unit: "ms p99 latency",
        },
        "S8" => Metric {
            field: "per_s",
            unit: "commits/s",
        },
        _ => Metric {
            field: "ms",
            unit: "ms",
        },
    }
}

#[derive(Debug, Clone)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

fn stats(mut values: Vec<f64>) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let median = if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    };
    Some(Stats {
        median,
        min: values[0],
        max: values[values.len() - 1],
        runs: values.len(),
    })
}

type Key = (String, String, String);

struct Runs {
    by_key: BTreeMap<Key, Vec<Value>>,
}

impl Runs {
    fn field(&self, scenario: &str, case: &str, system: &str, field: &str) -> Option<Stats> {
        let runs = self
            .by_key
            .get(&(scenario.into(), case.into(), system.into()))?;
        stats(runs.iter().filter_map(|r| r[field].as_f64()).collect())
    }
}

/// A goal: a figure compared with a limit (`ratio` when it is relative to another figure).
struct Goal {
    scenario: &'static str,
    text: &'static str,
    value: Option<f64>,
    limit: f64,
    at_most: bool,
}

fn ratio(a: Option<Stats>, b: Option<Stats>) -> Option<f64> {
    Some(a?.median / b?.median)
}

fn goals(runs: &Runs) -> Vec<Goal> {
    let m = |s: &str, c: &str, sys: &str, f: &str| runs.field(s, c, sys, f);
    let mut goals = vec![
        Goal {
            scenario: "S1",
            text: "node ≤ 1.10× raw automerge (time)",
            value: ratio(
                m("S1", "trace-replay", "membrane", "ms"),
                m("S1", "trace-replay", "automerge-rs", "ms"),
            ),
            limit: 1.10,
            at_most: true,
        },
        Goal {
            scenario: "S1",
            text: "≥ 4× faster than automerge JS (JS time / node time)",
            value: ratio(
                m("S1", "trace-replay", "automerge-js", "ms"),
                m("S1", "trace-replay", "membrane", "ms"),
            ),
            limit: 4.0,
            at_most: false,
        },
        Goal {
            scenario: "S3",
            text: "≥ 5× faster than automerge-repo (their time / ours)",
            value: ratio(
                m("S3", "first-sync", "automerge-repo", "ms"),
                m("S3", "first-sync", "membrane", "ms"),
            ),
            limit: 5.0,
            at_most: false,
        },
        Goal {
            scenario: "S3",
            text: "wire bytes ≤ 1.15× the saved document",
            value: ratio(
                m("S3", "first-sync", "membrane", "wire_bytes"),
                m("S3", "first-sync", "membrane", "saved_bytes"),
            ),
            limit: 1.15,
            at_most: true,
        },
        Goal {
            scenario: "S4",
            text: "all in sync: ≤ 3 round trips (frames sent)",
            value: m("S4", "all-in-sync", "membrane", "messages_up").map(|s| s.median),
            limit: 3.0,
            at_most: true,
        },
        Goal {
            scenario: "S4",
            text: "all in sync: ≤ 4 KB on the wire",
            value: m("S4", "all-in-sync", "membrane", "wire_bytes").map(|s| s.median),
            limit: 4096.0,
            at_most: true,
        },
        Goal {
            scenario: "S4",
            text: "changed: ≥ 50× faster than automerge-repo",
            value: ratio(
                m("S4", "changed", "automerge-repo", "ms"),
                m("S4", "changed", "membrane", "ms"),
            ),
            limit: 50.0,
            at_most: false,
        },
        Goal {
            scenario: "S7",
            text: "cold depth-3 ≤ 1.15× batch-verifying three signatures, keys from their bytes (RFC 8032)",
            value: ratio(
                m("S7", "depth-3-cold", "ucan", "us"),
                m("S7", "3-signatures-batch-from-bytes", "ed25519", "us"),
            ),
            limit: 1.15,
            at_most: true,
        },
        Goal {
            scenario: "S7",
            text: "the same against keys decoded beforehand (the cold check still decodes its three)",
            value: ratio(
                m("S7", "depth-3-cold", "ucan", "us"),
                m("S7", "3-signatures-batch", "ed25519", "us"),
            ),
            limit: 1.15,
            at_most: true,
        },
        Goal {
            scenario: "S7",
            text: "≥ 2× faster than biscuit (their time / ours)",
            value: ratio(
                m("S7", "3-blocks", "biscuit", "us"),
                m("S7", "depth-3-cold", "ucan", "us"),
            ),
            limit: 2.0,
            at_most: false,
        },
        Goal {
            scenario: "S7",
            text: "proofs verified before: ≤ 2 µs",
            value: m("S7", "depth-3-verified-before", "ucan", "us").map(|s| s.median),
            limit: 2.0,
            at_most: true,
        },
        Goal {
            scenario: "S8",
            text: "single commits ≥ 90% of raw redb with the node's two-phase commit (rate ratio)",
            value: ratio(
                m("S8", "single-commits", "membrane", "per_s"),
                m("S8", "single-commits", "redb-2pc", "per_s"),
            ),
            limit: 0.9,
            at_most: false,
        },
        Goal {
            scenario: "S8",
            text: "single commits ≥ 90% of raw redb with its default one-fsync commit (rate ratio)",
            value: ratio(
                m("S8", "single-commits", "membrane", "per_s"),
                m("S8", "single-commits", "redb", "per_s"),
            ),
            limit: 0.9,
            at_most: false,
        },
        Goal {
            scenario: "S8",
            text: "group commit ≥ 50,000 changes/s (256 writers, one document)",
            value: m("S8", "group-commit", "membrane", "per_s").map(|s| s.median),
            limit: 50_000.0,
            at_most: false,
        },
        Goal {
            scenario: "S8",
            text: "group commit acknowledges within 5 ms (p99; one document)",
            value: m("S8", "group-commit", "membrane", "ack_p99_ms").map(|s| s.median),
            limit: 5.0,
            at_most: true,
        },
        Goal {
            scenario: "S8",
            text: "group commit ≥ 50,000 changes/s (256 writers, a document each)",
            value: m("S8", "group-commit-doc-each", "membrane", "per_s").map(|s| s.median),
            limit: 50_000.0,
            at_most: false,
        },
        Goal {
            scenario: "S8",
            text: "group commit acknowledges within 5 ms (p99; a document each)",
            value: m("S8", "group-commit-doc-each", "membrane", "ack_p99_ms").map(|s| s.median),
            limit: 5.0,
            at_most: true,
        },
        Goal {
            scenario: "S9",
            text: "idle RSS ≤ 25 MiB",
            value: m("S9", "idle-3-peers", "membrane", "rss_kib").map(|s| s.median / 1024.0),
            limit: 25.0,
            at_most: true,
        },
        Goal {
            scenario: "S9",
            text: "idle RSS ≤ 0.5× Syncthing",
            value: ratio(
                m("S9", "idle-3-peers", "membrane", "rss_kib"),
                m("S9", "idle-3-peers", "syncthing", "rss_kib"),
            ),
            limit: 0.5,
            at_most: true,
        },
        Goal {
            scenario: "S10",
            text: "cold start ≤ 200 ms",
            value: m("S10", "cold-start", "membrane", "ms").map(|s| s.median),
            limit: 200.0,
            at_most: true,
        },
    ];
    let p99 = m("S5", "writers-16", "membrane", "p99_ms");
    let rtt = m("S5", "writers-16", "membrane", "loopback_rtt_ms");
    goals.push(Goal {
        scenario: "S5",
        text: "16 writers: p99 minus the loopback round trip ≤ 10 ms",
        value: p99.zip(rtt).map(|(p, r)| p.median - r.median),
        limit: 10.0,
        at_most: true,
    });
    goals
}

/// The systems each scenario compares Membrane with.
fn peer_of(scenario: &str, case: &str) -> Option<(&'static str, &'static str)> {
    Some(match (scenario, case) {
        ("S1", _) => ("trace-replay", "automerge-rs"),
        ("S3", _) => ("first-sync", "automerge-repo"),
        ("S4", "all-in-sync") => ("all-in-sync", "automerge-repo"),
        ("S4", "changed") => ("changed", "automerge-repo"),
        ("S8", "single-commits") => ("single-commits", "redb-2pc"),
        ("S8", "group-commit") => ("group-commit", "automerge-rs"),
        ("S8", "group-commit-doc-each") => ("group-commit-doc-each", "automerge-rs"),
        ("S9", _) => ("idle-3-peers", "syncthing"),
        ("S10", _) => ("cold-start", "automerge-repo"),
        ("S7", "depth-3-cold") => ("3-signatures-batch-from-bytes", "ed25519"),
        ("S5", "writers-4") => ("writers-4", "automerge-repo"),
        ("S5", "writers-8") => ("writers-8", "automerge-repo"),
        ("S5", "writers-16") => ("writers-16", "automerge-repo"),
        ("S5", "writers-2") => ("writers-2", "automerge-repo"),
        _ => return None,
    })
}

fn number(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Reads `input` (JSON lines), writes `json` and `markdown`.
pub(crate) fn write(
    input: &Path,
    json_out: &Path,
    markdown: &Path,
    header: &str,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(input)?;
    let raw: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let mut by_key: BTreeMap<Key, Vec<Value>> = BTreeMap::new();
    for run in &raw {
        let key = (
            run["scenario"].as_str().unwrap_or("?").to_owned(),
            run["case"].as_str().unwrap_or("?").to_owned(),
            run["system"].as_str().unwrap_or("?").to_owned(),
        );
        by_key.entry(key).or_default().push(run.clone());
    }
    let runs = Runs { by_key };

    let mut rows = Vec::new();
    let mut table = String::new();
    writeln!(table, "{header}\n")?;
    writeln!(
        table,
        "| scenario | case | system | median | min | max | unit | runs | ratio to peer |"
    )?;
    writeln!(table, "|---|---|---|---:|---:|---:|---|---:|---|")?;
    let mut keys: Vec<&Key> = runs.by_key.keys().collect();
    keys.sort_by_key(|(s, c, sys)| (s[1..].parse::<u32>().unwrap_or(99), c.clone(), sys.clone()));
    for (scenario, case, system) in keys {
        let metric = metric_of(scenario);
        let Some(s) = runs.field(scenario, case, system, metric.field) else {
            continue;
        };
        let ratio = (system == "membrane" || system == "ucan")
            .then(|| peer_of(scenario, case))
            .flatten()
            .and_then(|(peer_case, peer)| {
                let p = runs.field(scenario, peer_case, peer, metric.field)?;
                Some((peer, s.median / p.median))
            });
        // A run whose writers could not type at the planned rate, or whose keystrokes had
        // not all arrived when it stopped waiting, is incomplete: what never arrived counts
        // at the latency it had reached, a lower bound.
        let incomplete = runs.by_key[&(scenario.clone(), case.clone(), system.clone())]
            .iter()
            .filter(|run| run["complete"] == Value::Bool(false))
            .count();
        let unit = if incomplete == 0 {
            metric.unit.to_owned()
        } else {
            format!(
                "{}; {incomplete} run(s) incomplete: fell behind the typing",
                metric.unit
            )
        };
        writeln!(
            table,
            "| {scenario} | {case} | {system} | {} | {} | {} | {unit} | {} | {} |",
            number(s.median),
            number(s.min),
            number(s.max),
            s.runs,
            ratio.map_or(String::new(), |(peer, r)| format!("{}× {peer}", number(r))),
        )?;
        rows.push(json!({
            "scenario": scenario, "case": case, "system": system, "unit": metric.unit,
            "median": s.median, "min": s.min, "max": s.max, "runs": s.runs,
            "incomplete_runs": incomplete,
            "ratio_to_peer": ratio.map(|(peer, r)| json!({"peer": peer, "ratio": r})),
        }));
    }
    writeln!(table, "\n| scenario | goal | measured | limit | met |")?;
    writeln!(table, "|---|---|---:|---:|---|")?;
    let mut goal_rows = Vec::new();
    for goal in goals(&runs) {
        let met = goal.value.map(|v| {
            if goal.at_most {
                v <= goal.limit
            } else {
                v >= goal.limit
            }
        });
        writeln!(
            table,
            "| {} | {} | {} | {} {} | {} |",
            goal.scenario,
            goal.text,
            goal.value.map_or("not measured".into(), number),
            if goal.at_most { "≤" } else { "≥" },
            number(goal.limit),
            match met {
                Some(true) => "yes",
                Some(false) => "**missed**",
                None => "not measured",
            }
        )?;
        goal_rows.push(json!({
            "scenario": goal.scenario, "goal": goal.text, "value": goal.value,
            "limit": goal.limit, "at_most": goal.at_most, "met": met,
        }));
    }
    std::fs::write(
        json_out,
        serde_json::to_string_pretty(
            &json!({"header": header, "summary": rows, "goals": goal_rows, "runs": raw}),
        )?,
    )?;
    std::fs::write(markdown, table)?;
    Ok(())
}

//! How the demo tells its story: narration for people, one JSON line per step for
//! programs, and the summary table at the end.

use std::{
    fmt::Display,
    io::{self, Write as _},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::output::Output;

/// One step of the story.
pub(super) struct Step {
    /// Its stable name in JSON output.
    pub(super) id: &'static str,
    /// What happens in it, for people.
    pub(super) title: &'static str,
}

pub(super) const PAIR: Step = Step {
    id: "pair",
    title: "Sarah's laptop starts and her phone pairs with it by QR code",
};
pub(super) const SYNC: Step = Step {
    id: "sync",
    title: "Her contacts, calendar and fitness data sync to the phone",
};
pub(super) const GRANT: Step = Step {
    id: "grant",
    title: "Sarah lets Tom read her calendar and a sports shop write to her inbox",
};
pub(super) const USE: Step = Step {
    id: "use",
    title: "Tom reads the calendar; the shop sends an offer",
};
pub(super) const STRANGER: Step = Step {
    id: "stranger",
    title: "A stranger tries to read Sarah's data",
};
pub(super) const REVOKE: Step = Step {
    id: "revoke",
    title: "Sarah loses her phone and revokes it from her laptop",
};
pub(super) const LOG: Step = Step {
    id: "log",
    title: "Every access by someone else is in Sarah's access log",
};

/// The longest a step may take, whatever it waits for.
const STEP_LIMIT: Duration = Duration::from_secs(120);

/// The whole story, in order.
pub(super) const STEPS: [&Step; 7] = [&PAIR, &SYNC, &GRANT, &USE, &STRANGER, &REVOKE, &LOG];

/// What a step that succeeded reports: one line for people, the facts for programs.
pub(super) struct Done {
    pub(super) outcome: String,
    pub(super) detail: Value,
}

impl Done {
    pub(super) fn new(outcome: impl Into<String>, detail: Value) -> Self {
        Self {
            outcome: outcome.into(),
            detail,
        }
    }
}

/// Narration: what happens as it happens, shown to people only (JSON output carries the
/// same facts in each step's `detail`).
#[derive(Clone, Copy)]
pub(super) struct Narrator {
    human: bool,
}

impl Narrator {
    pub(super) fn new(human: bool) -> Self {
        Self { human }
    }

    /// One indented line of narration.
    pub(super) fn line(self, text: impl Display) {
        self.write(|out| writeln!(out, "  {text}"));
    }

    /// A block printed as it is (a QR code).
    pub(super) fn block(self, text: &str) {
        self.write(|out| writeln!(out, "{text}"));
    }

    fn write(self, print: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>) {
        if !self.human {
            return;
        }
        let mut out = io::stdout().lock();
        // Best effort: if stdout is gone, the next step result (written through `Output`)
        // reports it, and the demo still shuts its nodes down and cleans up.
        let _ = print(&mut out).and_then(|()| out.flush());
    }
}

/// How one step ended.
struct Record {
    ok: bool,
    outcome: String,
    took: Duration,
}

/// Runs the steps one after another, writes each one's result, and sums them up.
pub(super) struct Report<'out> {
    out: &'out mut Output,
    records: Vec<Record>,
}

impl<'out> Report<'out> {
    pub(super) fn new(out: &'out mut Output) -> Self {
        Self {
            out,
            records: Vec::new(),
        }
    }

    /// The output, for lines that are not steps.
    pub(super) fn out(&mut self) -> &mut Output {
        self.out
    }

    /// Runs one step and writes its result. Returns what the step hands the next ones, or
    /// `None` if it failed (the story stops there: later steps build on earlier ones).
    /// An error is a failure to write the result, not a failed step.
    pub(super) async fn step<T>(
        &mut self,
        step: &'static Step,
        run: impl Future<Output = anyhow::Result<(T, Done)>>,
    ) -> anyhow::Result<Option<T>> {
        let number = self.records.len() + 1;
        Narrator::new(!self.out.is_json()).write(|out| {
            writeln!(out)?;
            writeln!(out, "[{number}/{}] {}", STEPS.len(), step.title)
        });
        let started = Instant::now();
        // Each wait inside a step has its own deadline; this one also catches a node call
        // that never answers.
        let result = match tokio::time::timeout(STEP_LIMIT, run).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "the step took longer than {} s",
                STEP_LIMIT.as_secs()
            )),
        };
        let took = started.elapsed();
        let (carried, ok, outcome, detail) = match result {
            Ok((carried, done)) => (Some(carried), true, done.outcome, done.detail),
            Err(error) => {
                let message = format!("{error:#}");
                let detail = json!({ "error": message });
                (None, false, message, detail)
            }
        };
        let data = json!({
            "step": step.id,
            "number": number,
            "title": step.title,
            "ok": ok,
            "outcome": outcome,
            "seconds": seconds(took),
            "detail": detail,
        });
        self.out.result("step", &data, |w| {
            if ok {
                writeln!(w, "  ✓ {outcome}")
            } else {
                writeln!(w, "  ✗ FAILED: {outcome}")
            }
        })?;
        self.records.push(Record { ok, outcome, took });
        Ok(carried)
    }

    /// Whether every step ran and succeeded.
    pub(super) fn all_ok(&self) -> bool {
        self.records.len() == STEPS.len() && self.records.iter().all(|r| r.ok)
    }

    /// The summary: one row per step (steps after a failure did not run), then the total.
    /// `cleanup` says what became of the demo's directory.
    pub(super) fn summary(&mut self, took: Duration, cleanup: &Value) -> anyhow::Result<()> {
        let rows: Vec<(&Step, &str, &str, Option<Duration>)> = STEPS
            .iter()
            .enumerate()
            .map(|(index, step)| match self.records.get(index) {
                Some(r) if r.ok => (*step, "ok", r.outcome.as_str(), Some(r.took)),
                Some(r) => (*step, "FAILED", r.outcome.as_str(), Some(r.took)),
                None => (*step, "not run", "an earlier step failed", None),
            })
            .collect();
        let all_ok = self.all_ok();
        let data = json!({
            "ok": all_ok,
            "seconds": seconds(took),
            "steps": rows.iter().map(|(step, result, outcome, took)| json!({
                "step": step.id,
                "result": result,
                "outcome": outcome,
                "seconds": took.map(seconds),
            })).collect::<Vec<_>>(),
            "cleanup": cleanup,
        });
        let id_width = STEPS.iter().map(|s| s.id.len()).max().unwrap_or_default();
        self.out.result("summary", &data, |w| {
            writeln!(w)?;
            writeln!(w, "Summary")?;
            writeln!(w, "  #  {:<id_width$}  result   outcome", "step")?;
            for (number, (step, result, outcome, _)) in rows.iter().enumerate() {
                writeln!(
                    w,
                    "  {}  {:<id_width$}  {result:<7}  {outcome}",
                    number + 1,
                    step.id
                )?;
            }
            writeln!(w)?;
            let seconds = took.as_secs_f64();
            match rows.iter().position(|(_, result, ..)| *result == "FAILED") {
                None if all_ok => {
                    writeln!(w, "All {} steps succeeded in {seconds:.1} s.", STEPS.len())
                }
                None => writeln!(w, "The story did not finish ({seconds:.1} s)."),
                Some(at) => {
                    let skipped = match STEPS.len() - at - 1 {
                        0 => String::new(),
                        1 => "; the last step did not run".to_owned(),
                        n => format!("; the {n} after it did not run"),
                    };
                    writeln!(
                        w,
                        "Step {} ({}) FAILED{skipped} ({seconds:.1} s).",
                        at + 1,
                        STEPS[at].id
                    )
                }
            }
        })
    }
}

/// Seconds with millisecond precision, for JSON.
fn seconds(took: Duration) -> f64 {
    (took.as_millis() as f64) / 1000.0
}

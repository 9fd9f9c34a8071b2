//! Figures and their report: each figure next to its baseline and ratio, a goal and whether it is met; printed as a table and written as JSON.

use std::path::Path;

use serde::Serialize;

/// What a figure must reach.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "limit", rename_all = "snake_case")]
pub enum Goal {
    /// `ratio >= limit`.
    RatioAtLeast(f64),
    /// `ratio <= limit`.
    RatioAtMost(f64),
    /// `value <= limit`.
    ValueAtMost(f64),
    /// `value >= limit`.
    ValueAtLeast(f64),
}

impl Goal {
    fn met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Goal::RatioAtLeast(l) => ratio.map(|r| r >= l),
            Goal::RatioAtMost(l) => ratio.map(|r| r <= l),
            Goal::ValueAtMost(l) => Some(value <= l),
            Goal::ValueAtLeast(l) => Some(value >= l),
        }
    }

    fn describe(self) -> String {
        match self {
            Goal::RatioAtLeast(l) => format!("ratio ≥ {l}"),
            Goal::RatioAtMost(l) => format!("ratio ≤ {l}"),
            Goal::ValueAtMost(l) => format!("≤ {l}"),
            Goal::ValueAtLeast(l) => format!("≥ {l}"),
        }
    }
}

/// How the ratio of a figure is formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RatioKind {
    /// `value ÷ baseline` (throughputs: higher is better).
    ValueOverBaseline,
    /// `baseline ÷ value` (the "baseline TPS ÷ RLS TPS": slowdown, lower is better).
    BaselineOverValue,
}

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Stable name (the JSON key readers look for).
    pub name: String,
    /// Median of the runs.
    pub value: f64,
    /// The baseline's median, measured in the same run, if the figure has one.
    pub baseline: Option<f64>,
    /// See `ratio_kind`.
    pub ratio: Option<f64>,
    /// Unit of `value` and `baseline`.
    pub unit: String,
    /// How `ratio` is formed.
    pub ratio_kind: RatioKind,
    /// What `value` measures.
    pub what: String,
    /// What `baseline` measures.
    pub baseline_what: Option<String>,
    /// The goal, if the issue sets one.
    pub goal: Option<Goal>,
    /// Whether the goal is met.
    pub met: Option<bool>,
    /// Every run's value (the median is `value`).
    pub runs: Vec<f64>,
    /// Every run's baseline.
    pub baseline_runs: Vec<f64>,
}

impl Figure {
    /// A figure from its runs (medians are taken here).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        unit: &str,
        what: &str,
        runs: Vec<f64>,
        baseline: Option<(&str, Vec<f64>)>,
        ratio_kind: RatioKind,
        goal: Option<Goal>,
    ) -> Self {
        let value = median(&runs);
        let (baseline_what, baseline_runs) = match baseline {
            Some((w, r)) => (Some(w.to_owned()), r),
            None => (None, Vec::new()),
        };
        let base = (!baseline_runs.is_empty()).then(|| median(&baseline_runs));
        let ratio = base.and_then(|b| {
            let r = match ratio_kind {
                RatioKind::ValueOverBaseline => value / b,
                RatioKind::BaselineOverValue => b / value,
            };
            r.is_finite().then_some(r)
        });
        let met = goal.and_then(|g| g.met(value, ratio));
        Self {
            name: name.to_owned(),
            value,
            baseline: base,
            ratio,
            unit: unit.to_owned(),
            ratio_kind,
            what: what.to_owned(),
            baseline_what,
            goal,
            met,
            runs,
            baseline_runs,
        }
    }
}

/// The median (mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Prints one line per figure as it is measured.
pub fn print_line(f: &Figure) {
    let base = f.baseline.map(num).unwrap_or_else(|| "-".into());
    let ratio = f
        .ratio
        .map(|r| format!("{r:.2}"))
        .unwrap_or_else(|| "-".into());
    let goal = f.goal.map(Goal::describe).unwrap_or_default();
    let met = match f.met {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "",
    };
    println!(
        "{:<24} {:>10} {:<6} baseline {:>10}  ratio {:>6}  {goal} {met}",
        f.name,
        num(f.value),
        f.unit,
        base,
        ratio
    );
}

/// The whole run, as written to JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run finished (UTC, RFC 3339).
    pub date: String,
    /// Logical CPUs of the machine.
    pub cores: usize,
    /// PostgreSQL server version.
    pub postgres: String,
    /// Parameters of the run.
    pub parameters: serde_json::Value,
    /// The figures.
    pub figures: Vec<Figure>,
}

impl Report {
    /// Writes the JSON report (creating parent directories).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// A Markdown table of the figures (for docs/benchmarks.md).
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| figure | value | unit | baseline | ratio | goal | met |\n|---|---|---|---|---|---|---|\n",
        );
        for f in &self.figures {
            s.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} | {} |\n",
                f.name,
                num(f.value),
                f.unit,
                f.baseline.map(num).unwrap_or_else(|| "-".into()),
                f.ratio
                    .map(|r| format!("{r:.2}"))
                    .unwrap_or_else(|| "-".into()),
                f.goal.map(Goal::describe).unwrap_or_default(),
                match f.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                }
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn ratio_follows_its_kind_and_goal_is_judged_on_it() {
        let f = Figure::new(
            "x",
            "tps",
            "",
            vec![80.0],
            Some(("b", vec![100.0])),
            RatioKind::ValueOverBaseline,
            Some(Goal::RatioAtLeast(0.8)),
        );
        assert_eq!(f.ratio, Some(0.8));
        assert_eq!(f.met, Some(true));
        let g = Figure::new(
            "y",
            "tps",
            "",
            vec![80.0],
            Some(("b", vec![100.0])),
            RatioKind::BaselineOverValue,
            Some(Goal::RatioAtMost(1.10)),
        );
        assert_eq!(g.ratio, Some(1.25));
        assert_eq!(g.met, Some(false));
    }
}

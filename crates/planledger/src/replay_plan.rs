//! `planledger replay --plan TENANT/PLAN --until WHEN`: a plan as it stood, from the log alone.
//!
//! The state is what `GET /v1/plans/{id}?version=|position=|as_of=` answers (the same
//! `app::plan_state_in` over a secondary instance's view of the log), and its figures are the
//! progress read model's formulas evaluated at that instant.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, Result, anyhow};
use jiff::Timestamp;
use planledger_app::{PlanState, StateAt, plan_state_in, stream_of};
use planledger_domain::PlanId;
use planledger_domain::metrics::{GoalProgress, RollUp};
use planledger_domain::plan::{Goal, Plan};
use planledger_projections::progress::{ProgressView, progress_view};
use planledger_store::{LogReader, LogView, Position, ReadDirection, StoreOptions, Version};

/// The point `--until` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// The end of the log (no `--until`).
    End,
    /// As recorded by this time.
    Time(Timestamp),
    /// After the plan's N-th event.
    Version(u64),
    /// As of this global position.
    Position(u64),
}

impl FromStr for Until {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |kind: &str, digits: &str| {
            digits.parse::<u64>().map_err(|_| {
                format!("{kind}:{digits} needs a whole number after the colon, e.g. {kind}:12")
            })
        };
        if let Some(digits) = text.strip_prefix("version:") {
            return number("version", digits).map(Self::Version);
        }
        if let Some(digits) = text.strip_prefix("position:") {
            return number("position", digits).map(Self::Position);
        }
        text.parse::<Timestamp>().map(Self::Time).map_err(|e| {
            format!(
                "{text:?} is neither an RFC 3339 time (e.g. 2026-11-25T12:00:00Z: {e}) nor version:N nor position:P"
            )
        })
    }
}

impl Until {
    fn state_at(self) -> StateAt {
        match self {
            Self::End => StateAt::Current,
            Self::Time(time) => StateAt::Time(time),
            Self::Version(version) => StateAt::Version(version),
            Self::Position(position) => StateAt::Position(position),
        }
    }
}

/// Runs `replay --plan`.
pub fn run(data_dir: &Path, plan: &str, until: Until, json: bool) -> Result<()> {
    let (tenant, plan_id) = parse_plan(plan)?;
    let log_dir = data_dir.join("log");
    let reader = LogReader::open(&log_dir, &StoreOptions::default())
        .with_context(|| format!("opening the event log in {} to read", log_dir.display()))?;
    let view = reader.view();
    let replayed = replay(&view, tenant, &plan_id, until)?;
    let mut out = String::new();
    if json {
        out = serde_json::to_string_pretty(&replayed.json()?)?;
        out.push('\n');
    } else {
        render(&mut out, tenant, &replayed)?;
    }
    print!("{out}");
    Ok(())
}

/// `TENANT/PLAN`, split at the last slash (plan ids hold none).
fn parse_plan(plan: &str) -> Result<(&str, PlanId)> {
    let (tenant, id) = plan
        .rsplit_once('/')
        .filter(|(tenant, id)| !tenant.is_empty() && !id.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "--plan {plan:?} must name a tenant and a plan as TENANT/PLAN, e.g. acme/q3-plan"
            )
        })?;
    let plan_id = PlanId::new(id).map_err(|e| anyhow!("--plan {plan:?}: {e}"))?;
    Ok((tenant, plan_id))
}

/// A plan as it stood, and its figures at that instant.
struct Replayed {
    state: PlanState,
    /// The instant the figures are evaluated at: the time asked for, else when the log recorded
    /// the event at the state's position.
    evaluated_at: Timestamp,
    progress: ProgressView,
}

impl Replayed {
    /// The body of `GET /v1/plans/{id}` at that point, plus `evaluated_at` and `progress`.
    fn json(&self) -> Result<serde_json::Value> {
        let mut body = serde_json::json!({
            "plan_id": self.state.plan_id.to_string(),
            "version": self.state.version,
        });
        if let Some(position) = self.state.as_of_position {
            body["as_of_position"] = position.into();
        }
        body["state"] = serde_json::to_value(&*self.state.plan)?;
        body["evaluated_at"] = serde_json::to_value(self.evaluated_at)?;
        body["progress"] = serde_json::to_value(&self.progress)?;
        Ok(body)
    }
}

fn replay(view: &LogView<'_>, tenant: &str, plan_id: &PlanId, until: Until) -> Result<Replayed> {
    let state = plan_state_in(view, tenant, plan_id, until.state_at())
        .with_context(|| format!("replaying {tenant}/{plan_id}"))?;
    let stream = stream_of(tenant, plan_id)?;
    let recorded_at = |position: Position| -> Result<Option<Timestamp>> {
        Ok(view.read_position(position)?.map(|e| e.recorded_at))
    };
    let evaluated_at = match until {
        Until::Time(time) => Some(time),
        Until::Version(version) => view
            .read_stream(&stream, Version(version), ReadDirection::Forward, 1)?
            .first()
            .map(|e| e.recorded_at),
        Until::Position(position) => recorded_at(Position(position).min(view.last_position()))?,
        Until::End => recorded_at(view.last_position())?,
    }
    .ok_or_else(|| anyhow!("the log holds no event at the point asked for"))?;
    let progress = progress_view(
        &state.plan,
        plan_id,
        evaluated_at,
        RollUp::Weighted,
        None,
        None,
    )?;
    Ok(Replayed {
        state,
        evaluated_at,
        progress,
    })
}

/// Formats a ratio in [0, 1] (or any figure) with two decimals; `-` when undefined.
fn figure(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn text<T: AsRef<str>>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.as_ref().to_owned())
}

/// Rows under `headers`, each column as wide as its widest cell.
fn table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(out, &mut headers.iter().copied());
    for row in rows {
        line(out, &mut row.iter().map(String::as_str));
    }
}

fn render(out: &mut String, tenant: &str, replayed: &Replayed) -> Result<()> {
    let plan = &replayed.state.plan;
    let report = &replayed.progress.report;
    let position = replayed
        .state
        .as_of_position
        .map(|p| format!(", as of position {p}"))
        .unwrap_or_default();
    writeln!(
        out,
        "Plan {tenant}/{} \"{}\" at version {}{position} (figures as of {})",
        replayed.state.plan_id, plan.title, replayed.state.version, replayed.evaluated_at
    )?;
    writeln!(
        out,
        "horizon {} to {}, check-ins every {} days (grace {}){}",
        plan.starts_on,
        plan.ends_on,
        plan.checkin_cadence_days,
        plan.checkin_grace_days,
        plan.archived_at
            .map(|at| format!(", archived {at}"))
            .unwrap_or_default()
    )?;
    writeln!(
        out,
        "progress {} (expected {}), status {}, SPI {}, schedule slip {} days\n",
        figure(report.progress),
        figure(report.expected_progress),
        text(report.status.map(|s| s.as_str())),
        figure(report.spi),
        figure(report.schedule_slip_days),
    )?;

    let rows_by_goal: BTreeMap<&str, &GoalProgress> = report
        .goals
        .iter()
        .map(|row| (row.goal_id.as_str(), row))
        .collect();
    let mut goal_rows = Vec::new();
    for goal in plan.root_goals() {
        goal_tree(plan, goal, 0, &rows_by_goal, &mut goal_rows);
    }
    writeln!(out, "Goals")?;
    if goal_rows.is_empty() {
        writeln!(out, "(none)")?;
    } else {
        table(
            out,
            &[
                "GOAL",
                "TITLE",
                "CURRENT",
                "TARGET",
                "DUE",
                "WEIGHT",
                "PROGRESS",
                "EXPECTED",
                "STATUS",
                "REPORTED",
                "OUTCOME",
                "ACCOUNTABLE",
            ],
            &goal_rows,
        );
    }

    writeln!(out, "\nSteps")?;
    let steps: Vec<Vec<String>> = plan
        .steps
        .values()
        .map(|step| {
            vec![
                step.step_id.to_string(),
                step.goal_id.to_string(),
                step.title.clone(),
                step.due.to_string(),
                match step.completed_at {
                    Some(at) => format!("done {at}"),
                    None => "open".to_owned(),
                },
            ]
        })
        .collect();
    if steps.is_empty() {
        writeln!(out, "(none)")?;
    } else {
        table(out, &["STEP", "GOAL", "TITLE", "DUE", "STATE"], &steps);
    }

    writeln!(out, "\nRoles")?;
    let roles: Vec<Vec<String>> = plan
        .roles
        .iter()
        .map(|role| {
            vec![
                role.person.to_string(),
                role.role.as_str().to_owned(),
                role.subject().to_string(),
                role.assigned_at.to_string(),
            ]
        })
        .collect();
    if roles.is_empty() {
        writeln!(out, "(none)")?;
    } else {
        table(out, &["PERSON", "ROLE", "ON", "SINCE"], &roles);
    }
    Ok(())
}

/// One row per goal under `goal` (itself first), indented by depth.
fn goal_tree(
    plan: &Plan,
    goal: &Goal,
    depth: usize,
    rows_by_goal: &BTreeMap<&str, &GoalProgress>,
    out: &mut Vec<Vec<String>>,
) {
    let row = rows_by_goal.get(goal.goal_id.as_str());
    let subject = planledger_domain::plan::RoleSubject::Goal(goal.goal_id.clone());
    let accountable: Vec<String> = plan
        .holders(planledger_domain::plan::Role::Accountable, &subject)
        .map(ToString::to_string)
        .collect();
    let target = goal
        .kpi
        .as_ref()
        .map(|kpi| format!("{} {}", kpi.target, kpi.unit));
    out.push(vec![
        format!("{}{}", "  ".repeat(depth), goal.goal_id),
        goal.title.clone(),
        figure(row.and_then(|r| r.current_value)),
        text(target),
        goal.due.to_string(),
        format!("{}", goal.weight),
        figure(row.and_then(|r| r.progress)),
        figure(row.map(|r| r.expected_progress)),
        text(row.and_then(|r| r.status).map(|s| s.as_str())),
        text(row.and_then(|r| r.reported_status).map(|s| s.as_str())),
        text(goal.outcome().map(|o| o.as_str())),
        if accountable.is_empty() {
            "-".to_owned()
        } else {
            accountable.join(", ")
        },
    ]);
    // The tree is acyclic (decide refuses a parent that would close a loop), and its depth is
    // bounded by the number of goals.
    if depth < plan.goals.len() {
        for child in plan.children_of(&goal.goal_id) {
            goal_tree(plan, child, depth + 1, rows_by_goal, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_reads_times_versions_and_positions() {
        assert_eq!("version:12".parse::<Until>(), Ok(Until::Version(12)));
        assert_eq!("position:7".parse::<Until>(), Ok(Until::Position(7)));
        assert_eq!(
            "2026-11-25T12:00:00Z".parse::<Until>(),
            Ok(Until::Time(
                "2026-11-25T12:00:00Z".parse().expect("a valid time")
            ))
        );
        let error = "version:x".parse::<Until>().expect_err("not a number");
        assert!(error.contains("version:12"), "{error}");
        let error = "yesterday".parse::<Until>().expect_err("not a time");
        assert!(error.contains("RFC 3339"), "{error}");
    }

    #[test]
    fn a_plan_is_named_tenant_slash_plan() {
        let (tenant, plan) = parse_plan("acme/q3-plan").expect("valid");
        assert_eq!((tenant, plan.as_str()), ("acme", "q3-plan"));
        assert!(parse_plan("q3-plan").is_err());
        assert!(parse_plan("acme/").is_err());
        assert!(parse_plan("acme/bad id").is_err());
    }
}

//! The progress read model: per plan and goal, progress against the current and the baseline
//! target, expected progress, computed vs reported status, SPI and schedule slip, last check-in,
//! confidence trend, and momentum.
//!
//! Stored facts: the evolved plan per stream. Figures are computed at query time for the time
//! asked (`now`, or a past instant) by the domain's formulas, never frozen at event time.

use jiff::Timestamp;
use planledger_domain::metrics::{
    DriftReport, ForecastBacktest, Momentum, ProgressHistory, ProgressReport, RollUp, drift_report,
    momentum, progress_history, progress_report, progress_report_against, progress_report_with,
};
use planledger_domain::{DomainError, Plan, PlanId};
use serde::Serialize;

use crate::projector::{IndexChange, ProjectedEvent, Projector, fold};

/// The progress projector.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProgressProjector;

impl Projector for ProgressProjector {
    fn name(&self) -> &'static str {
        "progress"
    }

    fn apply(&self, plan: &mut Plan, event: &ProjectedEvent<'_>, _index: &mut Vec<IndexChange>) {
        fold(plan, event.event);
    }
}

/// A plan's progress report with its momentum.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressView {
    /// The domain's progress report (plan and goal rows).
    #[serde(flatten)]
    pub report: ProgressReport,
    /// Momentum: activity per active goal per week, last four weeks vs the first four.
    pub momentum: Momentum,
}

/// Progress of `plan` as of `now` under `rule`, compared with the baseline `baseline` (the
/// first baseline when `None`), with `backtest` as its forecast back-test when the caller
/// kept it (it must be the plan's as of `now`), else computed.
pub fn progress_view(
    plan: &Plan,
    plan_id: &PlanId,
    now: Timestamp,
    rule: RollUp,
    baseline: Option<&str>,
    backtest: Option<ForecastBacktest>,
) -> Result<ProgressView, DomainError> {
    let mut report = match (backtest, baseline) {
        (Some(backtest), baseline) => progress_report_with(plan, now, rule, baseline, backtest)?,
        (None, Some(label)) => progress_report_against(plan, now, rule, label)?,
        (None, None) => progress_report(plan, now, rule),
    };
    report.plan_id.get_or_insert_with(|| plan_id.clone());
    let mut momentum = momentum(plan, now);
    momentum.plan_id.get_or_insert_with(|| plan_id.clone());
    Ok(ProgressView { report, momentum })
}

/// Drift of `plan` against the baseline `label` as of `now`.
pub fn drift_view(
    plan: &Plan,
    plan_id: &PlanId,
    label: &str,
    now: Timestamp,
) -> Result<DriftReport, DomainError> {
    let mut report = drift_report(plan, label, now)?;
    report.plan_id.get_or_insert_with(|| plan_id.clone());
    Ok(report)
}

/// Each goal's progress history as of `now`, against the baseline `baseline` (the first
/// baseline when `None`; no baseline line when the plan has none).
pub fn history_view(
    plan: &Plan,
    plan_id: &PlanId,
    now: Timestamp,
    baseline: Option<&str>,
) -> Result<ProgressHistory, DomainError> {
    let against = match baseline {
        Some(label) => {
            Some(
                plan.baselines
                    .get(label)
                    .ok_or_else(|| DomainError::UnknownBaseline {
                        label: label.to_owned(),
                    })?,
            )
        }
        None => plan.first_baseline(),
    };
    let mut history = progress_history(plan, now, against);
    history.plan_id.get_or_insert_with(|| plan_id.clone());
    Ok(history)
}

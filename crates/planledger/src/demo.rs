//! `planledger demo`: seeds a small plan (once), prints a token and curl lines, then serves.

use anyhow::{Context, Result};
use planledger_app::{App, CommandRequest, Principal, Role};
use planledger_domain::{Command, PlanId};
use serde_json::json;

use crate::config::{Config, ServeArgs};

/// Tenant of the demo plan.
pub const DEMO_TENANT: &str = "demo";
/// Id of the demo plan.
pub const DEMO_PLAN: &str = "launch-2027";

/// The demo plan's commands, each with the day it was decided (days from `today`): a plan that
/// started three weeks ago with its goals, steps and owners, checked in on since. Each command
/// is decided on the day its story tells (a check-in on the day it describes, but one told two
/// days late), so its goals' clocks start with the plan and the seeded plan shows the expected
/// progress of its dates.
pub fn demo_commands(today: jiff::civil::Date) -> Vec<(i64, serde_json::Value)> {
    let day = |offset: i64| {
        today
            .checked_add(jiff::Span::new().days(offset))
            .unwrap_or(today)
            .to_string()
    };
    vec![
        (
            -21,
            json!({"type": "CreatePlan", "data": {
            "title": "Launch the self-serve plan", "outcome": "Small teams sign up without sales",
            "starts_on": day(-21), "ends_on": day(70), "checkin_cadence_days": 7, "checkin_grace_days": 2}}),
        ),
        (
            -21,
            json!({"type": "DefineGoal", "data": {
            "goal_id": "signups", "title": "Reach 500 weekly self-serve signups",
            "kpi": {"unit": "signups/week", "baseline": 40.0, "target": 500.0, "direction": "increase"},
            "due": day(60), "weight": 2.0}}),
        ),
        (
            -21,
            json!({"type": "DefineGoal", "data": {
            "goal_id": "checkout", "title": "Ship the new checkout", "due": day(30)}}),
        ),
        (
            -21,
            json!({"type": "AddStep", "data": {
            "step_id": "pricing-page", "goal_id": "checkout", "title": "Publish the pricing page", "due": day(-3)}}),
        ),
        (
            -21,
            json!({"type": "AddStep", "data": {
            "step_id": "card-payments", "goal_id": "checkout", "title": "Accept card payments", "due": day(14)}}),
        ),
        (
            -21,
            json!({"type": "AssignRole", "data": {"person": "ana", "role": "accountable", "goal_id": "signups"}}),
        ),
        (
            -21,
            json!({"type": "AssignRole", "data": {"person": "ben", "role": "responsible", "goal_id": "checkout"}}),
        ),
        (
            -21,
            json!({"type": "AssignRole", "data": {"person": "ana", "role": "accountable", "goal_id": "checkout"}}),
        ),
        (
            -21,
            json!({"type": "SetBaseline", "data": {"label": "kickoff"}}),
        ),
        (
            -14,
            json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups", "value": 70.0, "confidence": 0.75, "status": "on_track",
            "effective_on": day(-14)}}),
        ),
        (
            -7,
            json!({"type": "RecordCheckIn", "data": {
            "goal_id": "checkout", "confidence": 0.8, "status": "on_track", "effective_on": day(-7)}}),
        ),
        // Told two days late: it restates the figures of the days before it was told.
        (
            -5,
            json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups", "value": 85.0, "confidence": 0.65, "status": "at_risk",
            "effective_on": day(-7)}}),
        ),
        (
            -3,
            json!({"type": "CompleteStep", "data": {"step_id": "pricing-page"}}),
        ),
        (
            0,
            json!({"type": "RecordCheckIn", "data": {
            "goal_id": "signups", "value": 95.0, "confidence": 0.6, "status": "at_risk",
            "note": "Paid ads paused", "blockers": ["ad budget not approved"]}}),
        ),
        (
            0,
            json!({"type": "AdjustGoal", "data": {
            "goal_id": "signups", "target": 350.0,
            "reason": "Ad budget cut for the quarter: 350 is what organic sign-ups can reach"}}),
        ),
    ]
}

/// The dashboard's address that signs in with `token` and opens the demo plan. The token is in
/// the fragment, which browsers never send, so it stays out of request logs.
pub fn dashboard_url(base: &str, token: &str) -> String {
    format!("{base}/ui/#token={token}&plan={DEMO_PLAN}")
}

/// Seeds the demo plan if it does not exist yet.
pub async fn seed(app: &App) -> Result<()> {
    let principal = Principal {
        subject: "demo-seed".into(),
        tenant: DEMO_TENANT.into(),
        roles: vec![Role::Admin],
    };
    let plan_id = PlanId::new(DEMO_PLAN).context("demo plan id")?;
    let exists = app
        .queries
        .plan_state(&principal, &plan_id, planledger_app::StateAt::Current)
        .is_ok();
    if exists {
        return Ok(());
    }
    let now = jiff::Timestamp::now();
    let today = planledger_domain::calendar::utc_date(now);
    let mut last_decided = None;
    for (n, (offset, body)) in demo_commands(today).into_iter().enumerate() {
        let command: Command =
            serde_json::from_value(body).context("demo command is valid JSON")?;
        // The same time of day, `offset` days before: on the UTC day the story tells.
        let decided = now
            .checked_sub(jiff::SignedDuration::from_hours(-24 * offset))
            .context("the demo's decision days are in range")?;
        assert!(
            last_decided.is_none_or(|last| last <= decided),
            "the demo's commands are listed in the order they were decided"
        );
        last_decided = Some(decided);
        app.commands
            .execute_decided_at(
                &principal,
                CommandRequest {
                    command_id: Some(format!("demo-seed-{n}")),
                    correlation_id: Some("demo-seed".into()),
                    ..CommandRequest::new(plan_id.clone(), command)
                },
                Some(decided),
            )
            .await
            .with_context(|| format!("seeding demo command {n}"))?;
    }
    Ok(())
}

/// Runs the demo: seed, print how to talk to it, serve.
pub async fn run(args: ServeArgs) -> Result<()> {
    let prelude: crate::serve::Prelude = Box::new(|app: App, config: Config| {
        Box::pin(async move {
            seed(&app).await?;
            let token = app.auth.issue(
                "you",
                DEMO_TENANT,
                vec![Role::Planner, Role::Auditor],
                jiff::Timestamp::now(),
                7 * 86_400,
            )?;
            let base = format!("http://{}", config.listen);
            println!();
            println!("Planledger demo: plan '{DEMO_PLAN}' in tenant '{DEMO_TENANT}' is seeded.");
            println!();
            println!(
                "Dashboard (signs in with the token below; it stays in the address's fragment, never sent):"
            );
            println!();
            println!("  {}", dashboard_url(&base, &token));
            println!();
            println!("A token (planner + auditor, 7 days):");
            println!();
            println!("  export TOKEN={token}");
            println!();
            println!("Try:");
            println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {base}/v1/plans/{DEMO_PLAN}");
            println!(
                "  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' -X POST {base}/v1/plans/{DEMO_PLAN}/commands -d '{{\"type\":\"RecordCheckIn\",\"data\":{{\"goal_id\":\"signups\",\"value\":140,\"confidence\":0.7}}}}'"
            );
            println!(
                "  curl -s -H \"Authorization: Bearer $TOKEN\" {base}/v1/plans/{DEMO_PLAN}/events"
            );
            println!();
            Ok(())
        })
    });
    crate::serve::run(args, Some(prelude)).await
}

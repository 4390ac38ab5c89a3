//! The `/ui` dashboard in real headless Chromium (the system's `chromium`, driven by Playwright
//! for Python from `.tools/`; `just setup` installs both, and no browser is downloaded).
//!
//! `tests/python/dashboard.py` signs in through the address `planledger demo` prints, opens the
//! demo plan, records a check-in through the API and waits for the live feed and the goal's
//! progress to follow without a reload, moves the time slider back to the version before the
//! target change, filters the audit trail by actor, checks the page at phone width, signs in as a
//! viewer (the audit panel and the live feed show the API's 403, the slider moves by time), checks
//! the problems shown for an unknown plan and a refused token, and that every request stayed on
//! the service. Screenshots are kept in a directory whose path is printed.
//!
//! `tests/python/large_plan.py` moves the time slider over a plan of 20,000 events and prints the
//! time from each move to the redrawn page.

use std::path::PathBuf;
use std::process::Command;

use planledger_e2e::server::Planledger;
use planledger_e2e::workspace_root;

/// The system Chromium: `$PLANLEDGER_CHROMIUM`, else the Debian package's binary.
pub(crate) fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PLANLEDGER_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn dashboard_signs_in_follows_live_changes_travels_in_time_and_filters_the_trail() {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium at /usr/bin/chromium (or $PLANLEDGER_CHROMIUM); `just setup` installs Debian's chromium as root"
        );
        return;
    };
    let python = python_with_playwright();

    let server = Planledger::start_demo();
    let printed = server.output();
    let url = printed
        .split_whitespace()
        .find(|word| word.contains("/ui/#token="))
        .unwrap_or_else(|| panic!("`planledger demo` printed no dashboard address:\n{printed}"))
        .to_owned();
    assert!(url.starts_with(&server.base_url), "{url}");

    let shots = tempfile::Builder::new()
        .prefix("planledger-dashboard-")
        .tempdir()
        .expect("a directory for the screenshots")
        .keep();
    let output = Command::new(&python)
        .arg(workspace_root().join("tests/python/dashboard.py"))
        .arg(&chromium)
        .arg(&url)
        .arg(&shots)
        .env(
            "PLANLEDGER_CONTRIBUTOR_TOKEN",
            server.token("demo", "ana", "contributor"),
        )
        .env(
            "PLANLEDGER_AUDITOR_TOKEN",
            server.token("demo", "audit", "auditor"),
        )
        .env(
            "PLANLEDGER_VIEWER_TOKEN",
            server.token("demo", "vic", "viewer"),
        )
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .output()
        .expect("run tests/python/dashboard.py");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("screenshots: {}", shots.display());
    assert!(
        output.status.success(),
        "the browser test failed ({}); service log:\n{}",
        output.status,
        server.log()
    );
}

/// The tools' Python, which must have Playwright when a Chromium is there to drive.
pub(crate) fn python_with_playwright() -> PathBuf {
    let python = workspace_root().join(".tools/bin/python");
    let has_playwright = Command::new(&python)
        .args(["-c", "import playwright"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_playwright,
        "{} cannot import playwright: run `just setup`",
        python.display()
    );
    python
}

/// Events in the large plan the slider test seeds.
const LARGE_PLAN_EVENTS: u64 = 20_000;

/// The time slider on a plan of 20,000 events (`tests/python/large_plan.py`): each move redraws
/// the page at the version it names, and a drag faster than the page's debounce ends on its last
/// move. It prints, and does not assert, the time from a move to the redrawn page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_plans_time_slider_redraws_the_page_at_each_version_it_is_moved_to() {
    use futures::StreamExt;
    use serde_json::json;

    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium at /usr/bin/chromium (or $PLANLEDGER_CHROMIUM); `just setup` installs Debian's chromium as root"
        );
        return;
    };
    let python = python_with_playwright();
    let server = Planledger::start(&["--rate-limit-per-second", "0"]);
    let planner = server.token("acme", "pat", "planner");
    let client = planledger_e2e::client::Client::new();
    let plan = "big";
    let goals = 20;
    let today = planledger_e2e::client::today_plus;
    client
        .command(
            &server,
            &planner,
            plan,
            json!({"type": "CreatePlan", "data": {
                "title": "A plan of many check-ins", "starts_on": today(-60),
                "ends_on": today(300), "checkin_cadence_days": 7}}),
        )
        .await;
    for goal in 0..goals {
        client
            .command(
                &server,
                &planner,
                plan,
                json!({"type": "DefineGoal", "data": {
                    "goal_id": format!("g{goal}"), "title": format!("Goal {goal}"),
                    "due": today(200),
                    "kpi": {"unit": "units", "baseline": 0.0, "target": 1000.0,
                            "direction": "increase"}}}),
            )
            .await;
    }
    // Check-ins, a few at a time. One plan: the service appends them one version after the
    // other and retries a lost race once, so a 409 is sent again, as a client would.
    let check_ins = LARGE_PLAN_EVENTS - 1 - goals;
    let http = reqwest::Client::new();
    let url = server.url(&format!("/v1/plans/{plan}/commands"));
    futures::stream::iter(0..check_ins)
        .for_each_concurrent(4, |n| {
            let (http, url, planner) = (&http, &url, &planner);
            async move {
                let body = json!({"type": "RecordCheckIn", "data": {
                    "goal_id": format!("g{}", n % goals),
                    "value": (n / goals) as f64 % 1000.0,
                    "confidence": 0.5 + (n % 5) as f64 / 10.0}});
                loop {
                    let response = http
                        .post(url)
                        .bearer_auth(planner)
                        .header("Idempotency-Key", format!("seed-{n}"))
                        .json(&body)
                        .send()
                        .await
                        .expect("a check-in is sent");
                    match response.status() {
                        reqwest::StatusCode::OK => break,
                        reqwest::StatusCode::CONFLICT => continue,
                        status => panic!("check-in {n}: {status} {:?}", response.text().await),
                    }
                }
            }
        })
        .await;

    let shots = tempfile::Builder::new()
        .prefix("planledger-large-plan-")
        .tempdir()
        .expect("a directory for the screenshots")
        .keep();
    let output = tokio::task::spawn_blocking({
        let (python, base) = (python.clone(), server.base_url.clone());
        let auditor = server.token("acme", "audit", "auditor");
        let shots = shots.clone();
        move || {
            Command::new(&python)
                .arg(workspace_root().join("tests/python/large_plan.py"))
                .arg(&chromium)
                .arg(&base)
                .arg(plan)
                .arg(&shots)
                .env("PLANLEDGER_AUDITOR_TOKEN", auditor)
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
                .output()
                .expect("run tests/python/large_plan.py")
        }
    })
    .await
    .expect("the browser script's thread");
    println!("{}", String::from_utf8_lossy(&output.stdout));
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    println!("screenshots: {}", shots.display());
    assert!(
        output.status.success(),
        "the large-plan browser test failed ({}); service log:\n{}",
        output.status,
        server.log()
    );
}

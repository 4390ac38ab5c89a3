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

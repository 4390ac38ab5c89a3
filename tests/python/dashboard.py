"""Drives the /ui dashboard in headless Chromium (Playwright for Python, the system browser).

Usage: dashboard.py CHROMIUM DASHBOARD_URL OUT_DIR
Environment: PLANLEDGER_CONTRIBUTOR_TOKEN (records a check-in), PLANLEDGER_AUDITOR_TOKEN (reads the
plan's figures and trail to know what to expect) and PLANLEDGER_VIEWER_TOKEN (signs in without the
auditor role).

Every expectation is read from the API, never written into this script. Exits non-zero with a
message on the first failed expectation; prints the first-render time and the screenshots.
"""

import os
import sys
import tempfile
import urllib.parse
import urllib.request

from playwright.sync_api import sync_playwright

PLAN = "launch-2027"
from browser import (
    api,
    check,
    check_only_the_service,
    launch,
    pct,
    run,
    wait_until,
    watched_page,
)


def main():
    chromium, dashboard_url, out_dir = sys.argv[1:4]
    contributor = os.environ["PLANLEDGER_CONTRIBUTOR_TOKEN"]
    auditor = os.environ["PLANLEDGER_AUDITOR_TOKEN"]
    viewer = os.environ["PLANLEDGER_VIEWER_TOKEN"]
    parts = urllib.parse.urlsplit(dashboard_url)
    base = f"{parts.scheme}://{parts.netloc}"
    requested = []

    with sync_playwright() as p, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        context = launch(p, profile, chromium)
        page, console_errors = watched_page(context, requested)

        # Sign in through the address `planledger demo` prints, straight onto the plan page.
        page.goto(dashboard_url)
        page.wait_for_selector("table.goals tbody tr[data-goal='signups']")
        first_render_ms = page.evaluate(
            "performance.getEntriesByName('planledger-plan-rendered')[0].startTime"
        )
        print(f"first render of the demo plan: {first_render_ms:.0f} ms after navigation start")
        check("token=" not in page.url, f"the token stays in the address bar: {page.url}")
        page.wait_for_selector("svg[role='img']")
        wait_until(page, "() => document.getElementById('feed-state').textContent.startsWith('Connected')")
        page.screenshot(path=f"{out_dir}/plan.png", full_page=True)
        page.screenshot(path=f"{out_dir}/plan-viewport.png")

        progress = api(base, auditor, f"/v1/plans/{PLAN}/progress")
        signups = next(g for g in progress["goals"] if g["goal_id"] == "signups")
        cell = page.locator("tr[data-goal='signups'] .goal-target .target")
        check(
            cell.inner_text() == f"{signups['target']:g}",
            f"target shown {cell.inner_text()!r}, the API says {signups['target']}",
        )
        # The goal row's completion forecast is the API's (three values told: a trend).
        forecast = signups["forecast"]
        check(forecast["kind"] == "trend", f"signups should have a trend forecast: {forecast}")
        shown = page.locator("tr[data-goal='signups'] .forecast-p85").inner_text()
        check(
            shown == (forecast["p85"] or "never"),
            f"P85 shown {shown!r}, the API says {forecast['p85']}",
        )

        # A check-in through the API: the feed shows it and the goal's progress follows, with
        # no reload (a value set on the window survives).
        page.evaluate("window.__not_reloaded = true")
        feed_items = page.locator("#feed li", has_text="CheckInRecorded").count()
        before = page.locator("tr[data-goal='signups'] .progress-value").inner_text()
        reply = api(
            base,
            contributor,
            f"/v1/plans/{PLAN}/commands",
            {"type": "RecordCheckIn", "data": {"goal_id": "signups", "value": 240, "confidence": 0.7}},
        )
        after = api(
            base, auditor, f"/v1/plans/{PLAN}/progress?min_position={reply['position']}"
        )
        wanted = pct(next(g for g in after["goals"] if g["goal_id"] == "signups")["progress"])
        check(wanted != before, f"the check-in should change progress (was {before})")
        wait_until(
            page,
            "n => [...document.querySelectorAll('#feed li')].filter(li => li.textContent.includes('CheckInRecorded')).length > n",
            feed_items,
        )
        wait_until(
            page,
            "w => document.querySelector(\"tr[data-goal='signups'] .progress-value\")?.textContent === w",
            wanted,
        )
        check(page.evaluate("window.__not_reloaded === true"), "the page was reloaded")
        print(f"live update: signups progress {before} -> {wanted} without reload")

        # The time slider, moved back with the keyboard to the version before the target change.
        events = api(base, auditor, f"/v1/plans/{PLAN}/events?limit=1000")["events"]
        adjusted = next(e for e in events if e["type"] == "GoalAdjusted")
        older = adjusted["version"] - 1
        old_target = adjusted["data"]["target"]["before"]
        wait_until(page, "n => document.getElementById('time').max === String(n)", len(events))
        slider = page.locator("#time")
        slider.focus()
        for _ in range(len(events) - older):
            page.keyboard.press("ArrowLeft")
        wait_until(
            page, "v => document.getElementById('as-of-version')?.textContent === 'version ' + v", older
        )
        wait_until(
            page,
            "t => document.querySelector(\"tr[data-goal='signups'] .goal-target .target\")?.textContent === t",
            f"{old_target:g}",
        )
        readout = page.locator("#time-out").inner_text()
        check(f"version {older}" in readout and "position" in readout, f"readout {readout!r}")
        print(f"time slider: {readout} shows target {old_target:g}")
        page.screenshot(path=f"{out_dir}/plan-as-of.png", full_page=True)
        page.click("#live")
        wait_until(
            page,
            "v => document.getElementById('as-of-version')?.textContent === 'version ' + v",
            len(events),
        )

        # The audit trail, filtered by actor; each row's hash is the event's.
        page.click("#tab-audit")
        page.wait_for_selector("table.audit tbody tr")
        actor = next(e["actor"] for e in events if e["type"] == "CheckInRecorded" and e["actor"] != "demo-seed")
        by_actor = [e for e in events if e["actor"] == actor]
        page.select_option("#audit-filters select[name='actor']", actor)
        wait_until(
            page, "n => document.querySelectorAll('table.audit tbody tr').length === n", len(by_actor)
        )
        actors = page.locator("table.audit td.actor").all_inner_texts()
        check(set(actors) == {actor}, f"filtered actors {actors}")
        # Below the trail, the plan's restatements: the demo's check-ins told about past days.
        restated = api(base, auditor, f"/v1/plans/{PLAN}/restatements")["restatements"]
        check(restated, "the demo's back-dated check-ins should be restatements")
        check(all(r["reported_by"] for r in restated), f"an auditor sees who told them: {restated}")
        wait_until(
            page,
            "n => new Set([...document.querySelectorAll('table.restatements tbody tr[data-checkin]')].map(r => r.dataset.checkin)).size === n",
            len(restated),
        )
        print(f"restatements: {len(restated)} check-ins told after the day they describe")
        hashes = page.locator("table.audit code.hash").all_inner_texts()
        check(hashes == [e["hash"] for e in by_actor], "hashes differ from the trail's")
        page.screenshot(path=f"{out_dir}/audit.png", full_page=True)
        print(f"audit trail: {len(by_actor)} of {len(events)} events by {actor}")

        # Every other tab renders without a problem for this token.
        for tab in ["accountability", "agility", "drift"]:
            page.click(f"#tab-{tab}")
            page.wait_for_selector(f"#panel-{tab} .cards")
            check(page.locator(f"#panel-{tab} .problem").count() == 0, f"{tab} shows a problem")

        # Phone width: nothing wider than the screen.
        page.set_viewport_size({"width": 390, "height": 844})
        page.click("#tab-goals")
        page.wait_for_selector("table.goals tbody tr[data-goal='signups']")
        width = page.evaluate("document.documentElement.scrollWidth")
        check(width <= 390, f"the page is {width} px wide at a 390 px viewport")
        page.screenshot(path=f"{out_dir}/plan-phone.png", full_page=True)

        # A viewer: the panels that need the auditor role show the API's refusal, and the time
        # slider moves by time instead of by version.
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{base}/ui/#token={viewer}&plan={PLAN}")
        page.reload()
        page.wait_for_selector("table.goals tbody tr[data-goal='signups']")
        wait_until(page, "() => document.querySelector('#feed-state .problem') !== null")
        wait_until(page, "() => document.getElementById('time-note').textContent.includes('100 steps')")
        page.click("#tab-audit")
        page.wait_for_selector("#panel-audit .problem")
        text = page.locator("#panel-audit .problem").inner_text()
        check("auditor" in text and "403" in text, f"the audit panel for a viewer shows {text!r}")
        print(f"viewer: audit trail refused with {text!r}")

        # API problems are shown as their detail: an unknown plan, then a token the service refuses.
        page.goto(f"{base}/ui/#/plans/no-such-plan")
        page.wait_for_selector(".problem")
        text = page.locator(".problem").first.inner_text()
        check("does not exist" in text, f"unknown plan shows {text!r}")
        page.evaluate("sessionStorage.setItem('planledger.token', 'not-a-token')")
        page.goto(f"{base}/ui/#/")
        page.wait_for_selector("#signin-form")
        text = page.locator(".signin .problem").inner_text()
        check(len(text) > 10 and "401" in text, f"a refused token shows {text!r}")

        check(not console_errors, f"script errors: {console_errors}")
        check_only_the_service(requested, base)
        context.close()
    print(f"screenshots in {out_dir}")


if __name__ == "__main__":
    run(main)

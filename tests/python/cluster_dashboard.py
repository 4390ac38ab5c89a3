"""Drives the /ui dashboard served by a cluster's writer node in headless Chromium (Playwright for
Python, the system browser).

Usage: cluster_dashboard.py CHROMIUM NODE_URL OUT_DIR
Environment: PLANLEDGER_ADMIN_TOKEN (signs in, reads what to expect), PLANLEDGER_CONTRIBUTOR_TOKEN
(records check-ins), PLANLEDGER_PLANS (JSON: the seeded plans, each {plan_id, partition, title}),
PLANLEDGER_PLAN_A and PLANLEDGER_PLAN_B (two of them on different partitions).

Every expected figure is read from the API, never written into this script. Exits non-zero with a
message on the first failed expectation.
"""

import json
import os
import sys
import tempfile
import urllib.parse
import urllib.request

from playwright.sync_api import sync_playwright

from browser import api, check, check_only_the_service, launch, pct, run, wait_until


def signups_progress(base, token, plan, bookmark):
    query = "?bookmark=" + urllib.parse.quote(bookmark)
    progress = api(base, token, f"/v1/plans/{plan}/progress{query}")
    return pct(next(g for g in progress["goals"] if g["goal_id"] == "signups")["progress"])


def feed_count(page, plan):
    return page.evaluate(
        "p => [...document.querySelectorAll('#feed li')].filter(li => li.textContent.includes('CheckInRecorded') && li.textContent.includes(p)).length",
        plan,
    )


def main():
    chromium, base, out_dir = sys.argv[1:4]
    admin = os.environ["PLANLEDGER_ADMIN_TOKEN"]
    contributor = os.environ["PLANLEDGER_CONTRIBUTOR_TOKEN"]
    plans = json.loads(os.environ["PLANLEDGER_PLANS"])
    plan_a = os.environ["PLANLEDGER_PLAN_A"]
    plan_b = os.environ["PLANLEDGER_PLAN_B"]
    partition = {p["plan_id"]: p["partition"] for p in plans}
    check(partition[plan_a] != partition[plan_b], "plans A and B share a partition")
    requested = []

    with sync_playwright() as p, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        context = launch(p, profile, chromium)
        page = context.new_page()
        page.on("request", lambda r: requested.append(r.url))
        errors = []
        page.on("pageerror", lambda e: errors.append(f"script error: {e}"))
        page.on("console", lambda m: m.type == "error" and errors.append(f"console error: {m.text}"))

        # The plans list: every seeded plan, whichever partition it is on.
        page.goto(f"{base}/ui/#token={admin}")
        page.wait_for_selector("table.plans tbody tr a")
        for plan in plans:
            page.wait_for_selector(f"table.plans a[href='#/plans/{plan['plan_id']}']")
        shown = page.locator("table.plans tbody tr").count()
        check(shown == len(plans), f"{shown} plans listed, {len(plans)} seeded")
        note = page.locator("main .note").first.inner_text()
        check("partition" in note, f"the list says it covers every partition: {note!r}")
        page.screenshot(path=f"{out_dir}/plans.png", full_page=True)
        print(f"plans list: {shown} plans over partitions {sorted(set(partition.values()))}")

        # Plan A's page: its panels, the live feed connected.
        page.click(f"a[href='#/plans/{plan_a}']")
        page.wait_for_selector("table.goals tbody tr[data-goal='signups']")
        wait_until(page, "() => document.getElementById('feed-state').textContent.startsWith('Connected')")
        check(page.locator("#panel-goals .problem").count() == 0, "the goals panel shows a problem")
        page.wait_for_selector("svg[role='img']")
        # The live activity starts with the recent events of every partition (?recent=20).
        recent = page.locator("#feed li").count()
        check(recent == 20, f"the live activity starts with the 20 newest events, not {recent}")
        labels = page.evaluate("() => [...document.querySelectorAll('#feed li')].map(li => li.textContent.match(/partition (\\d+)/)?.[1])")
        check(None not in labels, f"each recent event names its partition: {labels}")
        print(f"recent activity: {recent} events from partitions {sorted(set(labels))}")
        shown_before = feed_count(page, plan_a)

        # A check-in on A's partition: the feed shows it and the progress follows, no reload.
        page.evaluate("window.__not_reloaded = true")
        before = page.locator("tr[data-goal='signups'] .progress-value").inner_text()
        reply = api(
            base,
            contributor,
            f"/v1/plans/{plan_a}/commands",
            {"type": "RecordCheckIn", "data": {"goal_id": "signups", "value": 190, "confidence": 0.8}},
        )
        wanted = signups_progress(base, admin, plan_a, reply["bookmark"])
        check(wanted != before, f"the check-in should change progress (was {before})")
        wait_until(page, "p => document.querySelector('#feed li.this-plan')?.textContent.includes('partition ' + p)", partition[plan_a])
        wait_until(
            page,
            "w => document.querySelector(\"tr[data-goal='signups'] .progress-value\")?.textContent === w",
            wanted,
        )
        print(f"live update on partition {partition[plan_a]}: {plan_a} signups {before} -> {wanted}")

        # A check-in on another partition arrives in the same feed.
        api(
            base,
            contributor,
            f"/v1/plans/{plan_b}/commands",
            {"type": "RecordCheckIn", "data": {"goal_id": "signups", "value": 130, "confidence": 0.6}},
        )
        wait_until(page, "p => [...document.querySelectorAll('#feed li')].some(li => li.textContent.includes(p[0]) && li.textContent.includes('partition ' + p[1]))", [plan_b, partition[plan_b]])
        check(page.evaluate("window.__not_reloaded === true"), "the page was reloaded")
        check(feed_count(page, plan_a) == shown_before + 1, "A's new check-in is shown once")
        print(f"live feed: {plan_b}'s check-in on partition {partition[plan_b]} arrived too")
        page.screenshot(path=f"{out_dir}/plan.png", full_page=True)

        # The time slider, one version back: the whole page as of then, from the partition's log.
        events = api(base, admin, f"/v1/plans/{plan_a}/events?limit=1000")["events"]
        wait_until(page, "n => document.getElementById('time').max === String(n)", len(events))
        page.locator("#time").focus()
        page.keyboard.press("ArrowLeft")
        wait_until(
            page,
            "v => document.getElementById('as-of-version')?.textContent === 'version ' + v",
            len(events) - 1,
        )
        wait_until(
            page,
            "w => document.querySelector(\"tr[data-goal='signups'] .progress-value\")?.textContent === w",
            before,
        )
        readout = page.locator("#time-out").inner_text()
        check("of its partition" in readout, f"the readout names the partition's position: {readout!r}")
        check(page.locator("#panel-goals .problem").count() == 0, "the goals panel as of then shows a problem")
        print(f"time slider: {readout}, signups back at {before}")
        page.click("#live")
        wait_until(
            page,
            "v => document.getElementById('as-of-version')?.textContent === 'version ' + v",
            len(events),
        )

        # Every other panel renders without a problem.
        for tab in ["accountability", "agility", "drift"]:
            page.click(f"#tab-{tab}")
            page.wait_for_selector(f"#panel-{tab} .cards")
            check(page.locator(f"#panel-{tab} .problem").count() == 0, f"{tab} shows a problem")
        page.click("#tab-audit")
        page.wait_for_selector("table.audit tbody tr")
        wait_until(page, "n => document.querySelectorAll('table.audit tbody tr').length === n", len(events))
        header = page.locator("table.audit thead").text_content()
        check("of its partition" in header, f"the trail's positions are the partition's: {header!r}")
        page.wait_for_selector("table.restatements")
        check(page.locator("#panel-audit .problem").count() == 0, "the audit panel shows a problem")
        page.screenshot(path=f"{out_dir}/audit.png", full_page=True)
        print(f"panels: accountability, agility, drift and an audit trail of {len(events)} events")

        check(not errors, f"errors in the page: {errors}")
        check_only_the_service(requested, base)
        context.close()
    print(f"screenshots in {out_dir}")


if __name__ == "__main__":
    run(main)

"""The dashboard's time slider on a large plan, in headless Chromium (Playwright for Python).

Usage: large_plan.py CHROMIUM BASE_URL PLAN OUT_DIR
Environment: PLANLEDGER_AUDITOR_TOKEN (signs in; auditors move the slider by version).

Opens the plan, then moves the slider to versions spread over the plan's history and measures,
in the page, the time from each move to the redrawn page (the readout showing that version and
the goals panel drawn for it); then moves it five times faster than the page's debounce and
checks that the page settles on the last move (earlier moves and late answers dropped). Prints
the times; asserts only what the page shows.
"""

import os
import statistics
import sys
import tempfile

from playwright.sync_api import sync_playwright

from browser import api, check, check_only_the_service, launch, run, wait_until, watched_page

# Sets the slider as a drag would (an `input` event), then resolves with the milliseconds until
# the readout names the version and the goals panel was redrawn after it.
MOVE = """async ([v, expected]) => {
  const slider = document.getElementById('time');
  const panel = document.getElementById('panel-goals');
  const shown = () => document.getElementById('as-of-version')?.textContent === 'version ' + expected;
  let redrawn = false;
  const panelWatch = new MutationObserver(() => { if (shown()) redrawn = true; });
  panelWatch.observe(panel, { childList: true });
  const started = performance.now();
  slider.value = String(v);
  slider.dispatchEvent(new Event('input', { bubbles: true }));
  await new Promise((resolve) => {
    const done = () => shown() && redrawn;
    const watch = new MutationObserver(() => { if (done()) { watch.disconnect(); resolve(); } });
    watch.observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  panelWatch.disconnect();
  return performance.now() - started;
}"""

# Five moves 20 ms apart (inside the page's 120 ms debounce), then the last one's time to redraw.
DRAG = """async ([stops, last]) => {
  const slider = document.getElementById('time');
  const started = performance.now();
  for (const v of stops) {
    slider.value = String(v);
    slider.dispatchEvent(new Event('input', { bubbles: true }));
    await new Promise((r) => setTimeout(r, 20));
  }
  await new Promise((resolve) => {
    const done = () => document.getElementById('as-of-version')?.textContent === 'version ' + last;
    if (done()) return resolve();
    const watch = new MutationObserver(() => { if (done()) { watch.disconnect(); resolve(); } });
    watch.observe(document.body, { subtree: true, childList: true, characterData: true });
  });
  return performance.now() - started;
}"""


def instant(recorded_at):
    """An RFC 3339 UTC time as a key that sorts in time order (fractions padded to nanoseconds)."""
    whole, _, fraction = recorded_at.rstrip("Z").partition(".")
    return whole, fraction.ljust(9, "0")


def shown_version(trail, stop):
    """The version the page shows for slider stop `stop`: the state as recorded by that version's
    recorded_at, which includes later versions recorded in the same instant."""
    at = instant(trail[stop - 1]["recorded_at"])
    version = stop
    while version < len(trail) and instant(trail[version]["recorded_at"]) <= at:
        version += 1
    return version


def main():
    chromium, base, plan, out_dir = sys.argv[1:5]
    auditor = os.environ["PLANLEDGER_AUDITOR_TOKEN"]
    requested = []
    trail = []
    while True:
        page_of = api(base, auditor, f"/v1/plans/{plan}/events?limit=1000&from_version={len(trail) + 1}")
        trail += page_of["events"]
        if page_of["next_from_version"] is None:
            break
    versions = len(trail)
    check(versions >= 20_000, f"the plan should have 20,000 events, it has {versions}")

    with sync_playwright() as p, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        context = launch(p, profile, chromium)
        page, console_errors = watched_page(context, requested)

        page.goto(f"{base}/ui/#token={auditor}&plan={plan}")
        page.wait_for_selector("table.goals tbody tr")
        first_render_ms = page.evaluate(
            "performance.getEntriesByName('planledger-plan-rendered')[0].startTime"
        )
        # The slider has one stop per version once the whole trail is loaded.
        wait_until(page, "n => document.getElementById('time').max === String(n)", versions)
        print(f"{versions} events: first render {first_render_ms:.0f} ms after navigation start")

        # Versions spread over the history, jumping back and forth.
        stops = [versions - 1, 1_000, versions // 2, 5, versions - 2_500, 12_345, versions // 4, 19_000]
        times = []
        for stop in stops:
            expected = shown_version(trail, stop)
            ms = page.evaluate(MOVE, [stop, expected])
            readout = page.locator("#time-out").inner_text()
            check(f"version {expected} " in readout, f"moved to {stop}, the readout says {readout!r}")
            check(page.locator("#panel-goals .problem").count() == 0, f"version {stop}: a problem")
            times.append(ms)
            print(f"slider to version {stop}: redrawn in {ms:.0f} ms (120 ms of it the debounce)")
        page.screenshot(path=f"{out_dir}/large-plan-as-of.png", full_page=True)

        drag = [versions - 10, versions - 2_000, 8_000, 3_000, 777]
        last = shown_version(trail, drag[-1])
        drag_ms = page.evaluate(DRAG, [drag, last])
        # Settled on the last move: no later answer of an earlier move redraws over it.
        page.wait_for_timeout(1_000)
        readout = page.locator("#time-out").inner_text()
        check(f"version {last} " in readout, f"a fast drag should end at {last}: {readout!r}")
        print(f"a drag of {len(drag)} moves in 80 ms: the last one shown {drag_ms:.0f} ms after the first")

        print(
            "slider move to redrawn page: "
            f"p50 {statistics.median(times):.0f} ms, max {max(times):.0f} ms over {len(times)} moves"
        )
        check(not console_errors, f"script errors: {console_errors}")
        check_only_the_service(requested, base)
        context.close()


if __name__ == "__main__":
    run(main)

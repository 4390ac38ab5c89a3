"""What the dashboard's browser tests share: the API client, the page's rounding, polling the
page, expectations, and headless Chromium (Playwright for Python, the system browser)."""

import json
import math
import sys
import time
import urllib.request

TIMEOUT_MS = 15_000


def api(base, token, path, body=None):
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def pct(x):
    # As the page rounds (halves up, like Math.round), not Python's round-half-even.
    return "—" if x is None else f"{math.floor(x * 100 + 0.5)}%"


def wait_until(page, expression, arg=None):
    """Polls a JS function of `arg` until it is truthy. (Playwright's wait_for_function would
    evaluate a string inside the page, which the page's Content-Security-Policy forbids.)"""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        if page.evaluate(expression, arg):
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {expression} ({arg!r})")


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def launch(playwright, profile, chromium):
    """A headless Chromium context on the profile directory `profile`, with nothing running in
    the background that would make requests of its own."""
    context = playwright.chromium.launch_persistent_context(
        profile,
        executable_path=chromium,
        headless=True,
        args=[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(TIMEOUT_MS)
    return context


def watched_page(context, requested):
    """A new page whose requests are appended to `requested`; returns it with the list its
    script errors are collected in."""
    page = context.new_page()
    page.on("request", lambda r: requested.append(r.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return page, errors


def check_only_the_service(requested, base):
    """Every request the page made went to the service (or was a data: URL)."""
    outside = [u for u in requested if not (u.startswith(base + "/") or u.startswith("data:"))]
    check(not outside, f"requests outside the service: {outside}")
    print(f"{len(requested)} requests, all to {base}")


def run(main):
    """Runs a script's `main`, exiting 1 with the message of its first failed expectation."""
    try:
        main()
    except AssertionError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        sys.exit(1)

#!/usr/bin/env bash
# A screenshot of the Prefect UI's page of a nightly flow run, on its Artifacts tab, for docs/ (README
# links it): docs/screenshots/prefect-ui.png.
# Usage: docs/prefect-ui.sh
#          runs tests/test_prefect_worker.py with BAKEOFF_PREFECT_UI_SCREENSHOT set: the test starts its
#          own Prefect server (UI on), worker and deployment run on the CPU engine, checks them, then
#          calls this script on its server as below (needs the built llama-server: make llama-server)
#        docs/prefect-ui.sh UI_URL FLOW_RUN_ID [OUT]
#          the page of that flow run on a running server (e.g. http://127.0.0.1:4200), into OUT
# Headless Chromium loads the page; over the DevTools protocol (the websockets package Prefect
# brings) the page is given time to fetch the run, the Artifacts tab is clicked (the UI hides it
# until the run has loaded, so a ?tab= link falls back to Logs), and the page is captured.
set -euo pipefail
cd "$(dirname "$0")/.."
default_out=docs/screenshots/prefect-ui.png
if [ $# -eq 0 ]; then
  BAKEOFF_PREFECT_UI_SCREENSHOT="$PWD/$default_out" exec .venv/bin/python -m pytest -q -p no:cacheprovider \
    tests/test_prefect_worker.py
fi
[ $# -ge 2 ] || { echo "usage: docs/prefect-ui.sh [UI_URL FLOW_RUN_ID [OUT]]" >&2; exit 2; }
ui="${1%/}" run="$2" out="$(realpath -m "${3:-$default_out}")"
browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "prefect-ui: Chromium is not installed (apt-get install chromium)" >&2; exit 2; }
mkdir -p "$(dirname "$out")"
profile="$(mktemp -d)"
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --window-size=1440,1200 --remote-debugging-address=127.0.0.1 --remote-debugging-port=0 about:blank \
  >/dev/null 2>"$profile/stderr" &
browser_pid=$!
trap 'kill "$browser_pid" 2>/dev/null; wait "$browser_pid" 2>/dev/null; rm -rf "$profile"' EXIT
.venv/bin/python - "$profile/stderr" "$ui/runs/flow-run/$run" "$out" <<'EOF'
import base64, json, re, sys, time
from pathlib import Path
from urllib.request import urlopen

from websockets.sync.client import connect

stderr, url, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
deadline = time.monotonic() + 30
while not (found := re.search(r"DevTools listening on ws://([^/]+)/", stderr.read_text())):
    if time.monotonic() > deadline:
        sys.exit(f"prefect-ui: Chromium did not start: {stderr.read_text()[-500:]}")
    time.sleep(0.2)
page = next(t for t in json.load(urlopen(f"http://{found.group(1)}/json/list")) if t["type"] == "page")
with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
    ids = iter(range(1, 10**6))

    def call(method, **params):
        n = next(ids)
        ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while (msg := json.loads(ws.recv())).get("id") != n:
            pass  # an event, or the answer to an earlier call
        if "error" in msg:
            sys.exit(f"prefect-ui: {method}: {msg['error']}")
        return msg["result"]

    def js(expression):
        return call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    call("Page.navigate", url=url)
    click = """(() => { const tab = [...document.querySelectorAll('.p-tab, button, [role=tab]')]
        .find(e => e.textContent.trim() === 'Artifacts'); if (tab) { tab.click(); return true } return false })()"""
    deadline = time.monotonic() + 60
    while not js(click):
        if time.monotonic() > deadline:
            sys.exit(f"prefect-ui: no Artifacts tab on {url}")
        time.sleep(0.5)
    # the artifact cards: wait until the report's key appears, then let the page settle
    while "bakeoff-report" not in (js("document.body.innerText") or ""):
        if time.monotonic() > deadline:
            sys.exit(f"prefect-ui: the Artifacts tab of {url} shows no bakeoff-report")
        time.sleep(0.5)
    time.sleep(2)
    out.write_bytes(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
EOF
echo "$out"

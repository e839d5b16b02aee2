#!/usr/bin/env bash
# Screenshots of a report for docs/ (README links them): run after `make demo` whenever the report
# changes. Usage: docs/screenshots.sh [REPORT_HTML]  (default: the newest report under .bakeoff/runs)
# Headless Chromium prints the page once its charts have drawn; pdftoppm (poppler-utils) turns each
# page into docs/screenshots/report-N.png.
set -euo pipefail
cd "$(dirname "$0")/.."
report="${1:-$(ls -t .bakeoff/runs/*/report/report.html 2>/dev/null | head -1)}"
[ -f "$report" ] || { echo "screenshots: no report (run \`make demo\` first, or name one)" >&2; exit 2; }
browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "screenshots: Chromium is not installed (apt-get install chromium)" >&2; exit 2; }
command -v pdftoppm >/dev/null || { echo "screenshots: pdftoppm is not installed (apt-get install poppler-utils)" >&2; exit 2; }
out=docs/screenshots
mkdir -p "$out" && rm -f "$out"/report-*.png   # not prefect-ui.png (docs/prefect-ui.sh)
pdf="$(mktemp --suffix=.pdf)"
trap 'rm -f "$pdf"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --virtual-time-budget=10000 --no-pdf-header-footer \
  --print-to-pdf="$pdf" "file://$(realpath "$report")" >/dev/null 2>&1
pdftoppm -png -r 80 "$pdf" "$out/report"
ls "$out"/*.png

#!/usr/bin/env bash
# Opens a report.html of `kdseg evaluate` in headless Chromium and fails when the rendered page
# lacks its parts or a script fails.
#
#   report_browser_test.sh <report.html>
#
# Fails (exit 1, the reasons on stderr) when the DOM after loading lacks table#comparison, an
# svg.reliability with content or svg#per-case-dice; when the page's own check did not set
# body[data-rendered="ok"]; when html[data-error] is set; or when the browser logs a console error,
# an uncaught exception or a blocked or failed load (the page must be self-contained).
# With EXPECT_FIGURES=1 it also fails when the page has no section#figures with a decoded image
# or no section#curves (the page's own check fails on any figure that did not decode and on a
# curve chart without a path per model). With SCREENSHOT=<file.png> it saves a screenshot of the
# page there (a test artefact).
# Exit 77 (register with SKIP_RETURN_CODE 77) when no browser is installed, 2 on bad usage.
# The browser is $CHROMIUM when set, else the first of chromium, chromium-browser, google-chrome.
set -euo pipefail

fail_usage() {
  echo "usage: $0 <report.html>" >&2
  exit 2
}
[[ $# -eq 1 ]] || fail_usage
html=$1
if [[ ! -f $html ]]; then
  echo "report_browser_test: $html: no such file (pass the report.html written by kdseg evaluate)" >&2
  exit 2
fi

browser=${CHROMIUM:-}
if [[ -z $browser ]]; then
  for candidate in chromium chromium-browser google-chrome; do
    if command -v "$candidate" >/dev/null; then
      browser=$candidate
      break
    fi
  done
fi
if [[ -z $browser ]]; then
  echo "report_browser_test: skipped: no chromium, chromium-browser or google-chrome on PATH" \
    "(apt-get install chromium, or set CHROMIUM)" >&2
  exit 77
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A file URL: percent-encode the characters that would end or change the path.
path=$(realpath "$html")
url="file://$(printf '%s' "$path" | sed -e 's/%/%25/g' -e 's/ /%20/g' -e 's/#/%23/g' -e 's/?/%3F/g')"

# A fresh profile per run, so that parallel tests do not share (and lock) one.
status=0
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --enable-logging=stderr --v=0 \
  --virtual-time-budget=2000 --user-data-dir="$work/profile" --dump-dom "$url" \
  >"$work/dom.html" 2>"$work/browser.log" || status=$?
if [[ $status -ne 0 ]]; then
  echo "report_browser_test: $browser exited with status $status on $url; its log:" >&2
  tail -n 20 "$work/browser.log" >&2
  exit 1
fi

problems=()
# The browser's own log: console messages, uncaught exceptions, loads refused by the page's
# Content-Security-Policy or failed.
console_errors=$(grep -E 'CONSOLE' "$work/browser.log" |
  grep -E 'ERROR|Uncaught|Content Security Policy|Refused to|Failed to load' || true)
[[ -z $console_errors ]] || problems+=("console errors:"$'\n'"$console_errors")

dom="$work/dom.html"
# -z: the whole DOM is one record, so that a pattern may span lines.
has() { grep -Pzq "$1" "$dom"; }
has '<table[^>]*\bid="comparison"' || problems+=("no table#comparison")
has '<svg[^>]*\bclass="reliability"[^>]*>\s*<[a-zA-Z]' || problems+=("no svg.reliability with content")
has '<svg[^>]*\bid="per-case-dice"' || problems+=("no svg#per-case-dice")
if ! has '<body[^>]*\bdata-rendered="ok"'; then
  rendered=$(grep -Pzo '<body[^>]*>' "$dom" | tr -d '\0' || true)
  problems+=("the page's check did not pass: ${rendered:-no <body>} (expected data-rendered=\"ok\")")
fi
if [[ ${EXPECT_FIGURES:-0} == 1 ]]; then
  has '<section[^>]*\bid="figures"[\s\S]*?<img[^>]*src="data:image/png;base64,' ||
    problems+=("no section#figures with an embedded PNG")
  has '<body[^>]*\bdata-figures="[1-9]' || problems+=("no decoded figure (body[data-figures])")
  has '<section[^>]*\bid="curves"[\s\S]*?<path[^>]*\bclass="curve"' || problems+=("no section#curves with a curve")
fi
if has '<html[^>]*\bdata-error='; then
  problems+=("script error: $(grep -Pzo '<html[^>]*>' "$dom" | tr -d '\0')")
fi

if [[ -n ${SCREENSHOT:-} ]]; then
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2600 \
    --virtual-time-budget=2000 --user-data-dir="$work/profile-shot" --screenshot="$(realpath -m "$SCREENSHOT")" \
    "$url" >/dev/null 2>&1 || problems+=("no screenshot: $browser failed")
  [[ -s $SCREENSHOT ]] || problems+=("no screenshot written to $SCREENSHOT")
fi

if [[ ${#problems[@]} -gt 0 ]]; then
  echo "report_browser_test: $html FAILED:" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi
echo "report_browser_test: $html passed ($browser)"

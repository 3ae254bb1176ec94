#!/usr/bin/env bash
# `tcpwhy report --html` in a real browser: headless Chromium (Debian's `chromium`) loads
# the page written from a trace, with no network, and must render it without a console
# error, run its script, and have the charts in the DOM. Saves a screenshot and the page
# under ARTIFACTS for people to look at.
#
#   html_in_chromium.sh TCPWHY TRACE[,TRACE...] ARTIFACTS [NAME]
# Several traces (of several nodes) make one page, which must then have its Nodes table too.
set -euo pipefail
tcpwhy=$1 trace=$2 artifacts=$3 name=${4:-report-html}
IFS=, read -ra traces <<<"$trace"
fail() { echo "html_in_chromium: FAIL: $*" >&2; exit 1; }

browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "html_in_chromium: SKIPPED: no chromium (scripts/setup.sh installs it)" >&2
  exit 77
fi
mkdir -p "$artifacts"
scratch=$(mktemp -d /tmp/tcpwhy-chromium.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
page=$artifacts/$name.html
screenshot=$artifacts/$name.png

"$tcpwhy" report --html "$page" "${traces[@]}" >/dev/null

# Offline: no proxy, no DNS, so any external asset would fail to load and show in the log.
chrome_flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run
  --user-data-dir="$scratch/profile" --proxy-server=127.0.0.1:9 --host-resolver-rules="MAP * ~NOTFOUND"
  --enable-logging=stderr --v=0 --window-size=1300,1700)
timeout 90 "$browser" "${chrome_flags[@]}" --dump-dom "file://$page" >"$scratch/dom.html" 2>"$scratch/dom.log" ||
  fail "chromium --dump-dom exited $?: $(tail -5 "$scratch/dom.log")"
timeout 90 "$browser" "${chrome_flags[@]}" --screenshot="$screenshot" "file://$page" >/dev/null 2>"$scratch/shot.log" ||
  fail "chromium --screenshot exited $?: $(tail -5 "$scratch/shot.log")"

# Console messages (uncaught exceptions included) and failed loads, as Chromium logs them.
if grep -E 'CONSOLE|Uncaught|Failed to load resource|net::ERR_' "$scratch/dom.log" "$scratch/shot.log"; then
  fail "the page logged errors in Chromium (above)"
fi
dom=$scratch/dom.html
grep -q '<svg class="histogram"' "$dom" || fail "no histogram in the rendered DOM"
grep -q 'class="lb-timeout"' "$dom" || fail "no LB idle timeout marker in the histogram"
grep -q '<svg class="timeline"' "$dom" || fail "no timeline in the rendered DOM"
grep -q '<circle class="reset"' "$dom" || fail "no resets on the timeline"
grep -q 'id="connections"' "$dom" || fail "no connection table"
grep -q 'data-script="ran"' "$dom" || fail "the page's script did not run to its end"
if [ "${#traces[@]}" -gt 1 ]; then
  grep -q '<section id="nodes">' "$dom" || fail "several nodes' traces, and no Nodes table"
  grep -q 'data-node=' "$dom" || fail "several nodes' traces, and no finding or backend says its node"
fi
# The page must fit a 1280 px window: nothing wider than the viewport, no cut-off column.
timeout 90 "$browser" "${chrome_flags[@]/--window-size=1300,1700/--window-size=1280,900}" --dump-dom "file://$page" \
  >"$scratch/dom-1280.html" 2>"$scratch/dom-1280.log" || fail "chromium --dump-dom at 1280 px exited $?"
grep -q 'data-fits="yes"' "$scratch/dom-1280.html" || fail "the page is wider than a 1280 px window"
size=$(stat -c %s "$screenshot")
[ "$size" -gt 20000 ] || fail "screenshot $screenshot is only $size bytes"
echo "html_in_chromium: OK: rendered without console errors; charts in the DOM; screenshot $screenshot"

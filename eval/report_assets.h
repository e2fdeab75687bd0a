// The fixed parts of report.html that eval/report.cpp writes into every page: the style sheet, the
// Content-Security-Policy (nothing may be fetched, so one file works offline) and the two inline
// scripts a headless browser test reads (tests/eval/report_browser_test.sh): html[data-error] on
// any script error, console.error or blocked load, and body[data-rendered="ok"] once the charts
// are in place. Internal to the renderer.
#pragma once

#include <string_view>

namespace kdseg::eval::report::detail {

inline constexpr std::string_view kStyle = R"css(
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --panel: #f6f8fa; --best: #dafbe1; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", Arial, sans-serif; }
.wrap { max-width: 1280px; margin: 0 auto; padding: 20px 24px; }
header { background: var(--panel); border-bottom: 1px solid var(--line); }
h1 { font-size: 24px; font-weight: 600; margin: 4px 0 2px; }
.subtitle { color: var(--muted); margin: 0 0 14px; }
h2 { font-size: 19px; font-weight: 600; margin: 36px 0 6px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; font-weight: 600; margin: 20px 0 6px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 20px; margin: 0; font-size: 14px; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.mono, td.num, pre { font-size: 13px; font-variant-numeric: tabular-nums;
  font-family: ui-monospace, "SF Mono", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", monospace; }
.note { color: var(--muted); font-size: 13px; max-width: 90ch; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 14px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { background: var(--panel); font-weight: 600; font-size: 13px; white-space: nowrap; }
thead th.num { vertical-align: bottom; }
thead tr.group th { text-align: center; border-left: 1px solid var(--line); }
th.num, td.num { text-align: right; }
td.num { white-space: nowrap; }
td.num.first { border-left: 1px solid var(--line); }
#comparison th, #comparison td { padding-left: 7px; padding-right: 7px; }
tbody tr:hover { background: #f3f6fa; }
td.best { font-weight: 700; background: var(--best); }
.ci { display: block; font-size: 11px; color: var(--muted); font-weight: 400; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 7px; }
td.model { font-weight: 600; min-width: 8em; max-width: 14em; }
.charts { display: flex; flex-wrap: wrap; gap: 28px; }
figure { margin: 0; }
figcaption { font-size: 14px; margin-bottom: 4px; }
figcaption .mono { color: var(--muted); margin-left: 8px; }
svg { display: block; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; font-size: 11px;
  fill: var(--muted); }
svg .frame { fill: none; stroke: #8c959f; }
svg .grid { stroke: #eaeef2; }
svg .diagonal { stroke: #57606a; stroke-dasharray: 4 3; }
svg .gap { fill: #d62728; fill-opacity: 0.25; stroke: #d62728; stroke-width: 0.8; }
svg .count { fill: #c8d1da; }
svg .spread { stroke: #c8d1da; stroke-width: 2; }
svg g.bin:hover rect, svg circle:hover { stroke: #1f2328; stroke-width: 1.5; }
svg#per-case-dice { width: 100%; height: auto; }
svg path.curve { fill: none; stroke-width: 1.8; stroke-linejoin: round; stroke-linecap: round; }
figure.case-figure { margin: 0 0 22px; }
figure.case-figure img { display: block; max-width: 100%; height: auto; image-rendering: pixelated; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 12px; overflow-x: auto; }
)css";

// Nothing may be fetched: the page must work from a single file, offline.
inline constexpr std::string_view kContentSecurityPolicy =
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:";

// Sets html[data-error] on a script error, console.error or a load the policy blocked, so that a
// headless browser test sees it whatever the browser's log format.
inline constexpr std::string_view kErrorScript = R"js(
(function () {
  function record(message) { document.documentElement.dataset.error = String(message); }
  window.addEventListener('error', function (e) { record(e.message || 'error'); });
  window.addEventListener('unhandledrejection', function (e) { record(e.reason); });
  document.addEventListener('securitypolicyviolation', function (e) { record('blocked ' + e.blockedURI); });
  var consoleError = console.error;
  console.error = function () {
    record(Array.prototype.join.call(arguments, ' '));
    consoleError.apply(console, arguments);
  };
})();
)js";

// Sets body[data-rendered] to "ok" when the charts are in place, or says what is missing.
inline constexpr std::string_view kCheckScript = R"js(
(function () {
  var missing = [];
  if (!document.querySelector('table#comparison')) missing.push('table#comparison');
  var charts = document.querySelectorAll('svg.reliability');
  if (charts.length === 0) missing.push('svg.reliability');
  charts.forEach(function (svg) { if (svg.childElementCount === 0) missing.push('an empty svg.reliability'); });
  if (!document.querySelector('svg#per-case-dice')) missing.push('svg#per-case-dice');
  var curves = document.querySelector('section#curves');
  if (curves) {
    var expected = Number(curves.dataset.models);
    curves.querySelectorAll('svg.curve').forEach(function (svg) {
      var paths = svg.querySelectorAll('path.curve').length;
      if (paths !== expected) missing.push(svg.id + ' with ' + expected + ' paths (has ' + paths + ')');
    });
  }
  // Figures are data: URIs; they are decoded by the time the page has loaded.
  function finish() {
    document.querySelectorAll('section#figures img').forEach(function (img) {
      if (!img.complete || img.naturalWidth === 0) missing.push('figure ' + img.alt);
    });
    document.body.dataset.figures = String(document.querySelectorAll('section#figures img').length);
    document.body.dataset.rendered = missing.length === 0 ? 'ok' : 'missing ' + missing.join(', ');
  }
  if (document.readyState === 'complete') finish(); else window.addEventListener('load', finish);
})();
)js";

}  // namespace kdseg::eval::report::detail

// The SVG charts of report.html, written by eval/report.cpp from report.json (eval/report.h):
// section#reliability, one svg.reliability per model (accuracy per confidence bin, its gap to the
// bin's confidence, the count per bin on a log scale), and section#per-case-plot, svg#per-case-dice
// (each case's Dice of the headline region, "tumor" else the first, one dot per model). Internal
// to the renderer. Throw nlohmann::json::exception where the report does not follow the schema,
// kdseg::Error where reliability arrays do not have `bins` entries.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <iosfwd>

namespace kdseg::eval::report::detail {

void write_reliability_section(std::ostream& out, const nlohmann::json& report);

void write_per_case_plot(std::ostream& out, const nlohmann::json& report);

}  // namespace kdseg::eval::report::detail

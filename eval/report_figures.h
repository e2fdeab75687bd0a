// The pictures of report.html, from report.json (eval/report.h): section#figures, each figure's
// PNG (written by evaluate into the report's figures/ folder) embedded as a data: URI, and
// section#curves, one svg.curve per quantity (loss, learning rate, validation Dice and ECE) with a
// path.curve per model that has a training run. Internal to the renderer.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <iosfwd>
#include <string>

namespace kdseg::eval::report::detail {

// `folder` holds the report's figures/ (an empty folder name: the figures are shown as missing).
void write_figures_section(std::ostream& out, const nlohmann::json& report, const std::string& folder);

void write_curves_section(std::ostream& out, const nlohmann::json& report);

}  // namespace kdseg::eval::report::detail

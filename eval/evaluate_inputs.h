// What `kdseg evaluate` checks before any work, and where it writes: each check throws
// kdseg::Error with a message that names the option to change. Internal to eval/ (the evaluator,
// eval/evaluate.cpp, calls them in this order, so that the first mistake is the one reported).
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/task.h"
#include "eval/evaluate.h"

namespace kdseg {
class StagedFolder;
}
namespace kdseg::data {
class PreparedStore;
}

namespace kdseg::eval::detail {

// The options alone: at least one model, positive sizes, a positive surface tolerance, distinct
// model names, and models that predict the task's classes.
void check_options(const EvaluateOptions& options, const data::Task& task);

// Every --show-case is a case of the evaluated `rows` of `store`.
void check_show_cases(const EvaluateOptions& options, const data::PreparedStore& store,
                      const std::vector<int64_t>& rows);

// A warning (where `warn`) when the store's prepare options keep only some slices, so that its
// numbers are not read as whole-volume ones. `store_options`: the store's "options" attribute.
void warn_of_slice_selection(const std::string& store_path, const nlohmann::json& store_options, bool warn);

// The report folder staged beside `output` (core/file_util.h), which replaces it on commit.
// `output` must be absent, empty or hold a report (its report.json; a run's folder is never
// replaced), and a report only with `force`. Made once the inputs are checked, so that an
// unwritable output is found before any work.
std::unique_ptr<StagedFolder> stage_report_folder(const std::string& output, bool force);

}  // namespace kdseg::eval::detail

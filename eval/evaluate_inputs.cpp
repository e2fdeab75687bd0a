#include "eval/evaluate_inputs.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/file_util.h"
#include "core/frozen_model.h"
#include "core/log.h"
#include "data/prepared_store.h"
#include "eval/report_files.h"

namespace kdseg::eval::detail {
namespace fs = std::filesystem;

void check_options(const EvaluateOptions& o, const data::Task& task) {
  KDSEG_CHECK(!o.models.empty(), "evaluate: give at least one --model");
  KDSEG_CHECK(o.bins >= 1 && o.bootstrap >= 1 && o.batch_size >= 1,
              "evaluate: --bins, --bootstrap and --batch-size must be >= 1");
  KDSEG_CHECK(o.workers >= 0, "evaluate: --workers must be >= 0, got ", o.workers);
  KDSEG_CHECK(o.band_mm > 0 && std::isfinite(o.band_mm), "evaluate: --band-mm must be a positive number of mm, got ",
              o.band_mm);
  KDSEG_CHECK(o.surface_tolerance > 0 && std::isfinite(o.surface_tolerance),
              "evaluate: --surface-tolerance must be a positive number of mm, got ", o.surface_tolerance);
  std::set<std::string> names;
  for (const auto& m : o.models) {
    KDSEG_CHECK(names.insert(m.name).second, "evaluate: two models are named '", m.name,
                "'; give distinct --name values");
    KDSEG_CHECK(m.model->classes() == task.classes, m.file, ": the model predicts ", m.model->classes(),
                " classes but task '", task.name, "' has ", task.classes, " (evaluate it with its own --task)");
  }
}

void check_show_cases(const EvaluateOptions& o, const data::PreparedStore& store, const std::vector<int64_t>& rows) {
  for (const std::string& id : o.show_cases) {
    const bool in_fold = std::any_of(rows.begin(), rows.end(), [&](int64_t row) {
      return store.case_ids()[static_cast<size_t>(store.slice_case()[static_cast<size_t>(row)])] == id;
    });
    KDSEG_CHECK(in_fold, o.data, ": --show-case ", id, " is not a case of fold ", o.fold);
  }
}

void warn_of_slice_selection(const std::string& store_path, const nlohmann::json& store_options, bool warn) {
  if (warn && store_options.is_object() &&
      parse_enum<data::SliceSelection>(store_path + ": slices", store_options.value("slices", "all")) !=
          data::SliceSelection::kAll) {
    log::warn(
        "{} keeps only the slices with {} (prepare --slices {}): Dice and calibration cover those slices, not "
        "whole volumes, and surface distances see the kept slices stacked with the others empty; evaluate "
        "on a store prepared with --slices all for volume metrics",
        store_path, store_options.value("slices", ""), store_options.value("slices", ""));
  }
}

std::unique_ptr<StagedFolder> stage_report_folder(const std::string& output, bool force) {
  refuse_symlink_output(output);  // before "holds a report", which would send the user to --force
  std::error_code ec;
  const bool absent = !fs::exists(output, ec) || (fs::is_directory(output, ec) && fs::is_empty(output, ec));
  const bool report = fs::is_regular_file(fs::path(output) / kReportJsonFile, ec);
  // The folder is replaced whole: only a report folder may be, so that a mistyped --output
  // (a run's folder) is never wiped.
  KDSEG_CHECK(absent || report, output, " holds files that are not a kdseg report; choose another --output");
  KDSEG_CHECK(absent || force, output, " holds a report; pass --force to replace it, or choose another --output");
  return std::make_unique<StagedFolder>(output);
}

}  // namespace kdseg::eval::detail

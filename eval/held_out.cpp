#include "eval/held_out.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/frozen_model.h"
#include "core/log.h"
#include "core/run_record.h"
#include "data/prepared_store.h"

namespace kdseg::eval {
namespace {
namespace fs = std::filesystem;

void check_cases_held_out(const std::string& file, const RunConfig& config, const data::PreparedStore& theirs,
                          const data::PreparedStore& store, const std::vector<int64_t>& rows, int fold,
                          const std::string& consequence) {
  const auto excluded = [&](int f) {
    return std::find(config.exclude_folds.begin(), config.exclude_folds.end(), f) != config.exclude_folds.end();
  };
  std::set<std::string> trained;
  for (size_t c = 0; c < theirs.case_ids().size(); ++c) {
    const int f = theirs.case_fold()[c];
    if (f != config.fold && !excluded(f)) trained.insert(theirs.case_ids()[c]);
  }
  std::set<std::string> seen;
  for (int64_t row : rows) {
    const std::string& id = store.case_ids()[static_cast<size_t>(store.slice_case()[static_cast<size_t>(row)])];
    if (trained.count(id) != 0) seen.insert(id);
  }
  if (seen.empty()) return;
  std::string ids;
  for (const auto& id : seen) ids += (ids.empty() ? "" : ", ") + id;
  KDSEG_THROW(file, ": trained on ", seen.size(), " case(s) of fold ", fold, " (", ids, "): it held out fold ",
              config.fold, " of ", config.data, "; ", consequence);
}

}  // namespace

void check_held_out(const FrozenModel& model, const std::string& file, const data::PreparedStore& store,
                    const std::vector<int64_t>& rows, int fold, bool warn, const std::string& consequence) {
  const std::string record = model.training_config();
  if (record.empty()) return;  // not a kdseg checkpoint: no record of its training
  const RunConfig config = parse_run_config(record, file);
  std::unique_ptr<data::PreparedStore> recorded;
  bool replaced = false;
  const data::PreparedStore* found = nullptr;
  if (!config.data_hash.empty() && store.attribute(data::store::kContentHashAttribute) == config.data_hash) {
    found = &store;
  } else if ((recorded = open_recorded_store(config, &replaced))) {
    found = recorded.get();
  }
  if (found == nullptr) {
    if (warn) {
      log::warn("{}: its training store {} is gone{}, so fold {} cannot be checked to hold none of its training cases",
                file, config.data, replaced ? " (another store is at its path)" : "", fold);
    }
    return;
  }
  check_cases_held_out(file, config, *found, store, rows, fold, consequence);
}

std::unique_ptr<data::PreparedStore> open_recorded_store(const RunConfig& config, bool* replaced) {
  if (replaced != nullptr) *replaced = false;
  std::error_code ec;
  if (config.data.empty() || !fs::is_regular_file(config.data, ec)) return nullptr;
  auto store = std::make_unique<data::PreparedStore>(config.data);
  if (config.data_hash.empty() || store->attribute(data::store::kContentHashAttribute) == config.data_hash)
    return store;
  if (replaced != nullptr) *replaced = true;
  return nullptr;
}

}  // namespace kdseg::eval

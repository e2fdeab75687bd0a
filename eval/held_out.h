// Whether a model may be scored (or calibrated) on a fold: a kdseg checkpoint names the store it
// trained on and the fold it held out, and no case of the fold may be one it trained on.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kdseg {
class FrozenModel;
struct RunConfig;
}  // namespace kdseg
namespace kdseg::data {
class PreparedStore;
}

namespace kdseg::eval {

// Throws kdseg::Error naming `file` and the cases when `model` trained on a case of the store
// rows `rows` (fold `fold` of `store`). Stores of the same cases assign the same folds, so a
// store with every slice of the same cases is checked against a model trained on tumour slices.
// The training store is known by its content hash wherever it is now (`store` itself, copied or
// moved), else by the absolute path its record keeps (a record before version 3 has only the
// path as typed); when it is gone the check is impossible and, with `warn`, says so. A model
// that is not a kdseg checkpoint has no record and passes.
// `consequence` ends the error: what using the model on those cases would do.
void check_held_out(const FrozenModel& model, const std::string& file, const data::PreparedStore& store,
                    const std::vector<int64_t>& rows, int fold, bool warn, const std::string& consequence);

// The store a checkpoint's record names, opened at the absolute path it keeps when it is still
// there and holds the content the record's hash names (a record before version 3 has no hash:
// whatever store lies there). Null when it is gone; `replaced`, when given, says whether another
// store lies at that path. Errors of an unreadable store propagate.
std::unique_ptr<data::PreparedStore> open_recorded_store(const RunConfig& config, bool* replaced = nullptr);

}  // namespace kdseg::eval

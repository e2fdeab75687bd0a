// Internal to `kdseg prepare` (data/prepare*.cpp): the cases of a run, and converting a case's
// slices into a StoreWriter (data/store_writer.h) on every thread.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "data/layout.h"
#include "data/prepared_store.h"
#include "data/raters.h"
#include "data/store_writer.h"

namespace kdseg::data::detail {

// What is known of each case before any is read: its rater files, and a problem that makes it
// unusable (a missing partner or rater file, another number of raters than the store's).
struct CasePlan {
  RaterFiles raters;
  std::string problem;
};

// The plan of each case of `found`; `raters` becomes the raters per case of the store: the
// options' rater_count, else the count most usable cases have (a tie is an error asking for
// --raters N); a case with another count is a problem naming its folder and the counts.
std::vector<CasePlan> plan_cases(const std::vector<CaseFiles>& found, const PrepareOptions& options, Layout layout,
                                 int64_t& raters);

// What convert_cases did: the cases written and the problems of those that could not be used,
// by position in the run's case list.
struct Converted {
  std::vector<size_t> written;
  std::map<size_t, std::string> problems;
};

// Converts the cases `mine` (positions in `found`, ascending) into `writer`, each case's slices
// compressed on `threads` threads and written in order; `on_case` is called after each case.
// Once a case is bad and bad cases are not skipped, the rest are only read and checked, so that
// every problem is reported.
Converted convert_cases(StoreWriter& writer, const std::vector<CaseFiles>& found, const std::vector<CasePlan>& plans,
                        const std::vector<size_t>& mine, const PrepareOptions& options, Layout layout, int threads,
                        const std::function<void()>& on_case);

// Bad cases go to summary.skipped and stop everything (nothing written) unless skip_bad_cases;
// a run with no usable case fails either way.
void report_bad_cases(const std::map<size_t, std::string>& problems, size_t cases, const PrepareOptions& options,
                      PrepareSummary& summary);

// The options' own checks (--size, --folds, --compression, an existing output without --force).
void check_options(const PrepareOptions& options);

}  // namespace kdseg::data::detail

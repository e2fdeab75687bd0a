// Internal to `kdseg prepare` (data/prepare*.cpp): the part files of `mpirun -np N kdseg prepare`.
//
// Each rank writes the store's datasets for its cases (every N-th) into a part file beside the
// output, through the same StoreWriter as a store, plus the part's own tables:
//   /part/case                 [n] int64  each case's position in the run's case list
//   /part/bad_case, bad_problem            the cases it could not use, and why
//   /part/image_digest, label_digest, rater_digest, majority_digest [rows] uint64, /part/histogram [values] int64
// A part is the temporary file of an AtomicFile that is never committed: it goes when the rank is
// done, and a killed rank's is removed by the next run on that host with as many ranks. Its
// attribute "run" holds the run's token, which tells it from a concurrent run's parts. Rank 0
// then copies the compressed chunks into the store in case order, so that the store holds the
// same bytes whatever N.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/layout.h"
#include "data/prepare_cases.h"
#include "data/prepared_store.h"
#include "data/store_writer.h"

namespace kdseg::data::detail {

// The name of rank `rank`'s part of `output` (AtomicFile makes its temporary from it).
std::string part_name(const std::string& output, int rank, int ranks);

// The token of a run (rank 0's), the same on every rank. Collective.
int64_t run_token(const PrepareRanks& ranks);

// Marks the file of `writer` as a part of the run `token` (before its cases).
void mark_part(const StoreWriter& writer, int64_t token);

// The part's own tables, after its cases (and before writer.finish).
void write_part_tables(const StoreWriter& writer, const Converted& converted);

class PartReader;

// Every rank's part of the run `token` of `output`, open for reading once all are complete.
// Errors name a part that is missing.
class Parts {
 public:
  Parts(const std::string& output, int ranks, int64_t token, size_t cases);
  ~Parts();
  Parts(const Parts&) = delete;
  Parts& operator=(const Parts&) = delete;

  // The problems of the bad cases of every part, by position in the run's case list.
  const std::map<size_t, std::string>& problems() const { return problems_; }
  // Copies every case the parts hold into `writer`, in case order (`found` is the run's case
  // list), and the parts' label histograms.
  void copy_into(StoreWriter& writer, const std::vector<CaseFiles>& found);

 private:
  std::vector<std::unique_ptr<PartReader>> parts_;
  std::map<size_t, std::string> problems_;
  std::vector<std::pair<size_t, size_t>> where_;  // per case: part, row (SIZE_MAX: in none)
};

}  // namespace kdseg::data::detail

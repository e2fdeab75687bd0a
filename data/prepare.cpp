// `kdseg prepare`: NIfTI cases into a prepared store (data/prepared_store.h) in bounded memory.
//
// One case is in memory at a time, in the dtype its file stores (a CT's int16 image and uint8
// label: 1.5 bytes a voxel); its canonical slices are cut out one at a time, compressed on every
// thread (shuffle + deflate through libdeflate, the bytes HDF5's own filters would read back) and
// written in order with H5Dwrite_chunk. Under mpirun each rank converts every N-th case into a
// part file beside the output; rank 0 then copies the compressed chunks into the store in case
// order through the same writer, so that the store holds the same bytes whatever N and --threads.
//
// The pieces: prepare_case (reading and checking one case), prepare_cases (the cases of a run,
// converted on every thread), store_writer (the store's HDF5 file), prepare_parts (the part
// files of mpirun); this file orchestrates them.
#include <algorithm>
#include <chrono>
#include <exception>
#include <map>
#include <memory>

#include "core/cpu_cores.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/random.h"
#include "data/hdf5_util.h"
#include "data/prepare_case.h"
#include "data/prepare_cases.h"
#include "data/prepare_parts.h"
#include "data/prepared_store.h"
#include "data/store_writer.h"

namespace kdseg::data {
namespace {
using namespace detail;

// What every rank knows of the run before converting a case.
struct Run {
  const PrepareOptions& options;
  const PrepareRanks& ranks;
  std::vector<CaseFiles> found;
  std::vector<CasePlan> plans;
  std::vector<size_t> mine;  // every ranks-th case from this rank's own
  bool integral = true;      // the store's image dtype: int16, else float32
  int threads = 1;
};

// The image dtype is one for the store: int16 unless a usable case's values are not exact
// int16 integers (read here only for files whose type does not settle it) or are resized.
// Collective.
bool decide_integral(const Run& run) {
  std::vector<int64_t> fractional{0};
  for (const size_t i : run.mine) {
    const std::string& image = run.found[i].image;
    if (run.plans[i].problem.empty() && (resized(image, run.options.size) || !integral_values(image))) {
      ++fractional[0];
    }
  }
  if (run.ranks.size > 1) {
    run.ranks.wait_for_all();  // a rank with many float files reads them all first: no timeout for it
    run.ranks.sum(fractional);
  }
  return fractional[0] == 0;
}

// Runs `step`; a failed write (a full disk, a file size limit) is reported once, naming the store
// and the free space. The temporary file goes with its AtomicFile; a previous store stays as it was.
template <typename Step>
void writing(const std::string& output, const Step& step) {
  try {
    step();
  } catch (const IoError& e) {
    throw_write_failure(output, "the prepared store", e.message());
  }
}

// Converts this rank's cases into `writer`.
Converted convert(const Run& run, StoreWriter& writer, const PrepareSummary& summary) {
  size_t done = 0;
  return convert_cases(writer, run.found, run.plans, run.mine, run.options, summary.layout, run.threads, [&] {
    ++done;
    log::debug("prepare: {} of {} cases on rank {}", done, run.found.size(), run.ranks.rank);
  });
}

// One process: the store, written straight.
void prepare_single(const Run& run, PrepareSummary& summary) {
  const PrepareOptions& options = run.options;
  AtomicFile output(options.output);
  std::unique_ptr<StoreWriter> writer;
  writing(options.output, [&] {
    writer = std::make_unique<StoreWriter>(output.temp_path(), options, summary.layout, run.integral, summary.raters);
  });
  Converted converted;
  writing(options.output, [&] { converted = convert(run, *writer, summary); });
  report_bad_cases(converted.problems, run.found.size(), options, summary);
  writing(options.output, [&] { writer->finish(summary); });
  writing(options.output, [&] { writer.reset(); });
  output.commit();
}

// This rank's part of the run `token` into `path`, complete when this returns.
void write_part(const Run& run, const std::string& path, int64_t token, const PrepareSummary& summary) {
  const PrepareOptions& options = run.options;
  writing(options.output, [&] {
    StoreWriter writer(path, options, summary.layout, run.integral, summary.raters);
    mark_part(writer, token);
    write_part_tables(writer, convert(run, writer, summary));
    PrepareSummary part_summary;
    writer.finish(part_summary, /*require_slices=*/false);
  });
}

// Rank 0: the store, joined from every rank's part of the run `token`.
void join_parts(const Run& run, int64_t token, PrepareSummary& summary) {
  const PrepareOptions& options = run.options;
  Parts parts(options.output, run.ranks.size, token, run.found.size());
  report_bad_cases(parts.problems(), run.found.size(), options, summary);
  AtomicFile output(options.output);
  writing(options.output, [&] {
    StoreWriter writer(output.temp_path(), options, summary.layout, run.integral, summary.raters);
    parts.copy_into(writer, run.found);
    writer.finish(summary);
  });
  output.commit();
}

// Under mpirun: each rank writes its part; rank 0 joins them once every part is complete. Every
// rank fails when rank 0 could not join them. Collective.
void prepare_parts(const Run& run, PrepareSummary& summary) {
  const PrepareRanks& ranks = run.ranks;
  const int64_t token = run_token(ranks);
  // Never committed: the part goes when every rank is done with it (prepare_parts.h).
  AtomicFile part(part_name(run.options.output, ranks.rank, ranks.size));
  write_part(run, part.temp_path(), token, summary);
  ranks.wait_for_all();
  std::exception_ptr failure;
  if (ranks.rank == 0) {
    try {
      join_parts(run, token, summary);
    } catch (...) {
      failure = std::current_exception();
    }
  }
  std::vector<int64_t> failed{failure ? 1 : 0};
  ranks.wait_for_all();
  ranks.sum(failed);
  if (failure) std::rethrow_exception(failure);
  KDSEG_CHECK(failed[0] == 0, run.options.output, ": rank 0 could not join the parts (its error is logged)");
}

}  // namespace

std::vector<int> assign_folds(const std::vector<std::string>& ids, int folds) {
  KDSEG_CHECK(folds >= 1, "--folds must be >= 1, got ", folds);
  std::vector<std::pair<uint64_t, size_t>> order;
  for (size_t i = 0; i < ids.size(); ++i) order.emplace_back(mix64(fnv1a(kFnvOffset, ids[i].data(), ids[i].size())), i);
  std::sort(order.begin(), order.end());
  std::vector<int> fold(ids.size());
  for (size_t r = 0; r < order.size(); ++r) fold[order[r].second] = static_cast<int>(r % static_cast<size_t>(folds));
  return fold;
}

PrepareSummary prepare_store(const PrepareOptions& options, const PrepareRanks& ranks) {
  const auto start = std::chrono::steady_clock::now();
  check_options(options);
  KDSEG_CHECK(ranks.size == 1 || (ranks.sum && ranks.wait_for_all), "prepare: ranks need their collectives");
  PrepareSummary summary;
  summary.layout = options.detect_layout ? detect_layout(options.input) : options.layout;
  Run run{options, ranks, find_cases(options.input, summary.layout), {}, {}, true, 1};
  run.plans = plan_cases(run.found, options, summary.layout, summary.raters);
  for (size_t i = static_cast<size_t>(ranks.rank); i < run.found.size(); i += static_cast<size_t>(ranks.size)) {
    run.mine.push_back(i);
  }
  run.integral = decide_integral(run);
  summary.image_dtype = run.integral ? "int16" : "float32";
  run.threads = options.threads > 0 ? options.threads : std::max(1, available_cores() / ranks.size);
  h5::quiet_errors();
  if (ranks.size == 1) {
    prepare_single(run, summary);
  } else {
    prepare_parts(run, summary);
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace kdseg::data

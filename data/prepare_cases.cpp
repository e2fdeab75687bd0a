#include "data/prepare_cases.h"

#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "core/error.h"
#include "core/file_util.h"
#include "core/hash.h"
#include "core/log.h"
#include "core/ordered_pipeline.h"
#include "data/deflate.h"
#include "data/prepare_case.h"

namespace kdseg::data::detail {
namespace {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using torch::Tensor;

// Slices are resized to at most this many pixels a side (CT is 512; 4096 leaves room).
constexpr int64_t kMinSize = 16, kMaxSize = 4096;
// Slices made ahead of the one being written, per thread.
constexpr int64_t kRowsPerThread = 4;

// Rows [0, n) of dataset `which` made by `make` on `threads` threads and written through `writer`
// in order on this thread, which writes row j while the threads make the rows after it; at most
// kRowsPerThread * threads rows wait to be written.
void write_rows(int64_t n, int threads, const std::function<EncodedRow(int64_t)>& make, StoreWriter& writer,
                Rows which) {
  const int64_t window = std::max(2, static_cast<int>(kRowsPerThread) * threads);
  OrderedPipeline<EncodedRow> rows(n, static_cast<int>(std::min<int64_t>(threads, n)), window, make);
  for (int64_t j = 0; j < n; ++j) {
    std::optional<EncodedRow> row = rows.next();
    writer.write(which, j, *row);
  }
}

// The case's canonical slices, resized to the store's size, through `writer` on `threads` threads.
void write_case(StoreWriter& writer, const CaseVolumes& c, const CaseFiles& files, const PrepareOptions& options,
                int threads) {
  const Reorientation& r = c.canonical;
  const int64_t height = options.size > 0 ? options.size : r.shape[0];
  const int64_t width = options.size > 0 ? options.size : r.shape[1];
  const bool resize = height != r.shape[0] || width != r.shape[1];
  const std::vector<int64_t> size{height, width};
  const auto bilinear = F::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(false);
  const auto nearest = F::InterpolateFuncOptions().size(size).mode(torch::kNearest);
  const int level = options.compression;

  CaseEntry entry;
  entry.id = files.id;
  entry.image_file = files.image;
  entry.label_file = files.label;
  entry.index = c.index;
  for (size_t d = 0; d < 3; ++d) entry.shape[d] = static_cast<int32_t>(r.shape[d]);
  entry.spacing = voxel_spacing(r.affine);
  entry.affine = r.affine;
  entry.agreement = c.agreement;
  entry.pairwise = c.pairwise;
  writer.begin_case(std::move(entry), height, width);

  const auto n = static_cast<int64_t>(c.index.size());
  const auto k = [&](int64_t j) { return static_cast<int64_t>(c.index[static_cast<size_t>(j)]); };
  // Label maps [m,X,Y] -> [m,H,W] uint8, nearest.
  const auto resize_labels = [&](const Tensor& maps) {
    return resize ? F::interpolate(maps.unsqueeze(0).to(torch::kFloat), nearest).squeeze(0).round().to(torch::kByte)
                  : maps;
  };
  const auto encoded = [&](Tensor values, bool count) {
    values = values.contiguous();
    EncodedRow row;
    row.chunk = encode_chunk(values.data_ptr(), values.nbytes(), values.element_size(), level);
    row.digest = word_digest(values.data_ptr(), values.nbytes());
    if (count) {
      row.counts.assign(256, 0);
      const uint8_t* v = values.data_ptr<uint8_t>();
      for (int64_t i = 0; i < values.numel(); ++i) ++row.counts[v[i]];
    }
    return row;
  };
  write_rows(
      n, threads,
      [&](int64_t j) {
        Tensor slice = canonical_slice(c.image, r, k(j));
        if (writer.image_element() == 2) return encoded(slice.to(torch::kShort), false);
        slice = slice.to(torch::kFloat);
        if (resize) slice = F::interpolate(slice.unsqueeze(0).unsqueeze(0), bilinear).squeeze(0).squeeze(0);
        return encoded(slice, false);
      },
      writer, Rows::kImage);
  write_rows(
      n, threads,
      [&](int64_t j) {
        return encoded(resize_labels(canonical_slice(c.label, r, k(j)).unsqueeze(0)).squeeze(0), true);
      },
      writer, Rows::kLabel);
  if (c.raters.defined()) {
    write_rows(
        n, threads,
        [&](int64_t j) {
          std::vector<Tensor> maps;
          for (int64_t q = 0; q < c.raters.size(0); ++q) maps.push_back(canonical_slice(c.raters[q], r, k(j)));
          return encoded(resize_labels(torch::stack(maps)), false);
        },
        writer, Rows::kRaters);
  }
  if (c.majority.defined()) {
    write_rows(
        n, threads,
        [&](int64_t j) {
          return encoded(resize_labels(canonical_slice(c.majority, r, k(j)).unsqueeze(0)).squeeze(0), false);
        },
        writer, Rows::kMajority);
  }
  writer.end_case();
}

// "3 raters: 5 cases, 4 raters: 1 case".
std::string rater_counts(const std::map<int64_t, size_t>& cases_with) {
  std::string out;
  for (const auto& [count, cases] : cases_with) {
    out += (out.empty() ? "" : ", ") + std::to_string(count) + " raters: " + std::to_string(cases) +
           (cases == 1 ? " case" : " cases");
  }
  return out;
}

// The raters every case must have: --raters N, else the count most usable cases have. A tie
// cannot tell the odd cases from the good ones and asks for --raters N.
int64_t expected_raters(const std::map<int64_t, size_t>& cases_with, int rater_count) {
  if (rater_count > 0) return rater_count;
  int64_t best = 0;
  size_t most = 0, ties = 0;
  for (const auto& [count, cases] : cases_with) {
    if (cases > most) {
      best = count, most = cases, ties = 0;
    } else if (cases == most) {
      ++ties;
    }
  }
  KDSEG_CHECK(ties == 0, "the cases disagree on their number of raters and no count has most cases (",
              rater_counts(cases_with), "); name the count with --raters N");
  return best;
}

}  // namespace

std::vector<CasePlan> plan_cases(const std::vector<CaseFiles>& found, const PrepareOptions& options, Layout layout,
                                 int64_t& raters) {
  std::vector<CasePlan> plans(found.size());
  std::map<int64_t, size_t> cases_with;  // rater count -> usable cases that have it
  for (size_t i = 0; i < found.size(); ++i) {
    CasePlan& plan = plans[i];
    plan.problem = found[i].problem;
    if (!plan.problem.empty() || options.raters != RaterSearch::kAuto) continue;
    plan.raters = find_rater_files(found[i], layout, options.qubiq_task);
    plan.problem = plan.raters.problem;
    if (plan.problem.empty()) ++cases_with[static_cast<int64_t>(plan.raters.raters.size())];
  }
  raters = expected_raters(cases_with, options.rater_count);
  // Every case of a store has the same raters; a case with another count is the odd one (a
  // stray mask, a rater missing), never the cases that agree with each other.
  for (size_t i = 0; i < found.size(); ++i) {
    CasePlan& plan = plans[i];
    const auto count = static_cast<int64_t>(plan.raters.raters.size());
    if (!plan.problem.empty() || count == raters) continue;
    plan.problem =
        fs::path(found[i].image).parent_path().string() + ": " + std::to_string(count) + " raters, where " +
        (options.rater_count > 0 ? "--raters asks for " + std::to_string(raters)
                                 : std::to_string(cases_with[raters]) + " of " + std::to_string(found.size()) +
                                       " cases have " + std::to_string(raters)) +
        " (every case of a store needs the same raters; " + rater_counts(cases_with) + ")";
  }
  return plans;
}

Converted convert_cases(StoreWriter& writer, const std::vector<CaseFiles>& found, const std::vector<CasePlan>& plans,
                        const std::vector<size_t>& mine, const PrepareOptions& options, Layout layout, int threads,
                        const std::function<void()>& on_case) {
  Converted out;
  std::map<size_t, std::string>& problems = out.problems;
  for (const size_t i : mine) {
    std::string problem = plans[i].problem;
    std::optional<CaseVolumes> volumes;
    const auto start = std::chrono::steady_clock::now();
    const auto seconds = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    };
    if (problem.empty()) {
      try {
        volumes = read_case(found[i], plans[i].raters, options, layout, threads);
        log::debug("prepare: {} read and checked in {:.2f} s", found[i].id, seconds());
      } catch (const std::exception& e) {
        problem = case_problem(e, found[i]);
      }
    }
    if (!problem.empty()) {
      problems[i] = problem;
    } else if (problems.empty() || options.skip_bad_cases) {
      write_case(writer, *volumes, found[i], options, threads);
      out.written.push_back(i);
      log::debug("prepare: {} written, {} slices, after {:.2f} s", found[i].id, volumes->index.size(), seconds());
    }
    on_case();
  }
  return out;
}

void report_bad_cases(const std::map<size_t, std::string>& problems, size_t cases, const PrepareOptions& options,
                      PrepareSummary& summary) {
  std::string list;
  for (const auto& [i, problem] : problems) {
    summary.skipped.push_back(problem);
    list += "\n  " + problem;
  }
  if (!list.empty() && !options.skip_bad_cases) {
    KDSEG_THROW(problems.size(), " of ", cases,
                " cases are bad; nothing was written (pass --skip-bad-cases to leave them out):", list);
  }
  for (const auto& problem : summary.skipped) log::warn("skipping bad case: {}", problem);
  KDSEG_CHECK(problems.size() < cases, options.input, ": no usable case");
  const size_t usable = cases - problems.size();
  if (static_cast<size_t>(options.folds) > usable) {
    log::warn("{}: --folds {} with {} usable cases: {} of the folds hold no case", options.input, options.folds, usable,
              static_cast<size_t>(options.folds) - usable);
  }
}

void check_options(const PrepareOptions& options) {
  KDSEG_CHECK(options.size >= 0 && options.size <= kMaxSize, "--size must be ", kMinSize, "-", kMaxSize,
              " or 'native', got ", options.size);
  KDSEG_CHECK(options.size == 0 || options.size >= kMinSize, "--size ", options.size, " is below ", kMinSize,
              " pixels, the smallest slice kdseg's networks are built for; use --size ", kMinSize,
              " or more, or native");
  KDSEG_CHECK(options.folds >= 1, "--folds must be >= 1, got ", options.folds);
  KDSEG_CHECK(options.compression >= 0 && options.compression <= 9, "--compression must be 0-9, got ",
              options.compression);
  refuse_symlink_output(options.output);  // the rename of the new store would replace the link only
  std::error_code ec;
  KDSEG_CHECK(options.force || !fs::exists(options.output, ec), options.output, ": exists; pass --force to replace it");
}

}  // namespace kdseg::data::detail

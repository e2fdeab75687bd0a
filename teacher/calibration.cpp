#include "teacher/calibration.h"

#include <torch/torch.h>

#include <cmath>

#include "core/autocast.h"
#include "core/error.h"
#include "core/frozen_model.h"
#include "core/progress.h"
#include "data/loader.h"
#include "data/prepared_store.h"

namespace kdseg::teacher {
namespace {
using torch::Tensor;

constexpr int64_t kGrid = 241;
constexpr double kLowest = 0.1, kHighest = 10.0;
constexpr int64_t kGridChunk = 16;  // temperatures evaluated together (memory: chunk x voxels x classes)

// The grid's temperatures, float64 [kGrid].
Tensor temperature_grid() {
  return torch::logspace(std::log10(kLowest), std::log10(kHighest), kGrid, 10.0, torch::kDouble);
}

// Adds, for every temperature of the grid, the summed NLL of the kept voxels of `logits` [B,C,H,W].
void add_nll(const Tensor& logits, const Tensor& labels, int64_t ignore_index, const Tensor& grid, Tensor& sums,
             int64_t& voxels) {
  const Tensor keep = (labels != ignore_index).flatten();
  const Tensor z = logits.permute({0, 2, 3, 1}).reshape({-1, logits.size(1)}).index({keep}).to(torch::kDouble);
  const Tensor y = labels.flatten().index({keep}).view({1, -1, 1});
  voxels += z.size(0);
  if (z.size(0) == 0) return;
  for (int64_t first = 0; first < kGrid; first += kGridChunk) {
    const int64_t n = std::min(kGridChunk, kGrid - first);
    const Tensor t = grid.narrow(0, first, n).view({n, 1, 1});
    const Tensor log_p = torch::log_softmax(z.unsqueeze(0) / t, 2);  // [n,N,C]
    sums.narrow(0, first, n) -= log_p.gather(2, y.expand({n, -1, 1})).sum({1, 2});
  }
}

}  // namespace

void check_finite_logits(const Tensor& logits, const std::vector<int64_t>& rows, const data::PreparedStore& store,
                         const std::string& store_path, const FrozenModel& teacher) {
  const Tensor bad = torch::isfinite(logits).logical_not().flatten(1).any(1);  // [B]
  if (!bad.any().item<bool>()) return;
  const int64_t first = bad.nonzero()[0][0].item<int64_t>();
  const auto row = static_cast<size_t>(rows.at(static_cast<size_t>(first)));
  const Tensor values = logits[first];
  KDSEG_THROW(teacher.describe(), ": its logits are not finite on slice ", store.slice_index()[row], " of case ",
              store.case_ids()[static_cast<size_t>(store.slice_case()[row])], " (row ", row, " of ", store_path,
              "): ", torch::isnan(values).sum().item<int64_t>(), " NaN and ",
              torch::isinf(values).sum().item<int64_t>(), " infinite of ", values.numel(),
              " values; a teacher must give finite logits (check its weights, and that it was saved after training "
              "converged)");
}

TemperatureFit fit_temperature(FrozenModel& teacher, const std::string& store_path, const data::Task& task,
                               const std::vector<int>& folds, c10::Device device, int workers, int64_t batch_size,
                               dist::Communicator& comm) {
  torch::NoGradGuard no_grad;
  const data::PreparedStore store(store_path);
  const std::vector<int64_t> rows = store.rows_in_folds(folds);
  KDSEG_CHECK(!rows.empty(), store_path, ": the calibration folds hold no slice");
  const Tensor grid = temperature_grid();
  Tensor sums = torch::zeros({kGrid + 1}, torch::kDouble);  // NLL per temperature, then the voxel count
  int64_t voxels = 0;
  const auto plan = data::evaluation_plan(data::evaluation_rows(rows, comm.rank(), comm.size()), batch_size);
  Progress progress("fit temperature", static_cast<int64_t>(plan.size()), comm.rank() == 0);
  if (!plan.empty()) {
    data::LoaderOptions lo;
    lo.workers = workers;
    lo.train = false;
    lo.augment.crop = 0;
    if (store.raters() > 0) lo.raters = data::RaterLabels::kMajority;
    data::BatchLoader loader(store_path, task, lo, plan);
    Tensor nll = sums.narrow(0, 0, kGrid);
    for (size_t b = 0; auto batch = loader.next(); ++b) {
      Tensor logits;
      {
        CudaAutocast autocast(device.is_cuda());
        logits = teacher.logits(batch->images.to(device)).to(torch::kFloat).cpu();
      }
      std::vector<int64_t> batch_rows;
      for (const auto& item : plan[b]) batch_rows.push_back(item.row);
      check_finite_logits(logits, batch_rows, store, store_path, teacher);
      add_nll(logits, batch->labels, task.ignore_index, grid, nll, voxels);
      progress.advance(1);
    }
  }
  progress.finish();
  sums[kGrid] = static_cast<double>(voxels);
  dist::all_reduce_any_device(comm, sums, dist::ReduceOp::kSum);
  TemperatureFit fit;
  fit.voxels = static_cast<int64_t>(sums[kGrid].item<double>());
  KDSEG_CHECK(fit.voxels > 0, store_path, ": the calibration folds hold no labelled voxel");
  const Tensor mean = sums.narrow(0, 0, kGrid) / static_cast<double>(fit.voxels);
  const int64_t best = mean.argmin().item<int64_t>();
  const int64_t one = (kGrid - 1) / 2;  // the middle of log-spaced [0.1, 10]: T = 1 exactly
  fit.temperature = grid[best].item<double>();
  fit.at_grid_end = best == 0 || best == kGrid - 1;
  fit.nll_before = mean[one].item<double>();
  fit.nll_after = mean[best].item<double>();
  return fit;
}

}  // namespace kdseg::teacher

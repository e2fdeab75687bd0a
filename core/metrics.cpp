#include "core/metrics.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"

namespace kdseg {

SegmentationMetrics::SegmentationMetrics(int64_t cases, int64_t classes, int64_t bins, int64_t ignore_index)
    : cases_(cases), classes_(classes), bins_(bins), ignore_index_(ignore_index), stride_(3 * classes + 3 * bins),
      state_(torch::zeros({cases, 3 * classes + 3 * bins}, torch::kDouble)) {
  KDSEG_CHECK(cases > 0 && classes >= 2 && bins >= 1, "metrics: need cases > 0, classes >= 2, bins >= 1");
}

void SegmentationMetrics::set_state(const at::Tensor& state) {
  KDSEG_CHECK(state.sizes() == state_.sizes(), "metrics: state ", state.sizes(), " does not match ", state_.sizes());
  state_ = state.to(torch::kDouble).contiguous();
}

void SegmentationMetrics::add(const at::Tensor& probabilities, const at::Tensor& labels, const std::vector<int64_t>& cases) {
  KDSEG_CHECK(probabilities.dim() == 4 && probabilities.size(1) == classes_, "metrics: probabilities must be [B,",
              classes_, ",H,W], got ", probabilities.sizes());
  KDSEG_CHECK(static_cast<int64_t>(cases.size()) == probabilities.size(0), "metrics: ", cases.size(),
              " case ids for a batch of ", probabilities.size(0));
  const at::Tensor p = probabilities.detach().to(torch::kDouble).cpu();
  const at::Tensor y = labels.detach().cpu();
  for (int64_t b = 0; b < p.size(0); ++b) {
    const int64_t c = cases[static_cast<size_t>(b)];
    KDSEG_CHECK(c >= 0 && c < cases_, "metrics: case ", c, " outside [0, ", cases_, ")");
    const at::Tensor keep = y[b] != ignore_index_;
    const at::Tensor prob = p[b].flatten(1).index({torch::indexing::Slice(), keep.flatten()});  // [C,N]
    const at::Tensor label = y[b].flatten().masked_select(keep.flatten());
    if (label.numel() == 0) continue;
    const auto [confidence, predicted] = prob.max(0);
    at::Tensor row = state_[c];
    for (int64_t k = 0; k < classes_; ++k) {
      const at::Tensor is_pred = predicted == k, is_label = label == k;
      row[3 * k] += (is_pred & is_label).sum().item<double>();
      row[3 * k + 1] += is_pred.sum().item<double>();
      row[3 * k + 2] += is_label.sum().item<double>();
    }
    const at::Tensor bin = (confidence * static_cast<double>(bins_)).floor().clamp(0, bins_ - 1).to(torch::kLong);
    const at::Tensor correct = (predicted == label).to(torch::kDouble);
    const int64_t base = 3 * classes_;
    row.narrow(0, base, bins_) += torch::bincount(bin, confidence, bins_);
    row.narrow(0, base + bins_, bins_) += torch::bincount(bin, correct, bins_);
    row.narrow(0, base + 2 * bins_, bins_) += torch::bincount(bin, {}, bins_).to(torch::kDouble);
  }
}

std::vector<double> SegmentationMetrics::dice_per_case(int64_t cls) const {
  KDSEG_CHECK(cls >= 0 && cls < classes_, "metrics: class ", cls, " outside [0, ", classes_, ")");
  std::vector<double> out;
  for (int64_t c = 0; c < cases_; ++c) {
    const double both = state_[c][3 * cls].item<double>(), pred = state_[c][3 * cls + 1].item<double>(),
                 label = state_[c][3 * cls + 2].item<double>();
    const double voxels = state_[c].narrow(0, 3 * classes_ + 2 * bins_, bins_).sum().item<double>();
    if (voxels == 0) out.push_back(std::nan(""));
    else out.push_back(pred + label == 0 ? 1.0 : 2 * both / (pred + label));
  }
  return out;
}

std::vector<double> SegmentationMetrics::ece_per_case() const {
  std::vector<double> out;
  const int64_t base = 3 * classes_;
  for (int64_t c = 0; c < cases_; ++c) {
    const at::Tensor conf = state_[c].narrow(0, base, bins_), correct = state_[c].narrow(0, base + bins_, bins_),
                     count = state_[c].narrow(0, base + 2 * bins_, bins_);
    const double n = count.sum().item<double>();
    out.push_back(n == 0 ? std::nan("") : (conf - correct).abs().sum().item<double>() / n);
  }
  return out;
}

namespace {
double nan_mean(const std::vector<double>& values) {
  double sum = 0;
  int n = 0;
  for (double v : values) {
    if (!std::isnan(v)) {
      sum += v;
      ++n;
    }
  }
  return n ? sum / n : std::nan("");
}
}  // namespace

double SegmentationMetrics::mean_dice(int64_t cls) const { return nan_mean(dice_per_case(cls)); }
double SegmentationMetrics::mean_ece() const { return nan_mean(ece_per_case()); }

}  // namespace kdseg

#include "core/metrics.h"

#include <torch/torch.h>

#include <cmath>

#include "core/error.h"

namespace kdseg {
namespace {

// Per case, after the region and bin blocks: slices, slice ECE sum, NLL sum, Brier sum.
constexpr int64_t kSlices = 0, kSliceEce = 1, kNll = 2, kBrier = 3, kScalars = 4;

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

double dice_of(double both, double predicted, double labelled, double empty) {
  return predicted + labelled == 0 ? empty : 2 * both / (predicted + labelled);
}

// ECE from bins of confidence sums, correct sums and counts.
double ece_of(const at::Tensor& confidence, const at::Tensor& correct, const at::Tensor& count) {
  const double n = count.sum().item<double>();
  return n == 0 ? std::nan("") : (confidence - correct).abs().sum().item<double>() / n;
}

}  // namespace

SegmentationMetrics::SegmentationMetrics(int64_t cases, int64_t classes, std::vector<DiceRegion> regions, int64_t bins,
                                         int64_t ignore_index, double empty_dice)
    : cases_(cases),
      classes_(classes),
      bins_(bins),
      ignore_index_(ignore_index),
      empty_dice_(empty_dice),
      regions_(std::move(regions)) {
  KDSEG_CHECK(cases > 0 && classes >= 2 && bins >= 1, "metrics: need cases > 0, classes >= 2, bins >= 1");
  if (regions_.empty()) {
    for (int64_t k = 1; k < classes_; ++k) regions_.push_back({"class " + std::to_string(k), {k}});
  }
  for (const auto& r : regions_) {
    KDSEG_CHECK(!r.classes.empty(), "metrics: region '", r.name, "' has no class");
    for (int64_t k : r.classes) KDSEG_CHECK(k >= 0 && k < classes_, "metrics: region '", r.name, "' names class ", k);
  }
  state_ = torch::zeros({cases_, scalars_at() + kScalars}, torch::kDouble);
}

void SegmentationMetrics::set_state(const at::Tensor& state) {
  KDSEG_CHECK(state.sizes() == state_.sizes(), "metrics: state ", state.sizes(), " does not match ", state_.sizes());
  state_ = state.to(torch::kDouble).contiguous();
}

void SegmentationMetrics::add(const at::Tensor& probabilities, const at::Tensor& labels,
                              const std::vector<int64_t>& cases) {
  KDSEG_CHECK(probabilities.dim() == 4 && probabilities.size(1) == classes_, "metrics: probabilities must be [B,",
              classes_, ",H,W], got ", probabilities.sizes());
  KDSEG_CHECK(static_cast<int64_t>(cases.size()) == probabilities.size(0), "metrics: ", cases.size(),
              " case ids for a batch of ", probabilities.size(0));
  const at::Tensor p = probabilities.detach().to(torch::kDouble).cpu();
  const at::Tensor y = labels.detach().cpu();
  for (int64_t b = 0; b < p.size(0); ++b) {
    const int64_t c = cases[static_cast<size_t>(b)];
    KDSEG_CHECK(c >= 0 && c < cases_, "metrics: case ", c, " outside [0, ", cases_, ")");
    const at::Tensor keep = (y[b] != ignore_index_).flatten();
    const at::Tensor prob = p[b].flatten(1).index({torch::indexing::Slice(), keep});  // [C,N]
    const at::Tensor label = y[b].flatten().masked_select(keep);
    if (label.numel() == 0) continue;  // an all-ignored slice counts nowhere
    const auto [confidence, predicted] = prob.max(0);
    at::Tensor row = state_[c];
    row[scalars_at() + kSlices] += 1;
    for (size_t r = 0; r < regions_.size(); ++r) {
      at::Tensor in_pred = torch::zeros_like(label, torch::kBool), in_label = torch::zeros_like(label, torch::kBool);
      for (int64_t k : regions_[r].classes) {
        in_pred |= predicted == k;
        in_label |= label == k;
      }
      const double both = (in_pred & in_label).sum().item<double>(), pred = in_pred.sum().item<double>(),
                   lab = in_label.sum().item<double>();
      const int64_t at = region_at(r);
      row[at] += both;
      row[at + 1] += pred;
      row[at + 2] += lab;
      row[at + 3] += dice_of(both, pred, lab, empty_dice_);
    }
    const auto bin_of = [&](const at::Tensor& q) {
      return (q * static_cast<double>(bins_)).floor().clamp(0, bins_ - 1).to(torch::kLong);
    };
    const at::Tensor bin = bin_of(confidence);
    const at::Tensor correct = (predicted == label).to(torch::kDouble);
    const at::Tensor conf_sum = torch::bincount(bin, confidence, bins_),
                     correct_sum = torch::bincount(bin, correct, bins_),
                     count = torch::bincount(bin, {}, bins_).to(torch::kDouble);
    row.narrow(0, bins_at(), bins_) += conf_sum;
    row.narrow(0, bins_at() + bins_, bins_) += correct_sum;
    row.narrow(0, bins_at() + 2 * bins_, bins_) += count;
    row[scalars_at() + kSliceEce] += ece_of(conf_sum, correct_sum, count);
    const at::Tensor one_hot = torch::one_hot(label, classes_).t().to(torch::kDouble);  // [C,N]
    for (int64_t k = 0; k < classes_; ++k) {
      const at::Tensor bk = bin_of(prob[k]);
      const int64_t at = classwise_at() + 3 * bins_ * k;
      row.narrow(0, at, bins_) += torch::bincount(bk, prob[k], bins_);
      row.narrow(0, at + bins_, bins_) += torch::bincount(bk, one_hot[k], bins_);
      row.narrow(0, at + 2 * bins_, bins_) += torch::bincount(bk, {}, bins_).to(torch::kDouble);
    }
    row[scalars_at() + kNll] += -prob.gather(0, label.unsqueeze(0)).clamp_min(1e-12).log().sum().item<double>();
    row[scalars_at() + kBrier] += (prob - one_hot).pow(2).sum().item<double>();
  }
}

std::vector<double> SegmentationMetrics::dice_per_case(size_t region) const {
  KDSEG_CHECK(region < regions_.size(), "metrics: region ", region, " outside [0, ", regions_.size(), ")");
  std::vector<double> out;
  for (int64_t c = 0; c < cases_; ++c) {
    const at::Tensor r = state_[c];
    const int64_t at = region_at(region);
    out.push_back(r[scalars_at() + kSlices].item<double>() == 0
                      ? std::nan("")
                      : dice_of(r[at].item<double>(), r[at + 1].item<double>(), r[at + 2].item<double>(), empty_dice_));
  }
  return out;
}

// A per-case sum at `offset` divided by the case's slices (per_slice) or voxels.
std::vector<double> SegmentationMetrics::per_case(int64_t offset, bool per_slice) const {
  std::vector<double> out;
  for (int64_t c = 0; c < cases_; ++c) {
    const double n = per_slice ? state_[c][scalars_at() + kSlices].item<double>()
                               : state_[c].narrow(0, bins_at() + 2 * bins_, bins_).sum().item<double>();
    out.push_back(n == 0 ? std::nan("") : state_[c][offset].item<double>() / n);
  }
  return out;
}

std::vector<double> SegmentationMetrics::slice_dice_per_case(size_t region) const {
  KDSEG_CHECK(region < regions_.size(), "metrics: region ", region, " outside [0, ", regions_.size(), ")");
  return per_case(region_at(region) + 3, /*per_slice=*/true);
}

std::vector<double> SegmentationMetrics::ece_per_case() const {
  std::vector<double> out;
  for (int64_t c = 0; c < cases_; ++c) {
    const at::Tensor r = state_[c];
    out.push_back(ece_of(r.narrow(0, bins_at(), bins_), r.narrow(0, bins_at() + bins_, bins_),
                         r.narrow(0, bins_at() + 2 * bins_, bins_)));
  }
  return out;
}

std::vector<double> SegmentationMetrics::slice_ece_per_case() const { return per_case(scalars_at() + kSliceEce, true); }

std::vector<double> SegmentationMetrics::classwise_ece_per_case() const {
  std::vector<double> out;
  for (int64_t c = 0; c < cases_; ++c) {
    double sum = 0;
    for (int64_t k = 0; k < classes_; ++k) {
      const int64_t at = classwise_at() + 3 * bins_ * k;
      const at::Tensor r = state_[c];
      sum += ece_of(r.narrow(0, at, bins_), r.narrow(0, at + bins_, bins_), r.narrow(0, at + 2 * bins_, bins_));
    }
    out.push_back(sum / static_cast<double>(classes_));
  }
  return out;
}

std::vector<double> SegmentationMetrics::nll_per_case() const { return per_case(scalars_at() + kNll, false); }
std::vector<double> SegmentationMetrics::brier_per_case() const { return per_case(scalars_at() + kBrier, false); }

std::vector<int64_t> SegmentationMetrics::slices_per_case() const {
  std::vector<int64_t> out;
  for (int64_t c = 0; c < cases_; ++c)
    out.push_back(static_cast<int64_t>(state_[c][scalars_at() + kSlices].item<double>()));
  return out;
}

double SegmentationMetrics::global_dice(size_t region) const {
  KDSEG_CHECK(region < regions_.size(), "metrics: region ", region, " outside [0, ", regions_.size(), ")");
  const at::Tensor total = state_.sum(0);
  const int64_t at = region_at(region);
  if (total[scalars_at() + kSlices].item<double>() == 0) return std::nan("");
  return dice_of(total[at].item<double>(), total[at + 1].item<double>(), total[at + 2].item<double>(), empty_dice_);
}

SegmentationMetrics::Reliability SegmentationMetrics::reliability() const {
  const at::Tensor total = state_.sum(0);
  Reliability out;
  for (int64_t b = 0; b < bins_; ++b) {
    const double n = total[bins_at() + 2 * bins_ + b].item<double>();
    out.count.push_back(static_cast<int64_t>(n));
    out.confidence.push_back(n == 0 ? std::nan("") : total[bins_at() + b].item<double>() / n);
    out.accuracy.push_back(n == 0 ? std::nan("") : total[bins_at() + bins_ + b].item<double>() / n);
  }
  return out;
}

double SegmentationMetrics::mean_dice(size_t region) const { return nan_mean(dice_per_case(region)); }
double SegmentationMetrics::mean_ece() const { return nan_mean(ece_per_case()); }

// --- SoftReferenceMetrics ------------------------------------------------------------------------

namespace {
// Per case, after the threshold blocks (predicted, reference, both per region and threshold).
constexpr int64_t kSoftVoxels = 0, kSoftL1 = 1, kSoftBrier = 2, kSoftScalars = 3;
}  // namespace

SoftReferenceMetrics::SoftReferenceMetrics(int64_t cases, int64_t classes, std::vector<DiceRegion> regions)
    : cases_(cases), classes_(classes), regions_(std::move(regions)) {
  KDSEG_CHECK(cases > 0 && classes >= 2 && !regions_.empty(), "soft metrics: need cases, classes >= 2 and regions");
  state_ = torch::zeros({cases_, scalars_at() + kSoftScalars}, torch::kDouble);
}

void SoftReferenceMetrics::set_state(const at::Tensor& state) {
  KDSEG_CHECK(state.sizes() == state_.sizes(), "soft metrics: state ", state.sizes(), " does not match ",
              state_.sizes());
  state_ = state.to(torch::kDouble).contiguous();
}

void SoftReferenceMetrics::add(const at::Tensor& probabilities, const at::Tensor& reference, const at::Tensor& keep,
                               const std::vector<int64_t>& cases) {
  KDSEG_CHECK(
      probabilities.dim() == 4 && probabilities.size(1) == classes_ && reference.sizes() == probabilities.sizes(),
      "soft metrics: probabilities and reference must both be [B,", classes_, ",H,W], got ", probabilities.sizes(),
      " and ", reference.sizes());
  const at::Tensor p = probabilities.detach().to(torch::kDouble).cpu();
  const at::Tensor q = reference.detach().to(torch::kDouble).cpu();
  const at::Tensor kept = keep.detach().cpu();
  const at::Tensor thresholds = torch::arange(1, kThresholds + 1, torch::kDouble).div_(10).view({kThresholds, 1});
  for (int64_t b = 0; b < p.size(0); ++b) {
    const int64_t c = cases[static_cast<size_t>(b)];
    KDSEG_CHECK(c >= 0 && c < cases_, "soft metrics: case ", c, " outside [0, ", cases_, ")");
    const at::Tensor mask = kept[b].flatten();
    const at::Tensor pb = p[b].flatten(1).index({torch::indexing::Slice(), mask});  // [C,N]
    const at::Tensor qb = q[b].flatten(1).index({torch::indexing::Slice(), mask});
    if (pb.size(1) == 0) continue;
    at::Tensor row = state_[c];
    for (size_t r = 0; r < regions_.size(); ++r) {
      const at::Tensor index = torch::tensor(regions_[r].classes, torch::kLong);
      const at::Tensor pr = pb.index_select(0, index).sum(0) > thresholds;  // [T,N]
      const at::Tensor qr = qb.index_select(0, index).sum(0) > thresholds;
      const int64_t base = 3 * kThresholds * static_cast<int64_t>(r);
      row.narrow(0, base, kThresholds) += pr.sum(1).to(torch::kDouble);
      row.narrow(0, base + kThresholds, kThresholds) += qr.sum(1).to(torch::kDouble);
      row.narrow(0, base + 2 * kThresholds, kThresholds) += pr.logical_and(qr).sum(1).to(torch::kDouble);
    }
    const at::Tensor difference = pb - qb;
    row[scalars_at() + kSoftVoxels] += static_cast<double>(pb.size(1));
    row[scalars_at() + kSoftL1] += difference.abs().sum();
    row[scalars_at() + kSoftBrier] += difference.pow(2).sum();
  }
}

std::vector<double> SoftReferenceMetrics::threshold_dice_per_case(size_t region) const {
  const int64_t base = 3 * kThresholds * static_cast<int64_t>(region);
  std::vector<double> out;
  for (int64_t c = 0; c < cases_; ++c) {
    const at::Tensor row = state_[c];
    if (row[scalars_at() + kSoftVoxels].item<double>() == 0) {
      out.push_back(std::nan(""));
      continue;
    }
    double sum = 0;
    for (int64_t t = 0; t < kThresholds; ++t) {
      sum += dice_of(row[base + 2 * kThresholds + t].item<double>(), row[base + t].item<double>(),
                     row[base + kThresholds + t].item<double>(), 1.0);
    }
    out.push_back(sum / kThresholds);
  }
  return out;
}

std::vector<double> SoftReferenceMetrics::scalar_per_case(int64_t offset) const {
  std::vector<double> out;
  for (int64_t c = 0; c < cases_; ++c) {
    const double voxels = state_[c][scalars_at() + kSoftVoxels].item<double>();
    out.push_back(voxels == 0 ? std::nan("") : state_[c][scalars_at() + offset].item<double>() / voxels);
  }
  return out;
}

std::vector<double> SoftReferenceMetrics::l1_per_case() const { return scalar_per_case(kSoftL1); }
std::vector<double> SoftReferenceMetrics::brier_per_case() const { return scalar_per_case(kSoftBrier); }

}  // namespace kdseg

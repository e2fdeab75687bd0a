#include "core/metrics.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

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

// A reliability histogram's three blocks in a state row, each `bins` long from `at`: the sums of
// confidence, the sums of correct (or agreeing) votes, the counts.
struct Bins {
  at::Tensor confidence, correct, count;
};

Bins bins_in(const at::Tensor& row, int64_t at, int64_t bins) {
  return {row.narrow(0, at, bins), row.narrow(0, at + bins, bins), row.narrow(0, at + 2 * bins, bins)};
}

// ECE: the count-weighted mean of |mean confidence - accuracy| over the bins.
double ece_of(const Bins& b) {
  const double n = b.count.sum().item<double>();
  return n == 0 ? std::nan("") : (b.confidence - b.correct).abs().sum().item<double>() / n;
}

// |mean confidence - accuracy| of each bin that holds voxels.
std::vector<double> bin_gaps(const Bins& b) {
  std::vector<double> gaps;
  for (int64_t i = 0; i < b.count.size(0); ++i) {
    const double n = b.count[i].item<double>();
    if (n > 0) gaps.push_back(std::abs(b.confidence[i].item<double>() - b.correct[i].item<double>()) / n);
  }
  return gaps;
}

// f(c) for every case c.
template <class F>
std::vector<double> each_case(int64_t cases, F f) {
  std::vector<double> out;
  out.reserve(static_cast<size_t>(cases));
  for (int64_t c = 0; c < cases; ++c) out.push_back(f(c));
  return out;
}

// Where a case's numbers sit in its row of the state (SegmentationMetrics' offsets).
struct RowLayout {
  int64_t classes, bins, bins_at, classwise_at, scalars_at, ignore_index;
  double empty_dice;
  const std::vector<DiceRegion>* regions;
};

// One slice's voxels into a case's row in a single pass: `p` holds the class planes [C, n], `y`
// the labels [n]. Voxels labelled ignore_index count nowhere; a slice of nothing but them is not
// counted at all. Ties between classes go to the lower class, as torch's max.
template <typename T>
void accumulate_slice(const T* p, const int64_t* y, int64_t n, const RowLayout& l, double* row) {
  const int64_t classes = l.classes, bins = l.bins;
  const size_t regions = l.regions->size();
  std::vector<uint8_t> in_region(regions * static_cast<size_t>(classes), 0);
  for (size_t r = 0; r < regions; ++r) {
    for (int64_t k : (*l.regions)[r].classes) in_region[r * static_cast<size_t>(classes) + static_cast<size_t>(k)] = 1;
  }
  std::vector<double> both(regions), predicted_in(regions), labelled_in(regions);
  std::vector<double> bin_confidence(static_cast<size_t>(bins)), bin_correct(static_cast<size_t>(bins)),
      bin_count(static_cast<size_t>(bins));
  std::vector<double> classwise(static_cast<size_t>(3 * bins * classes));
  const auto bin_of = [&](double q) {
    return static_cast<size_t>(
        std::min<double>(std::max<double>(std::floor(q * static_cast<double>(bins)), 0), bins - 1));
  };
  double nll = 0, brier = 0;
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = y[i];
    if (label == l.ignore_index) continue;
    KDSEG_CHECK(label >= 0 && label < classes, "metrics: label ", label, " outside [0, ", classes, ")");
    ++kept;
    int64_t predicted = 0;
    double confidence = static_cast<double>(p[i]);
    for (int64_t k = 1; k < classes; ++k) {
      const double v = static_cast<double>(p[k * n + i]);
      if (v > confidence) {
        confidence = v;
        predicted = k;
      }
    }
    for (size_t r = 0; r < regions; ++r) {
      const uint8_t* member = &in_region[r * static_cast<size_t>(classes)];
      const bool a = member[predicted] != 0, b = member[label] != 0;
      both[r] += a && b;
      predicted_in[r] += a;
      labelled_in[r] += b;
    }
    const size_t bin = bin_of(confidence);
    bin_confidence[bin] += confidence;
    bin_correct[bin] += predicted == label;
    bin_count[bin] += 1;
    for (int64_t k = 0; k < classes; ++k) {
      const double q = static_cast<double>(p[k * n + i]), target = k == label ? 1.0 : 0.0;
      double* at = &classwise[static_cast<size_t>(3 * bins * k)];
      const size_t kb = bin_of(q);
      at[kb] += q;
      at[static_cast<size_t>(bins) + kb] += target;
      at[static_cast<size_t>(2 * bins) + kb] += 1;
      brier += (q - target) * (q - target);
    }
    nll -= std::log(std::max(static_cast<double>(p[label * n + i]), 1e-12));
  }
  if (kept == 0) return;
  row[l.scalars_at + kSlices] += 1;
  for (size_t r = 0; r < regions; ++r) {
    double* at = row + 4 * static_cast<int64_t>(r);
    at[0] += both[r];
    at[1] += predicted_in[r];
    at[2] += labelled_in[r];
    at[3] += dice_of(both[r], predicted_in[r], labelled_in[r], l.empty_dice);
  }
  double gap = 0;
  for (int64_t b = 0; b < bins; ++b) {
    const auto i = static_cast<size_t>(b);
    row[l.bins_at + b] += bin_confidence[i];
    row[l.bins_at + bins + b] += bin_correct[i];
    row[l.bins_at + 2 * bins + b] += bin_count[i];
    gap += std::abs(bin_confidence[i] - bin_correct[i]);
  }
  row[l.scalars_at + kSliceEce] += gap / static_cast<double>(kept);
  for (size_t i = 0; i < classwise.size(); ++i) row[l.classwise_at + static_cast<int64_t>(i)] += classwise[i];
  row[l.scalars_at + kNll] += nll;
  row[l.scalars_at + kBrier] += brier;
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
  // Float probabilities are read as they are; every sum is in float64, as they were converted first.
  const at::Tensor p = probabilities.detach().cpu().scalar_type() == torch::kFloat
                           ? probabilities.detach().cpu().contiguous()
                           : probabilities.detach().cpu().to(torch::kDouble).contiguous();
  const at::Tensor y = labels.detach().cpu().to(torch::kLong).contiguous();
  const int64_t pixels = p.size(2) * p.size(3);
  RowLayout layout{classes_, bins_, bins_at(), classwise_at(), scalars_at(), ignore_index_, empty_dice_, &regions_};
  for (int64_t b = 0; b < p.size(0); ++b) {
    const int64_t c = cases[static_cast<size_t>(b)];
    KDSEG_CHECK(c >= 0 && c < cases_, "metrics: case ", c, " outside [0, ", cases_, ")");
    double* row = state_[c].data_ptr<double>();
    const int64_t* label = y.data_ptr<int64_t>() + b * pixels;
    if (p.scalar_type() == torch::kFloat) {
      accumulate_slice(p.data_ptr<float>() + b * classes_ * pixels, label, pixels, layout, row);
    } else {
      accumulate_slice(p.data_ptr<double>() + b * classes_ * pixels, label, pixels, layout, row);
    }
  }
}

at::Tensor predicted_classes(const at::Tensor& probabilities) {
  KDSEG_CHECK(probabilities.dim() == 4 && probabilities.size(1) <= 255, "predicted_classes: probabilities must be ",
              "[B,C,H,W] with C <= 255, got ", probabilities.sizes());
  const at::Tensor p = probabilities.detach().cpu().to(torch::kFloat).contiguous();
  const int64_t batch = p.size(0), classes = p.size(1), pixels = p.size(2) * p.size(3);
  at::Tensor out = torch::empty({batch, p.size(2), p.size(3)}, torch::kByte);
  const float* in = p.data_ptr<float>();
  uint8_t* k = out.data_ptr<uint8_t>();
  for (int64_t b = 0; b < batch; ++b) {
    const float* planes = in + b * classes * pixels;
    uint8_t* best_class = k + b * pixels;
    std::vector<float> best(planes, planes + pixels);
    std::fill(best_class, best_class + pixels, 0);
    for (int64_t c = 1; c < classes; ++c) {
      const float* plane = planes + c * pixels;
      for (int64_t i = 0; i < pixels; ++i) {
        if (plane[i] > best[static_cast<size_t>(i)]) {
          best[static_cast<size_t>(i)] = plane[i];
          best_class[i] = static_cast<uint8_t>(c);
        }
      }
    }
  }
  return out;
}

std::vector<double> SegmentationMetrics::dice_per_case(size_t region) const {
  KDSEG_CHECK(region < regions_.size(), "metrics: region ", region, " outside [0, ", regions_.size(), ")");
  const int64_t at = region_at(region);
  return each_case(cases_, [&](int64_t c) {
    const at::Tensor r = state_[c];
    return r[scalars_at() + kSlices].item<double>() == 0
               ? std::nan("")
               : dice_of(r[at].item<double>(), r[at + 1].item<double>(), r[at + 2].item<double>(), empty_dice_);
  });
}

// A per-case sum at `offset` divided by the case's slices (per_slice) or voxels.
std::vector<double> SegmentationMetrics::per_case(int64_t offset, bool per_slice) const {
  return each_case(cases_, [&](int64_t c) {
    const double n = per_slice ? state_[c][scalars_at() + kSlices].item<double>()
                               : bins_in(state_[c], bins_at(), bins_).count.sum().item<double>();
    return n == 0 ? std::nan("") : state_[c][offset].item<double>() / n;
  });
}

std::vector<double> SegmentationMetrics::slice_dice_per_case(size_t region) const {
  KDSEG_CHECK(region < regions_.size(), "metrics: region ", region, " outside [0, ", regions_.size(), ")");
  return per_case(region_at(region) + 3, /*per_slice=*/true);
}

std::vector<double> SegmentationMetrics::ece_per_case() const {
  return each_case(cases_, [&](int64_t c) { return ece_of(bins_in(state_[c], bins_at(), bins_)); });
}

std::vector<double> SegmentationMetrics::slice_ece_per_case() const { return per_case(scalars_at() + kSliceEce, true); }

std::vector<double> SegmentationMetrics::classwise_ece_per_case() const {
  return each_case(cases_, [&](int64_t c) {
    double sum = 0;
    for (int64_t k = 0; k < classes_; ++k) sum += ece_of(bins_in(state_[c], classwise_at() + 3 * bins_ * k, bins_));
    return sum / static_cast<double>(classes_);
  });
}

std::vector<double> SegmentationMetrics::ace_per_case() const {
  return each_case(cases_, [&](int64_t c) { return nan_mean(bin_gaps(bins_in(state_[c], bins_at(), bins_))); });
}

std::vector<double> SegmentationMetrics::mce_per_case() const {
  return each_case(cases_, [&](int64_t c) {
    const std::vector<double> gaps = bin_gaps(bins_in(state_[c], bins_at(), bins_));
    return gaps.empty() ? std::nan("") : *std::max_element(gaps.begin(), gaps.end());
  });
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
  const Bins total = bins_in(state_.sum(0), bins_at(), bins_);
  Reliability out;
  for (int64_t b = 0; b < bins_; ++b) {
    const double n = total.count[b].item<double>();
    out.count.push_back(static_cast<int64_t>(n));
    out.confidence.push_back(n == 0 ? std::nan("") : total.confidence[b].item<double>() / n);
    out.accuracy.push_back(n == 0 ? std::nan("") : total.correct[b].item<double>() / n);
  }
  return out;
}

double SegmentationMetrics::mean_dice(size_t region) const { return nan_mean(dice_per_case(region)); }
double SegmentationMetrics::mean_ece() const { return nan_mean(ece_per_case()); }

at::Tensor boundary_band(const at::Tensor& foreground, double row_mm, double col_mm, double half_width_mm) {
  KDSEG_CHECK(foreground.dim() == 2 && row_mm > 0 && col_mm > 0 && half_width_mm >= 0,
              "boundary_band: needs an [H,W] mask and positive spacings, got ", foreground.sizes(), ", ", row_mm, " x ",
              col_mm, " mm");
  // The offsets (dy, dx) at which a pixel's footprint comes nearer than the half width to the
  // footprint of a pixel of the other side: the gap between the two rectangles, as a kernel.
  const auto ry = static_cast<int64_t>(std::floor(half_width_mm / row_mm)) + 1;
  const auto rx = static_cast<int64_t>(std::floor(half_width_mm / col_mm)) + 1;
  at::Tensor reach = torch::zeros({1, 1, 2 * ry + 1, 2 * rx + 1}, torch::kFloat);
  for (int64_t dy = -ry; dy <= ry; ++dy) {
    for (int64_t dx = -rx; dx <= rx; ++dx) {
      const double y = static_cast<double>(std::max<int64_t>(0, std::abs(dy) - 1)) * row_mm;
      const double x = static_cast<double>(std::max<int64_t>(0, std::abs(dx) - 1)) * col_mm;
      if (y * y + x * x < half_width_mm * half_width_mm) reach[0][0][dy + ry][dx + rx] = 1;
    }
  }
  const at::Tensor inside = foreground.to(torch::kFloat).unsqueeze(0).unsqueeze(0);
  const auto near = [&](const at::Tensor& mask) {
    return torch::conv2d(mask, reach, {}, 1, {ry, rx}).squeeze(0).squeeze(0) > 0.5;
  };
  const at::Tensor fg = foreground.to(torch::kBool);
  return fg.logical_and(near(1 - inside)).logical_or(fg.logical_not().logical_and(near(inside)));
}

// --- SoftReferenceMetrics ------------------------------------------------------------------------

namespace {
// Per case, after the threshold blocks (predicted, reference, both per region and threshold).
constexpr int64_t kSoftVoxels = 0, kSoftL1 = 1, kSoftBrier = 2, kSoftScalars = 3;
}  // namespace

SoftReferenceMetrics::SoftReferenceMetrics(int64_t cases, int64_t classes, std::vector<DiceRegion> regions,
                                           int64_t bins)
    : cases_(cases), classes_(classes), bins_(bins), regions_(std::move(regions)) {
  KDSEG_CHECK(cases > 0 && classes >= 2 && !regions_.empty() && bins > 0,
              "soft metrics: need cases, classes >= 2, regions and bins");
  state_ = torch::zeros({cases_, bins_at() + 3 * bins_}, torch::kDouble);
}

// The rater ECE's bins after the scalars: confidence sums, agreeing-rater fractions, counts.
int64_t SoftReferenceMetrics::bins_at() const { return scalars_at() + kSoftScalars; }

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
    const auto [confidence, predicted] = pb.max(0);
    const at::Tensor agreeing = qb.gather(0, predicted.unsqueeze(0)).squeeze(0);
    const at::Tensor bin = (confidence * static_cast<double>(bins_)).floor().clamp(0, bins_ - 1).to(torch::kLong);
    row.narrow(0, bins_at(), bins_).index_add_(0, bin, confidence);
    row.narrow(0, bins_at() + bins_, bins_).index_add_(0, bin, agreeing);
    row.narrow(0, bins_at() + 2 * bins_, bins_).index_add_(0, bin, torch::ones_like(confidence));
    row[scalars_at() + kSoftVoxels] += static_cast<double>(pb.size(1));
    row[scalars_at() + kSoftL1] += difference.abs().sum();
    row[scalars_at() + kSoftBrier] += difference.pow(2).sum();
  }
}

std::vector<double> SoftReferenceMetrics::threshold_dice_per_case(size_t region) const {
  const int64_t base = 3 * kThresholds * static_cast<int64_t>(region);
  return each_case(cases_, [&](int64_t c) {
    const at::Tensor row = state_[c];
    if (row[scalars_at() + kSoftVoxels].item<double>() == 0) return std::nan("");
    double sum = 0;
    for (int64_t t = 0; t < kThresholds; ++t) {
      sum += dice_of(row[base + 2 * kThresholds + t].item<double>(), row[base + t].item<double>(),
                     row[base + kThresholds + t].item<double>(), 1.0);
    }
    return sum / kThresholds;
  });
}

std::vector<double> SoftReferenceMetrics::scalar_per_case(int64_t offset) const {
  return each_case(cases_, [&](int64_t c) {
    const double voxels = state_[c][scalars_at() + kSoftVoxels].item<double>();
    return voxels == 0 ? std::nan("") : state_[c][scalars_at() + offset].item<double>() / voxels;
  });
}

std::vector<double> SoftReferenceMetrics::l1_per_case() const { return scalar_per_case(kSoftL1); }
std::vector<double> SoftReferenceMetrics::brier_per_case() const { return scalar_per_case(kSoftBrier); }

std::vector<double> SoftReferenceMetrics::rater_ece_per_case() const {
  return each_case(cases_, [&](int64_t c) { return ece_of(bins_in(state_[c], bins_at(), bins_)); });
}

}  // namespace kdseg

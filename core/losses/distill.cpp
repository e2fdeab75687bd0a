#include "core/losses/distill.h"

#include <torch/torch.h>

#include <initializer_list>
#include <vector>

#include "core/error.h"

namespace kdseg::losses {
namespace {
using torch::Tensor;
namespace F = torch::nn::functional;

Tensor as_float(const Tensor& t) {
  return t.scalar_type() == torch::kFloat || t.scalar_type() == torch::kDouble ? t : t.to(torch::kFloat);
}

// Mean of `per_pixel` [B,*] over `mask` [B,*] (bool); 0 with zero gradient when nothing is kept.
Tensor masked_mean(const Tensor& per_pixel, const Tensor& mask) {
  if (!mask.defined()) return per_pixel.mean();
  const Tensor m = mask.to(per_pixel.scalar_type());
  return (per_pixel * m).sum() / m.sum().clamp_min(1.0);
}

Tensor keep_of(const Tensor& labels, std::optional<int64_t> ignore_index, const Tensor& keep) {
  Tensor k = keep;
  if (labels.defined() && ignore_index.has_value()) {
    const Tensor not_ignored = labels != *ignore_index;
    k = k.defined() ? k.logical_and(not_ignored) : not_ignored;
  }
  return k;
}

// Erosion of binary maps [B,K,*] (float 0/1) with a k^d window clipped at the border.
Tensor erode(const Tensor& maps, int64_t k) {
  const Tensor inverted = 1.0 - maps;
  const Tensor dilated = maps.dim() == 4 ? F::max_pool2d(inverted, F::MaxPool2dFuncOptions(k).stride(1).padding(k / 2))
                                         : F::max_pool3d(inverted, F::MaxPool3dFuncOptions(k).stride(1).padding(k / 2));
  return 1.0 - dilated;
}
}  // namespace

namespace {
// Per-pixel cross-entropy [B,*] (0 on ignored pixels) and the kept-pixel mask.
// `check_range` validates the labels (a host synchronisation): once per set of labels suffices.
std::pair<Tensor, Tensor> cross_entropy_per_pixel(const Tensor& logits, const Tensor& labels,
                                                  std::optional<int64_t> ignore_index, bool check_range = true);
// Per-pixel T^2 KL [B,*].
Tensor kl_per_pixel(const Tensor& logits, const Tensor& target, double temperature);
}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, std::optional<int64_t> ignore_index) {
  const auto [nll, keep] = cross_entropy_per_pixel(logits, labels, ignore_index);
  return masked_mean(nll, keep);
}

namespace {
std::pair<Tensor, Tensor> cross_entropy_per_pixel(const Tensor& logits, const Tensor& labels,
                                                  std::optional<int64_t> ignore_index, bool check_range) {
  KDSEG_CHECK(labels.scalar_type() == torch::kLong, "cross_entropy: labels must be int64, got ", labels.scalar_type());
  KDSEG_CHECK(logits.dim() == labels.dim() + 1 && logits.size(0) == labels.size(0) &&
                  logits.sizes().slice(2) == labels.sizes().slice(1),
              "cross_entropy: labels ", labels.sizes(), " do not match logits ", logits.sizes(), " ([B,C,*] vs [B,*])");
  const int64_t classes = logits.size(1);
  const Tensor keep = keep_of(labels, ignore_index, {});
  if (check_range) {
    Tensor bad = (labels < 0).logical_or(labels >= classes);
    if (keep.defined()) bad = bad.logical_and(keep);
    KDSEG_CHECK(!bad.any().item<bool>(), "cross_entropy: labels outside [0, ", classes,
                ") on pixels that are not ignored; set ignore_index");
  }
  const Tensor log_prob = torch::log_softmax(as_float(logits), 1);
  const Tensor nll = -log_prob.gather(1, labels.clamp(0, classes - 1).unsqueeze(1)).squeeze(1);
  return {nll, keep};
}

Tensor kl_per_pixel(const Tensor& logits, const Tensor& target, double temperature) {
  KDSEG_CHECK(temperature > 0, "kl_divergence: temperature must be > 0, got ", temperature);
  KDSEG_CHECK(target.sizes() == logits.sizes(), "kl_divergence: target ", target.sizes(), " differs from logits ",
              logits.sizes());
  const Tensor z = as_float(logits);
  const Tensor log_q = torch::log_softmax(z / temperature, 1);
  const Tensor p = target.detach().to(z.scalar_type());
  // xlogy(p, p) is 0 where p is 0, as in nn.KLDivLoss.
  return (torch::xlogy(p, p) - p * log_q).sum(1) * (temperature * temperature);
}
}  // namespace

Tensor kl_divergence(const Tensor& logits, const Tensor& target, double temperature, const Tensor& keep) {
  return masked_mean(kl_per_pixel(logits, target, temperature), keep);
}

SmoothedLabels boundary_label_smoothing(const Tensor& labels, int64_t num_classes, double epsilon, int64_t kernel_size,
                                        std::optional<int64_t> ignore_index, bool check_labels) {
  KDSEG_CHECK(labels.scalar_type() == torch::kLong && (labels.dim() == 3 || labels.dim() == 4),
              "boundary_label_smoothing: labels must be int64 [B,H,W] or [B,D,H,W], got ", labels.scalar_type(), " ",
              labels.sizes());
  KDSEG_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, "boundary_label_smoothing: kernel size must be odd, got ",
              kernel_size);
  KDSEG_CHECK(epsilon >= 0 && epsilon <= 1, "boundary_label_smoothing: epsilon must be in [0, 1], got ", epsilon);
  SmoothedLabels out;
  out.keep = ignore_index.has_value() ? labels != *ignore_index : torch::ones_like(labels, torch::kBool);
  if (check_labels) {
    const Tensor in_range = (labels >= 0).logical_and(labels < num_classes);
    KDSEG_CHECK(in_range.logical_or(out.keep.logical_not()).all().item<bool>(),
                "boundary_label_smoothing: labels outside [0, ", num_classes, ") that are not ignore_index");
  }
  const Tensor keep_f = out.keep.unsqueeze(1).to(torch::kFloat);
  const Tensor one_hot =
      torch::one_hot(labels.clamp(0, num_classes - 1), num_classes).movedim(-1, 1).to(torch::kFloat) * keep_f;
  const Tensor own_survives = (erode(one_hot, kernel_size) * one_hot).sum(1) > 0.5;
  const Tensor keep_survives = erode(keep_f, kernel_size).squeeze(1) > 0.5;
  out.boundary = out.keep.logical_and(own_survives.logical_not()).logical_and(keep_survives);
  const Tensor smoothed = one_hot * (1.0 - epsilon) + epsilon / static_cast<double>(num_classes);
  out.soft = torch::where(out.boundary.unsqueeze(1), smoothed, one_hot);
  return out;
}

namespace {
// CE and KL are this rank's sums over kept pixels divided by the kept pixels of all ranks.
// The counts stay tensors and every count of the step is summed over ranks at once, so the
// terms cost one collective and no host synchronisation.
struct Term {
  Tensor main, aux;  // per pixel, main and auxiliary heads
  Tensor mask;       // kept pixels, or undefined: all
  Tensor total;      // kept pixels of all ranks
};

// Sets `total` of each term that is present (main defined): a count of every pixel when no mask
// is given.
void count_kept_pixels(std::initializer_list<Term*> terms, const GlobalBatch& global) {
  std::vector<Term*> present;
  std::vector<Tensor> counts;
  for (Term* term : terms) {
    if (!term->main.defined()) continue;
    present.push_back(term);
    counts.push_back(term->mask.defined() ? term->mask.sum(torch::kDouble)
                                          : torch::scalar_tensor(static_cast<double>(term->main.numel()),
                                                                 term->main.options().dtype(torch::kDouble)));
  }
  if (!counts.empty()) {
    Tensor totals = torch::stack(counts);
    if (global.sum_over_ranks) totals = global.sum_over_ranks(totals);
    for (size_t i = 0; i < present.size(); ++i) present[i]->total = totals[static_cast<int64_t>(i)];
  }
}

// w_main * mean(main) + w_aux * mean(aux), each mean over the kept pixels of all ranks.
Tensor global_mean(const Term& term, const GlobalBatch& global, const ObjectiveWeights& w) {
  const auto dtype = term.main.scalar_type();  // the heads' per-pixel terms share it
  const Tensor scale = (static_cast<double>(global.ranks) / term.total.clamp_min(1.0)).to(dtype);
  const Tensor weight = term.mask.defined() ? term.mask.to(dtype) : Tensor();
  const auto mean_of = [&](const Tensor& per_pixel) {
    return (weight.defined() ? per_pixel * weight : per_pixel).sum() * scale;
  };
  Tensor mean = w.main() * mean_of(term.main);
  if (term.aux.defined()) mean = mean + w.aux() * mean_of(term.aux);
  return mean;
}

// Soft labels and the teacher's soft targets become their weighted mixture; soft labels alone
// are the soft target.
ObjectiveInputs with_one_soft_target(const ObjectiveInputs& in, const ObjectiveWeights& w) {
  if (!in.label_soft.defined()) return in;
  KDSEG_CHECK(!in.labels.defined(), "objective: give hard labels or soft labels, not both");
  ObjectiveInputs out = in;
  out.label_soft = at::Tensor();
  out.soft = in.soft.defined() ? (w.label() * in.label_soft + w.teacher() * in.soft) / (w.label() + w.teacher())
                               : in.label_soft;
  return out;
}
}  // namespace

SegmentationObjective::SegmentationObjective(ObjectiveWeights weights, DmlOptions dml,
                                             std::optional<int64_t> ignore_index, GlobalBatch global)
    : weights_(weights), dml_(std::move(dml)), ignore_index_(ignore_index), global_(std::move(global)) {
  dml_.ignore_index(ignore_index_);
  dml_.validate();
  KDSEG_CHECK(weights_.temperature() > 0, "objective: temperature must be > 0, got ", weights_.temperature());
}

LossTerms SegmentationObjective::operator()(const ObjectiveInputs& given) const {
  const ObjectiveInputs in = with_one_soft_target(given, weights_);
  const bool hard = in.labels.defined(), soft = in.soft.defined();
  KDSEG_CHECK(in.logits.defined() && (hard || soft), "objective: needs logits and hard labels or soft targets");
  const ObjectiveWeights& w = weights_;
  const double label_factor = hard && soft ? w.label() : 1.0;
  const double teacher_factor = hard && soft ? w.teacher() : 1.0;
  const double t = w.temperature();
  const Tensor keep = keep_of(in.labels, ignore_index_, in.keep);
  const Tensor zero = torch::zeros({}, as_float(in.logits).options());
  Term ce, kl;
  if (hard) {
    // With an explicit keep mask, excluded pixels are dropped from CE by marking them ignored.
    const int64_t drop = ignore_index_.value_or(-1);
    const Tensor labels =
        in.keep.defined() ? torch::where(in.keep, in.labels, torch::full_like(in.labels, drop)) : in.labels;
    const std::optional<int64_t> ignore = in.keep.defined() ? std::optional<int64_t>(drop) : ignore_index_;
    std::tie(ce.main, ce.mask) = cross_entropy_per_pixel(in.logits, labels, ignore, !in.labels_checked);
    if (in.aux_logits.defined()) ce.aux = cross_entropy_per_pixel(in.aux_logits, labels, ignore, false).first;
  }
  if (soft) {
    KDSEG_CHECK(in.soft.sizes() == in.logits.sizes(), "objective: soft targets ", in.soft.sizes(),
                " differ from logits ", in.logits.sizes());
    kl.main = kl_per_pixel(in.logits, in.soft, t);
    if (in.aux_logits.defined()) kl.aux = kl_per_pixel(in.aux_logits, in.soft, t);
    kl.mask = keep;
  }
  count_kept_pixels({&ce, &kl}, global_);
  LossTerms terms{zero, zero, zero, zero, zero};
  if (hard) {
    terms.ce = label_factor * w.ce() * global_mean(ce, global_, w);
    DmlOptions dml = dml_;
    dml.check_labels(dml.check_labels() && !in.labels_checked);
    terms.dml_hard = label_factor * w.dml() * dml_loss(in.logits, in.labels, in.keep, dml, global_.dml_statistics);
  }
  if (soft) {
    terms.kl = teacher_factor * w.ce() * global_mean(kl, global_, w);
    terms.dml_soft = teacher_factor * w.dml() * dml_loss(in.logits, in.soft, keep, dml_, global_.dml_statistics);
  }
  terms.total = terms.ce + terms.kl + terms.dml_hard + terms.dml_soft;
  return terms;
}

}  // namespace kdseg::losses

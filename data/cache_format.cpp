#include "data/soft_label_cache.h"

#include <torch/torch.h>

#include "core/error.h"

namespace kdseg::data {
using torch::Tensor;

namespace {

struct ProvenanceField {
  const char* name;
  std::string CacheProvenance::*member;
  bool identity;
};

// The attributes' order on disk: the identity fields first.
const ProvenanceField kProvenanceFields[] = {
    {"format", &CacheProvenance::format, true},
    {"temperature", &CacheProvenance::temperature, true},
    {"teacher_hash", &CacheProvenance::teacher_hash, true},
    {"store_hash", &CacheProvenance::store_hash, true},
    {"folds", &CacheProvenance::folds, true},
    {"classes", &CacheProvenance::classes, true},
    {"calibration", &CacheProvenance::calibration, true},
    {"teacher_file", &CacheProvenance::teacher_file, false},
    {"store_file", &CacheProvenance::store_file, false},
    {"tool_version", &CacheProvenance::tool_version, false},
    {"created", &CacheProvenance::created, false},
};

std::string CacheProvenance::*member_of(const std::string& field) {
  for (const auto& f : kProvenanceFields) {
    if (field == f.name) return f.member;
  }
  KDSEG_THROW("no provenance field '", field, "'");
}

std::vector<std::string> field_names(bool identity_only) {
  std::vector<std::string> out;
  for (const auto& f : kProvenanceFields) {
    if (f.identity || !identity_only) out.emplace_back(f.name);
  }
  return out;
}

}  // namespace

// --- formats and provenance ------------------------------------------------------------------------

const std::vector<std::string>& CacheProvenance::fields() {
  static const std::vector<std::string> names = field_names(/*identity_only=*/false);
  return names;
}

const std::vector<std::string>& CacheProvenance::identity_fields() {
  static const std::vector<std::string> names = field_names(/*identity_only=*/true);
  return names;
}

std::string CacheProvenance::get(const std::string& field) const { return this->*member_of(field); }

void CacheProvenance::set(const std::string& field, const std::string& value) { this->*member_of(field) = value; }

// --- quantisation and encoding -----------------------------------------------------------------------

Tensor quantise_probabilities(const Tensor& probs) {
  KDSEG_CHECK(probs.dim() >= 3, "quantise_probabilities: expected [..., C, H, W], got ", probs.dim(), " dims");
  const int64_t class_dim = probs.dim() - 3;
  const Tensor scaled = probs.to(torch::kFloat).clamp(0, 1) * 255.0f;
  const Tensor whole = scaled.floor();
  const Tensor remainder = scaled - whole;
  // Units still to hand out per voxel (0 .. C-1): to the largest remainders, lower class first on ties.
  const Tensor deficit = (255.0f - whole.sum(class_dim, /*keepdim=*/true)).round().clamp_min(0);
  const Tensor order = std::get<1>(torch::sort(remainder, /*stable=*/true, class_dim, /*descending=*/true));
  const Tensor rank = torch::argsort(order, class_dim);
  return (whole + (rank < deficit).to(torch::kFloat)).clamp(0, 255).to(torch::kByte);
}

Tensor dequantise_probabilities(const Tensor& quantised) { return quantised.to(torch::kFloat) * (1.0f / 255.0f); }

Tensor encode_soft_labels(const Tensor& logits, CacheFormat format, double temperature) {
  KDSEG_CHECK(logits.dim() >= 3, "encode_soft_labels: expected [..., C, H, W], got ", logits.dim(), " dims");
  if (format == CacheFormat::kProbsU8) {
    return quantise_probabilities(torch::softmax(logits / temperature, logits.dim() - 3));
  }
  return logits.clamp(-65504.0, 65504.0).to(torch::kHalf);
}

}  // namespace kdseg::data

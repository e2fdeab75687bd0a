#include "data/raters.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "core/error.h"
#include "core/random.h"

namespace kdseg::data {
namespace {
namespace fs = std::filesystem;
using torch::Tensor;

// The stream of derive_seed that draws a sample's rater ("rater" in ASCII).
constexpr uint64_t kRaterStream = 0x7261746572;

const std::regex kInstanceFile(R"((kidney|tumor|cyst)_instance-(\d+)_annotation-(\d+)\.nii(\.gz)?)");
const std::regex kQubiqFile(R"(task(\d+)_seg(\d+)\.nii(\.gz)?)");

// KiTS regions in painting order (later over earlier) and their label values.
struct KitsRegion {
  const char* name;
  uint8_t value;
};
constexpr KitsRegion kKitsRegions[] = {{"kidney", 1}, {"cyst", 3}, {"tumor", 2}};

// [region][instance][annotation] -> file.
using InstanceFiles = std::map<std::string, std::map<int, std::map<int, std::string>>>;

// Two files of one rater's annotation ("..._annotation-1.nii" beside "..._annotation-1.nii.gz" or
// "..._annotation-01.nii.gz"): which one the rater meant cannot be told, so the case is bad.
RaterFiles two_names(const std::string& one, const std::string& other) {
  RaterFiles out;
  const auto [first, second] = std::minmax(one, other);
  out.problem = first + " and " + second + ": two files of one annotation; remove one";
  return out;
}

RaterFiles kits_raters(const fs::path& case_folder) {
  RaterFiles out;
  InstanceFiles found;
  std::string extension = ".nii.gz";
  fs::path folder;
  for (const char* name : {"instances", "segmentations"}) {
    std::error_code ec;
    if (!fs::is_directory(case_folder / name, ec)) continue;
    folder = case_folder / name;
    for (const auto& entry : fs::directory_iterator(folder)) {
      std::smatch m;
      const std::string file = entry.path().filename().string();
      if (!std::regex_match(file, m, kInstanceFile)) continue;
      const std::string path = entry.path().string();
      auto& slot = found[m[1].str()][number_in_name(m[2].str(), path)][number_in_name(m[3].str(), path)];
      if (!slot.empty()) return two_names(slot, path);
      slot = path;
      extension = m[4].matched ? ".nii.gz" : ".nii";
    }
    if (!found.empty()) break;
  }
  int raters = 0;
  for (const auto& [region, instances] : found) {
    for (const auto& [instance, annotations] : instances) raters = std::max(raters, annotations.rbegin()->first);
  }
  if (raters == 0) return out;
  out.instances = true;
  out.raters.resize(static_cast<size_t>(raters));
  for (const KitsRegion& region : kKitsRegions) {
    const auto r = found.find(region.name);
    if (r == found.end()) continue;
    for (const auto& [instance, annotations] : r->second) {
      for (int j = 1; j <= raters; ++j) {
        const auto a = annotations.find(j);
        if (a == annotations.end()) {
          out.problem = (folder / (std::string(region.name) + "_instance-" + std::to_string(instance) + "_annotation-" +
                                   std::to_string(j) + extension))
                            .string() +
                        ": missing (the case's other annotations have " + std::to_string(raters) + " raters)";
          out.raters.clear();
          return out;
        }
        out.raters[static_cast<size_t>(j - 1)].push_back({a->second, region.value});
      }
    }
  }
  return out;
}

RaterFiles qubiq_raters(const fs::path& case_folder, int task) {
  RaterFiles out;
  std::map<int, std::string> segs;
  std::string extension = ".nii.gz";
  for (const auto& entry : fs::directory_iterator(case_folder)) {
    std::smatch m;
    const std::string file = entry.path().filename().string();
    const std::string path = entry.path().string();
    if (!std::regex_match(file, m, kQubiqFile) || number_in_name(m[1].str(), path) != task) continue;
    std::string& slot = segs[number_in_name(m[2].str(), path)];
    if (!slot.empty()) return two_names(slot, path);
    slot = path;
    extension = m[3].matched ? ".nii.gz" : ".nii";
  }
  // The path rater j's mask would have.
  const auto seg_path = [&](int j) {
    char name[32];
    std::snprintf(name, sizeof name, "task%02d_seg%02d", task, j);
    return (case_folder / (name + extension)).string();
  };
  if (segs.empty()) {
    out.problem = seg_path(1) + ": missing (a qubiq case needs its raters' masks)";
    return out;
  }
  const int raters = segs.rbegin()->first;
  for (int j = 1; j <= raters; ++j) {
    const auto s = segs.find(j);
    if (s == segs.end()) {
      out.problem = seg_path(j) + ": missing (the case has masks of raters up to " + std::to_string(raters) + ")";
      out.raters.clear();
      return out;
    }
    out.raters.push_back({{s->second, 1}});
  }
  return out;
}

// The maps are built in the files' own voxel order [K,J,I], where read_nifti's voxels are
// contiguous, and returned as [.., I,J,K] views: whole-volume operations on strided views run
// several times slower.
std::vector<int64_t> stored_shape(const Volume& image, int64_t raters) {
  const auto s = image.voxels.sizes();
  return raters < 0 ? std::vector<int64_t>{s[2], s[1], s[0]} : std::vector<int64_t>{raters, s[2], s[1], s[0]};
}

// A rater's mask holds 0 and 1, or its part's label value: anything else (a probability map, an
// image saved in its place) would be painted wherever it is nonzero. Checked a slab of planes at
// a time, so that a CT-sized mask needs no mask-sized temporaries.
void check_mask_values(const Volume& mask, uint8_t value) {
  const Tensor planes = mask.voxels.permute({2, 1, 0});  // the file's [K,J,I] order, contiguous
  constexpr int64_t kSlab = 16;
  for (int64_t k = 0; k < planes.size(0); k += kSlab) {
    const Tensor v = planes.narrow(0, k, std::min(kSlab, planes.size(0) - k));
    const Tensor fine = (v == 0).logical_or_(v == 1).logical_or_(v == value);
    if (fine.all().item<bool>()) continue;
    const Tensor bad = std::get<0>(at::_unique(v.masked_select(fine.logical_not()).to(torch::kDouble)));
    std::string list;
    for (int64_t i = 0; i < std::min<int64_t>(bad.numel(), 5); ++i) {
      list += (list.empty() ? "" : ", ") + std::to_string(bad[i].item<double>());
    }
    KDSEG_THROW(mask.path, ": values ", list, bad.numel() > 5 ? ", ..." : "", " in a rater's mask, which holds 0 and 1",
                value > 1 ? " (or " + std::to_string(value) + ")" : "",
                ": not a mask (a probability map or an image in its place?)");
  }
}

// The nonzero voxels of a rater's mask file [K,J,I] bool, checked against the image's grid and
// for values other than 0, 1 and its part's `value`.
Tensor read_mask(const std::string& file, const Volume& image, uint8_t value) {
  const Volume mask = read_nifti(file, /*require_finite=*/true, VoxelType::kAsStored);
  check_same_grid(mask, image);
  check_mask_values(mask, value);
  return mask.voxels.permute({2, 1, 0}) != 0;
}

}  // namespace

RaterFiles find_rater_files(const CaseFiles& files, Layout layout, int qubiq_task) {
  const fs::path case_folder = fs::path(files.image).parent_path();
  switch (layout) {
    case Layout::kKits19:
    case Layout::kKits23: return kits_raters(case_folder);
    case Layout::kQubiq: return qubiq_raters(case_folder, qubiq_task);
    case Layout::kLits: break;
  }
  return {};
}

Tensor read_raters(const RaterFiles& files, const Volume& image) {
  Tensor out = torch::zeros(stored_shape(image, static_cast<int64_t>(files.raters.size())), torch::kByte);
  for (size_t j = 0; j < files.raters.size(); ++j) {
    Tensor rater = out[static_cast<int64_t>(j)];
    for (const RaterPart& part : files.raters[j])
      rater.masked_fill_(read_mask(part.file, image, part.value), part.value);
  }
  return out.permute({0, 3, 2, 1});
}

RaterMaps read_rater_maps(const RaterFiles& files, const Volume& image, int64_t values) {
  if (!files.instances) {
    Tensor raters = read_raters(files, image);
    Tensor majority = majority_label(raters, values);
    return {std::move(raters), std::move(majority)};
  }
  const auto count = static_cast<int64_t>(files.raters.size());
  if (count == 0) return {read_raters(files, image), torch::zeros(image.voxels.sizes(), torch::kByte)};
  KDSEG_CHECK(count < 256, files.raters[0].at(0).file, ": ", count, " raters; at most 255 are counted");
  Tensor raters = torch::zeros(stored_shape(image, count), torch::kByte);
  Tensor majority = torch::zeros(stored_shape(image, -1), torch::kByte);
  // Instance by instance, so that one instance's annotations are in memory at a time; every
  // rater's parts list the same instances in the same (painting) order. Plain loops over the
  // contiguous bytes: a few passes of the volume per file.
  const int64_t n = majority.numel();
  std::vector<uint8_t> votes(static_cast<size_t>(n));
  uint8_t* const best = majority.data_ptr<uint8_t>();
  const size_t parts = files.raters[0].size();
  for (size_t p = 0; p < parts; ++p) {
    std::fill(votes.begin(), votes.end(), uint8_t{0});
    const uint8_t value = files.raters[0][p].value;
    for (size_t j = 0; j < files.raters.size(); ++j) {
      const RaterPart& part = files.raters[j].at(p);
      KDSEG_CHECK(part.value == value, part.file, ": painted ", int(part.value), " where rater 1's instance is ",
                  int(value));
      const Tensor mask = read_mask(part.file, image, part.value).contiguous();
      const bool* m = mask.data_ptr<bool>();
      uint8_t* map = raters[static_cast<int64_t>(j)].data_ptr<uint8_t>();
      for (int64_t v = 0; v < n; ++v) {
        if (m[v]) map[v] = value;
        votes[static_cast<size_t>(v)] += m[v];
      }
    }
    // More than half of the annotations: 2 of 3, as KiTS.
    for (int64_t v = 0; v < n; ++v) {
      if (2 * votes[static_cast<size_t>(v)] > count) best[v] = value;
    }
  }
  return {raters.permute({0, 3, 2, 1}), majority.permute({2, 1, 0})};
}

Tensor majority_label(const Tensor& raters, int64_t values) {
  Tensor best = torch::zeros(raters.sizes().slice(1), torch::kByte);
  Tensor best_votes = (raters == 0).sum(0, /*keepdim=*/false, torch::kShort);
  for (int64_t v = 1; v < values; ++v) {
    const Tensor votes = (raters == v).sum(0, false, torch::kShort);
    const Tensor more = votes > best_votes;
    best.masked_fill_(more, static_cast<uint8_t>(v));
    best_votes = torch::where(more, votes, best_votes);
  }
  return best;
}

std::vector<double> rater_agreement(const Tensor& raters, int64_t values) {
  return rater_agreement(raters, majority_label(raters, values), values);
}

std::vector<double> rater_agreement(const Tensor& raters, const Tensor& majority, int64_t values) {
  std::vector<double> agreement;
  for (int64_t j = 0; j < raters.size(0); ++j) {
    double sum = 0;
    int present = 0;
    for (int64_t v = 1; v < values; ++v) {
      const Tensor a = raters[j] == v, b = majority == v;
      const double size = static_cast<double>(a.sum().item<int64_t>() + b.sum().item<int64_t>());
      if (size == 0) continue;
      sum += 2.0 * static_cast<double>(a.logical_and(b).sum().item<int64_t>()) / size;
      ++present;
    }
    // As the paper's code: a rater with no measurable agreement keeps the full weight.
    agreement.push_back(present == 0 || sum <= 0 ? 1.0 : sum / present);
  }
  return agreement;
}

Tensor class_votes(const Tensor& classes, int64_t num_classes) {
  std::vector<Tensor> votes;
  for (int64_t c = 0; c < num_classes; ++c) votes.push_back((classes == c).sum(0).to(torch::kFloat));
  return torch::stack(votes);
}

Tensor majority_class(const Tensor& votes, int64_t ignore_index) {
  Tensor best = torch::zeros(votes.sizes().slice(1), torch::kLong);
  Tensor best_votes = votes[0].clone();
  for (int64_t c = 1; c < votes.size(0); ++c) {
    const Tensor more = votes[c] > best_votes;
    best.masked_fill_(more, c);
    best_votes = torch::where(more, votes[c], best_votes);
  }
  return best.masked_fill_(votes.sum(0) == 0, ignore_index);
}

Tensor weighted_mean(const Tensor& classes, const std::vector<double>& weights, int64_t num_classes,
                     int64_t ignore_index) {
  KDSEG_CHECK(static_cast<int64_t>(weights.size()) == classes.size(0), "weighted_mean: ", weights.size(),
              " weights for ", classes.size(0), " raters");
  std::vector<int64_t> shape{num_classes};
  for (int64_t d = 1; d < classes.dim(); ++d) shape.push_back(classes.size(d));
  Tensor out = torch::zeros(shape, torch::kFloat);
  Tensor total = torch::zeros(classes.sizes().slice(1), torch::kFloat);
  for (int64_t j = 0; j < classes.size(0); ++j) {
    const Tensor rater = classes[j];
    const float w = static_cast<float>(weights[static_cast<size_t>(j)]);
    for (int64_t c = 0; c < num_classes; ++c) out[c].add_((rater == c).to(torch::kFloat), w);
    total.add_((rater != ignore_index).to(torch::kFloat), w);
  }
  return torch::where(total > 0, out / total.clamp_min(1e-12), torch::zeros_like(out));
}

int64_t random_rater(uint64_t sample_seed, int64_t raters) {
  Rng rng(derive_seed(sample_seed, {kRaterStream}));
  return rng.uniform_int(0, raters - 1);
}

}  // namespace kdseg::data

#include "eval/case_collector.h"

#include <signal.h>
#include <sys/stat.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/file_util.h"
#include "core/log.h"
#include "core/surface_distance.h"
#include "data/canonical_writer.h"
#include "data/loader.h"
#include "data/nifti.h"
#include "data/prepared_store.h"
#include "dist/communicator.h"
#include "eval/evaluation_results.h"
#include "eval/report_files.h"

namespace kdseg::eval::detail {
namespace {
namespace fs = std::filesystem;
namespace F = torch::nn::functional;
using torch::Tensor;

// A voxel's predicted class and label in one byte: class << 4 | label, the ignore label as 15.
constexpr int64_t kIgnoredCode = 15;
// A held foreground probability in 2 bytes, round(p * 65535): the probabilities written are
// exact to 1/65535 (within 7.6e-6), held in half the memory of float32.
constexpr float kProbabilitySteps = 65535.0f;

constexpr const char* kRankFolderPrefix = "kdseg-evaluate-";

// This rank's folder for its prediction files until rank 0 takes them: local to the node, named
// by the process and rank, made new and private (mkdtemp, 0700) so that no other user of the
// node can read, replace or redirect the files.
std::string make_rank_folder(int rank) {
  return make_private_dir(fs::temp_directory_path().string(),
                          kRankFolderPrefix + std::to_string(::getpid()) + "-" + std::to_string(rank) + "-");
}

// Removes the rank folders of evaluate processes of this user that no longer run on this node (a
// job brought down by MPI_Abort or a signal never reaches the destructor that removes them).
void remove_orphaned_rank_folders() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(fs::temp_directory_path(), ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(kRankFolderPrefix, 0) != 0) continue;
    const std::string rest = name.substr(std::strlen(kRankFolderPrefix));
    const size_t dash = rest.find('-');
    if (dash == 0 || dash > 9 || dash == std::string::npos || rest.find_first_not_of("0123456789") < dash) continue;
    struct stat info {};
    if (::lstat(entry.path().c_str(), &info) != 0 || !S_ISDIR(info.st_mode) || info.st_uid != ::geteuid()) continue;
    const auto pid = static_cast<pid_t>(std::stol(rest.substr(0, dash)));
    if (::kill(pid, 0) != 0 && errno == ESRCH) {
      log::debug("evaluate: removing {}, left by process {} which no longer runs", entry.path().string(), pid);
      fs::remove_all(entry.path(), ec);
    }
  }
}

}  // namespace

int64_t surface_metric_count(const std::vector<DiceRegion>& regions) {
  const bool surfels =
      std::any_of(regions.begin(), regions.end(), [](const DiceRegion& r) { return r.surfel_tolerance_mm > 0; });
  return static_cast<int64_t>(kSurfaceMetricCount) + (surfels ? 1 : 0);
}

CaseCollector::CaseCollector(const data::PreparedStore& store, const std::vector<int64_t>& rows,
                             const std::vector<DiceRegion>& regions, CaseOutputs outputs,
                             const dist::Communicator& comm)
    : store_(store),
      regions_(regions),
      out_(std::move(outputs)),
      rank_(comm.rank()),
      results_(torch::zeros({static_cast<int64_t>(store.case_ids().size()), static_cast<int64_t>(regions.size()),
                             surface_metric_count(regions)},
                            torch::kDouble)) {
  KDSEG_CHECK(out_.classes < kIgnoredCode, "evaluate: at most ", kIgnoredCode - 1, " classes, got ", out_.classes);
  for (int rank = 0; rank < comm.size(); ++rank) {
    const std::vector<int64_t> theirs = data::evaluation_case_rows(rows, store.slice_case(), rank, comm.size());
    for (int64_t row : theirs) owner_[case_of(row)] = rank;
    if (rank == rank_) mine_ = theirs;
  }
  for (int64_t row : mine_) rows_of_case_[case_of(row)].push_back(row);
  if (out_.predictions) {
    if (rank_ != 0) remove_orphaned_rank_folders();
    if (rank_ == 0) {
      folder_ = out_.folder;
      fs::create_directories(folder_);
    } else if (!mine_.empty()) {
      folder_ = make_rank_folder(rank_);
    }
  }
}

CaseCollector::~CaseCollector() {
  if (rank_ != 0 && !folder_.empty()) {
    std::error_code ec;
    fs::remove_all(folder_, ec);
  }
}

int32_t CaseCollector::case_of(int64_t row) const { return store_.slice_case()[static_cast<size_t>(row)]; }

void CaseCollector::add(int64_t row, const Tensor& classes, const Tensor& labels, const Tensor& foreground) {
  const int32_t c = case_of(row);
  const std::vector<int64_t>& rows = rows_of_case_.at(c);
  if (c != current_) {
    KDSEG_CHECK(current_ < 0, "evaluate: case ", store_.case_ids()[static_cast<size_t>(current_)],
                " is incomplete when slices of another arrive");
    current_ = c;
    filled_ = 0;
    const auto n = static_cast<int64_t>(rows.size());
    packed_ = torch::empty({n, store_.height(), store_.width()}, torch::kByte);
    if (!folder_.empty()) foreground_ = torch::empty({n, store_.height(), store_.width()}, torch::kShort);
  }
  KDSEG_CHECK(rows[filled_] == row, "evaluate: row ", row, " arrived out of order");
  const Tensor predicted = classes.to(torch::kByte).contiguous(), label = labels.to(torch::kLong).contiguous();
  KDSEG_CHECK(predicted.numel() == packed_[0].numel() && label.numel() == packed_[0].numel(), "evaluate: row ", row,
              " is not ", store_.height(), "x", store_.width());
  const uint8_t* k = predicted.data_ptr<uint8_t>();
  const int64_t* y = label.data_ptr<int64_t>();
  uint8_t* code = packed_[static_cast<int64_t>(filled_)].data_ptr<uint8_t>();
  for (int64_t v = 0; v < predicted.numel(); ++v) {
    code[v] = static_cast<uint8_t>(k[v] << 4 | (y[v] == out_.ignore_index ? kIgnoredCode : y[v]));
  }
  if (!folder_.empty()) {
    const Tensor p = foreground.to(torch::kFloat).contiguous();
    const float* in = p.data_ptr<float>();
    auto* fixed = reinterpret_cast<uint16_t*>(foreground_[static_cast<int64_t>(filled_)].data_ptr<int16_t>());
    for (int64_t v = 0; v < p.numel(); ++v) {
      fixed[v] = static_cast<uint16_t>(std::lround(std::min(1.0f, std::max(0.0f, in[v])) * kProbabilitySteps));
    }
  }
  if (++filled_ == rows.size()) complete_case();
}

void CaseCollector::complete_case() {
  const int32_t c = current_;
  if (!folder_.empty()) write_predictions(c);
  foreground_ = Tensor();
  if (out_.surface) measure(c);
  packed_ = Tensor();
  current_ = -1;
}

// Stacks the case's slices at their positions along the S axis (slices a store left out are
// empty in both) and measures each region on the store's grid: the in-plane spacing is the
// canonical spacing scaled by the resize. Voxels with the ignore label take the prediction's
// value in the reference, so that, as for Dice, they count neither way.
void CaseCollector::measure(int32_t case_index) {
  const auto c = static_cast<size_t>(case_index);
  const std::vector<int64_t>& rows = rows_of_case_.at(case_index);
  int32_t first = INT32_MAX, last = INT32_MIN;
  for (int64_t row : rows) {
    first = std::min(first, store_.slice_index()[static_cast<size_t>(row)]);
    last = std::max(last, store_.slice_index()[static_cast<size_t>(row)]);
  }
  const int64_t h = store_.height(), w = store_.width(), plane = h * w;
  const std::array<double, 3> spacing = store_.stored_spacing(c);
  const std::array<int64_t, 3> size = {last - first + 1, h, w};
  // One mask at a time, kept only until its surfaces are found (the surfels' where asked).
  const auto surface = [&](const std::array<uint8_t, 16>& member, bool reference, Surfels* corners) {
    std::vector<uint8_t> mask(static_cast<size_t>(size[0] * plane), 0);
    for (size_t j = 0; j < rows.size(); ++j) {
      const int64_t z = store_.slice_index()[static_cast<size_t>(rows[j])] - first;
      const uint8_t* code = packed_[static_cast<int64_t>(j)].data_ptr<uint8_t>();
      uint8_t* m = mask.data() + z * plane;
      for (int64_t v = 0; v < plane; ++v) {
        const int label = code[v] & 15;
        m[v] = member[reference && label != kIgnoredCode ? static_cast<size_t>(label) : code[v] >> 4];
      }
    }
    if (corners != nullptr) *corners = surfels(mask.data(), size, spacing);
    return surface_voxels(mask.data(), size);
  };
  for (size_t r = 0; r < regions_.size(); ++r) {
    std::array<uint8_t, 16> member{};
    for (int64_t k : regions_[r].classes) member[static_cast<size_t>(k)] = 1;
    const double surfel_tolerance = regions_[r].surfel_tolerance_mm;
    Surfels predicted_surfels, labelled_surfels;
    const Surface predicted = surface(member, false, surfel_tolerance > 0 ? &predicted_surfels : nullptr);
    const Surface labelled = surface(member, true, surfel_tolerance > 0 ? &labelled_surfels : nullptr);
    const SurfaceMetrics d = surface_metrics(predicted, labelled, size, spacing, out_.tolerance);
    double* at = results_[case_index][static_cast<int64_t>(r)].data_ptr<double>();
    at[0] = d.hd95;
    at[1] = d.assd;
    at[2] = d.nsd;
    if (results_.size(2) > static_cast<int64_t>(kSurfaceMetricCount)) {
      at[kSurfaceMetricCount] = surfel_tolerance > 0 ? surfel_surface_dice(predicted_surfels, labelled_surfels, size,
                                                                           spacing, surfel_tolerance)
                                                     : std::nan("");
    }
  }
}

// The case's predicted label values and foreground probability in the source file's voxel order
// and geometry (the canonical one when the source is gone or changed), written one plane of the
// file at a time. Slices not evaluated hold 0.
void CaseCollector::write_predictions(int32_t case_index) {
  const auto c = static_cast<size_t>(case_index);
  const std::string& id = store_.case_ids()[c];
  const std::array<int64_t, 3> canonical = store_.case_shapes()[c];
  data::Affine affine = store_.case_affines()[c];
  data::Reorientation r;  // from the file's voxel axes to the canonical ones
  r.order = {0, 1, 2};
  r.shape = canonical;
  std::array<int64_t, 3> file_shape = canonical;
  try {
    const data::Geometry source = data::read_nifti_geometry(store_.case_image_files()[c]);
    const data::Reorientation found = data::canonical_reorientation(source.affine, source.shape);
    KDSEG_CHECK(found.shape == canonical, store_.case_image_files()[c],
                ": its shape no longer matches the prepared store's case ", id);
    r = found;
    affine = source.affine;
    file_shape = source.shape;
  } catch (const Error& e) {
    log::warn("{}; writing {}'s predictions in the canonical (RAS) geometry instead", e.message(), id);
  }
  const std::vector<int64_t>& rows = rows_of_case_.at(case_index);
  std::vector<int64_t> held(static_cast<size_t>(canonical[2]), -1);  // canonical z -> position in rows
  for (size_t j = 0; j < rows.size(); ++j)
    held[static_cast<size_t>(store_.slice_index()[static_cast<size_t>(rows[j])])] = static_cast<int64_t>(j);
  const std::vector<int64_t> size = {canonical[0], canonical[1]};
  const Tensor values = torch::tensor(std::vector<int64_t>(out_.value_of_class.begin(), out_.value_of_class.end()));
  // Canonical slice z [X,Y]: label values and foreground probability.
  const auto canonical_slice = [&](int64_t z) -> std::pair<Tensor, Tensor> {
    const int64_t j = held[static_cast<size_t>(z)];
    if (j < 0) return {torch::zeros(size, torch::kByte), torch::zeros(size, torch::kFloat)};
    const Tensor classes = packed_[j].to(torch::kFloat).div_(16).floor_().unsqueeze(0).unsqueeze(0);
    const Tensor nearest = F::interpolate(classes, F::InterpolateFuncOptions().size(size).mode(torch::kNearest));
    const Tensor probability =
        foreground_[j].to(torch::kInt).bitwise_and_(0xFFFF).to(torch::kFloat).div_(kProbabilitySteps);
    const Tensor probs =
        F::interpolate(probability.unsqueeze(0).unsqueeze(0),
                       F::InterpolateFuncOptions().size(size).mode(torch::kBilinear).align_corners(false));
    return {values.index({nearest[0][0].round().to(torch::kLong)}).to(torch::kByte), probs[0][0]};
  };
  const std::array<std::string, 2> names = prediction_files(id);
  const fs::path folder(folder_);
  data::CanonicalWriter writer({{(folder / names[0]).string(), data::NiftiType::kUint8},
                                {(folder / names[1]).string(), data::NiftiType::kFloat32}},
                               file_shape, affine, r, out_.threads);
  for (const int64_t z : writer.order()) {
    const auto [m, p] = canonical_slice(z);
    writer.write({m, p});
  }
  writer.close();
}

Tensor CaseCollector::finish(dist::Communicator& comm) {
  KDSEG_CHECK(current_ < 0, "evaluate: case ", store_.case_ids()[static_cast<size_t>(std::max(current_, 0))],
              " has slices that never arrived");
  if (out_.predictions) {
    // The other ranks' files, one at a time, in case order.
    for (const auto& [c, owner] : owner_) {
      if (owner == 0) continue;
      for (const std::string& name : prediction_files(store_.case_ids()[static_cast<size_t>(c)])) {
        const fs::path local = fs::path(folder_) / name;
        const std::string content = rank_ == owner ? read_file(local.string()) : std::string();
        Tensor bytes = torch::tensor({static_cast<int64_t>(content.size())}, torch::kLong);
        dist::all_reduce_any_device(comm, bytes, dist::ReduceOp::kSum);
        Tensor data = torch::zeros({bytes[0].item<int64_t>()}, torch::kByte);
        if (rank_ == owner) std::memcpy(data.data_ptr(), content.data(), content.size());
        dist::all_reduce_any_device(comm, data, dist::ReduceOp::kSum);  // only the owner's are non-zero
        if (rank_ == 0) {
          write_file_atomic((fs::path(out_.folder) / name).string(),
                            std::string_view(reinterpret_cast<const char*>(data.data_ptr<uint8_t>()),
                                             static_cast<size_t>(data.numel())));
        }
        if (rank_ == owner) fs::remove(local);
      }
    }
  }
  dist::all_reduce_any_device(comm, results_, dist::ReduceOp::kSum);  // each case measured by one rank
  return results_;
}

}  // namespace kdseg::eval::detail

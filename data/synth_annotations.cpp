// kdseg synth --from-annotations (data/synth.h): a simulated CT for real KiTS-layout annotations.
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"
#include "core/random.h"
#include "data/layout.h"
#include "data/nifti.h"
#include "data/raters.h"
#include "data/synth.h"

namespace kdseg::data {
namespace {
namespace fs = std::filesystem;
using torch::Tensor;

constexpr uint64_t kAnnotationStream = 0x616e6e6f;  // "anno"

// A case folder's id as a stream key: the digits of case_XXXXX, else the folder name's bytes.
uint64_t case_key(const std::string& id) {
  uint64_t key = 0;
  for (const char c : id) key = mix64(key ^ static_cast<unsigned char>(c));
  return key;
}

// [1,2,1]/4 along voxel axis `axis` of [I,J,K], edges repeated.
Tensor blur_axis(const Tensor& v, int64_t axis) {
  const int64_t n = v.size(axis);
  if (n < 3) return v;
  const Tensor before = torch::cat({v.narrow(axis, 0, 1), v.narrow(axis, 0, n - 1)}, axis);
  const Tensor after = torch::cat({v.narrow(axis, 1, n - 1), v.narrow(axis, n - 1, 1)}, axis);
  return (before + 2 * v + after) / 4;
}

struct AnnotatedCase {
  std::string id;
  fs::path folder;
  RaterFiles raters;
};

// The case folders under `dir` that hold instance annotations, in name order.
std::vector<AnnotatedCase> find_annotated_cases(const std::string& dir) {
  std::vector<AnnotatedCase> out;
  std::error_code ec;
  KDSEG_CHECK(fs::is_directory(dir, ec), dir, ": no such folder of annotations");
  std::vector<fs::path> folders;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_directory() && !entry.is_symlink()) folders.push_back(entry.path());
  }
  std::sort(folders.begin(), folders.end());
  for (const fs::path& folder : folders) {
    CaseFiles files;
    files.id = folder.filename().string();
    files.image = (folder / "imaging.nii.gz").string();
    RaterFiles raters = find_rater_files(files, Layout::kKits23);
    if (raters.raters.empty() && raters.problem.empty()) continue;  // no annotations: not a case
    out.push_back({files.id, folder, std::move(raters)});
  }
  KDSEG_CHECK(!out.empty(), dir, ": holds no KiTS-layout case folder with instance annotations ",
              "(<case>/instances/<structure>_instance-<i>_annotation-<j>.nii.gz)");
  return out;
}

// The simulated CT of one case, in the annotations' voxel order: see write_dataset_from_annotations.
Tensor simulated_ct(const Tensor& raters, uint64_t seed, const std::string& id, const Affine& affine) {
  Rng rng(derive_seed(seed, {kAnnotationStream, case_key(id)}));
  const auto fraction = [&](const Tensor& marked) { return marked.to(torch::kFloat).mean(0); };
  const Tensor kidney = fraction(raters > 0), tumour = fraction(raters == 2), cyst = fraction(raters == 3);
  const double kidney_hu = rng.uniform(140, 180);
  const double tumour_hu = kidney_hu - rng.uniform(40, 70);
  const double cyst_hu = rng.uniform(0, 20);
  Tensor hu = 40 + (kidney_hu - 40) * kidney + (tumour_hu - kidney_hu) * tumour + (cyst_hu - kidney_hu) * cyst;
  // The in-plane axes are the two voxel axes closest to the canonical x and y.
  const Orientation o = closest_orientation(affine);
  for (int64_t axis = 0; axis < 3; ++axis) {
    if (o.world_axis[static_cast<size_t>(axis)] != 2) hu = blur_axis(hu, axis);
  }
  torch::manual_seed(rng.next_u64());
  hu = hu + torch::randn(hu.sizes(), torch::kFloat) * 12;
  return hu.round().clamp(-1024, 3071);
}

}  // namespace

AnnotationSynthSummary write_dataset_from_annotations(const std::string& annotations, const std::string& dir,
                                                      const AnnotationSynthOptions& options) {
  const std::vector<AnnotatedCase> cases = find_annotated_cases(annotations);
  // Every case is checked before anything is written.
  AnnotationSynthSummary summary;
  std::vector<const AnnotatedCase*> todo;
  for (const AnnotatedCase& c : cases) {
    std::error_code ec;
    if (fs::exists(c.folder / "imaging.nii.gz", ec) || fs::exists(c.folder / "imaging.nii", ec)) {
      ++summary.already_imaged;
      continue;
    }
    KDSEG_CHECK(c.raters.problem.empty(), c.raters.problem);
    todo.push_back(&c);
  }
  refuse_symlink_output(dir);
  std::error_code ec;
  KDSEG_CHECK(fs::weakly_canonical(dir, ec) != fs::weakly_canonical(annotations, ec), dir,
              ": is the folder of annotations; write the simulated dataset into another folder");
  fs::create_directories(dir, ec);
  KDSEG_CHECK(!ec, dir, ": cannot create the output folder: ", ec.message());
  const std::string marker = (fs::path(dir) / ".kdseg-synth.json").string();
  const std::string record = "{\"from_annotations\": \"" + fs::absolute(annotations).lexically_normal().string() +
                             "\", \"seed\": " + std::to_string(options.seed) + "}\n";
  if (!options.force && !fs::is_empty(dir)) {
    KDSEG_CHECK(fs::is_regular_file(marker) && read_file(marker) == record, dir,
                ": is not empty and kdseg synth did not write it with these options; choose an empty folder, or ",
                "pass --force to write into it");
  }
  write_file_atomic(marker, record);
  for (const AnnotatedCase* c : todo) {
    // The first annotation defines the grid; read_raters checks every other against it.
    const Volume grid = read_nifti(c->raters.raters.front().front().file, /*require_finite=*/true);
    const RaterMaps maps = read_rater_maps(c->raters, grid, static_cast<int64_t>(label_values(Layout::kKits23).size()));
    const fs::path out = fs::path(dir) / c->id;
    fs::create_directories(out / "instances");
    for (const auto& rater : c->raters.raters) {
      for (const RaterPart& part : rater) {
        const fs::path source(part.file);
        write_file_atomic((out / "instances" / source.filename()).string(), read_file(part.file));
      }
    }
    bool labelled = false;
    for (const char* name : {"segmentation.nii.gz", "segmentation.nii"}) {
      if (fs::is_regular_file(c->folder / name, ec)) {
        write_file_atomic((out / name).string(), read_file((c->folder / name).string()));
        labelled = true;
      }
    }
    // Without the organisers' label map, KiTS's own aggregation of the annotations stands in.
    if (!labelled) write_nifti((out / "segmentation.nii.gz").string(), maps.majority, grid.affine, NiftiType::kUint8);
    write_nifti((out / "imaging.nii.gz").string(), simulated_ct(maps.raters, options.seed, c->id, grid.affine),
                grid.affine, NiftiType::kInt16);
    ++summary.cases;
    summary.raters = std::max(summary.raters, static_cast<int>(c->raters.raters.size()));
  }
  return summary;
}

}  // namespace kdseg::data

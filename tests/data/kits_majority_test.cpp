// The raters' majority of KiTS layouts is KiTS's own aggregation (data/raters.h, read_rater_maps):
// on hand-made instance files, on every case of the real KiTS23 annotations (against the
// organisers' segmentation.nii.gz, voxel for voxel), and through prepare into /slices/majority.
//
// The real annotations are CC BY-NC-SA and stay outside the repository: the tests find them
// through KDSEG_KITS23_RATERS, else /work/shared/data/kits23-raters, and skip without them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <utility>

#include "data/batch_loader.h"
#include "data/hdf5_util.h"
#include "data/nifti.h"
#include "data/prepared_store.h"
#include "data/raters.h"
#include "data/task.h"
#include "tests/data/temp_dir.h"

namespace {
namespace D = kdseg::data;
namespace fs = std::filesystem;
using torch::Tensor;

D::Affine unit_affine() {
  D::Affine a{};
  for (size_t i = 0; i < 4; ++i) a[i * 5] = 1.0;
  return a;
}

// The folder of the real KiTS23 annotations, or empty.
std::string kits23_raters() {
  const char* env = std::getenv("KDSEG_KITS23_RATERS");
  const std::string folder = env != nullptr && *env != 0 ? env : "/work/shared/data/kits23-raters";
  std::error_code ec;
  return fs::is_directory(fs::path(folder) / "case_00002", ec) ? folder : std::string();
}

#define SKIP_WITHOUT_KITS23(folder)                                                                       \
  if ((folder).empty())                                                                                   \
  GTEST_SKIP() << "no KiTS23 rater annotations: set KDSEG_KITS23_RATERS to a folder of case_XXXXX/ with " \
                  "segmentation.nii.gz and instances/ (none at /work/shared/data/kits23-raters)"

std::vector<fs::path> kits_cases(const std::string& folder) {
  std::vector<fs::path> cases;
  for (const auto& entry : fs::directory_iterator(folder)) {
    if (entry.is_directory() && entry.path().filename().string().rfind("case_", 0) == 0) cases.push_back(entry.path());
  }
  std::sort(cases.begin(), cases.end());
  return cases;
}

// The raters' label maps and majority of a KiTS case, on segmentation.nii.gz's grid.
D::RaterMaps case_maps(const fs::path& case_folder, const D::Volume& segmentation) {
  D::CaseFiles files;
  files.image = (case_folder / "segmentation.nii.gz").string();
  const D::RaterFiles raters = D::find_rater_files(files, D::Layout::kKits23);
  KDSEG_CHECK(raters.problem.empty() && !raters.raters.empty(), case_folder.string(), ": ", raters.problem);
  return D::read_rater_maps(raters, segmentation, 4);
}

// One voxel row of 1x1x3, annotated by three raters:
//   voxel 0: kidney by raters 2 and 3, tumour (instance 1) by rater 3 alone: KiTS says kidney
//            (2 of 3 mark the kidney, which includes its masses); the raters' maps say
//            background, kidney, tumour, whose flat vote is a three-way tie, background.
//   voxel 1: kidney by all; tumour instance 1 by rater 1, tumour instance 2 by rater 2: no
//            instance has 2 of 3, so KiTS says kidney; the maps say tumour, tumour, kidney.
//   voxel 2: kidney by all, cyst by raters 1 and 2, tumour instance 1 by raters 1 and 3: tumour
//            is painted last (2); the maps say tumour, cyst, tumour.
TEST(KitsMajority, VotedPerInstanceAndPaintedKidneyCystTumour) {
  kdseg::test::TempDir dir;
  const fs::path instances = fs::path(dir.path()) / "case_00000" / "instances";
  fs::create_directories(instances);
  const auto write = [&](const std::string& name, std::vector<int> values) {
    D::write_nifti((instances / (name + ".nii.gz")).string(),
                   torch::tensor(std::vector<int64_t>(values.begin(), values.end())).view({1, 1, 3}), unit_affine(),
                   D::NiftiType::kUint8);
  };
  write("kidney_instance-1_annotation-1", {0, 1, 1});
  write("kidney_instance-1_annotation-2", {1, 1, 1});
  write("kidney_instance-1_annotation-3", {1, 1, 1});
  write("tumor_instance-1_annotation-1", {0, 1, 1});
  write("tumor_instance-1_annotation-2", {0, 0, 0});
  write("tumor_instance-1_annotation-3", {1, 0, 1});
  write("tumor_instance-2_annotation-1", {0, 0, 0});
  write("tumor_instance-2_annotation-2", {0, 1, 0});
  write("tumor_instance-2_annotation-3", {0, 0, 0});
  write("cyst_instance-1_annotation-1", {0, 0, 1});
  write("cyst_instance-1_annotation-2", {0, 0, 1});
  write("cyst_instance-1_annotation-3", {0, 0, 0});
  D::Volume grid;
  grid.voxels = torch::zeros({1, 1, 3});
  grid.affine = unit_affine();
  const D::RaterMaps maps = case_maps(instances.parent_path(), grid);
  EXPECT_TRUE(maps.raters.equal(torch::tensor({0, 2, 2, 1, 2, 3, 2, 1, 2}, torch::kByte).view({3, 1, 1, 3})))
      << maps.raters;
  EXPECT_TRUE(maps.majority.equal(torch::tensor({1, 1, 2}, torch::kByte).view({1, 1, 3}))) << maps.majority;
  EXPECT_TRUE(D::majority_label(maps.raters, 4).equal(torch::tensor({0, 2, 2}, torch::kByte).view({1, 1, 3})));

  // A rater whose mask lies on another grid is an error naming its file.
  D::write_nifti((instances / "cyst_instance-1_annotation-3.nii.gz").string(), torch::zeros({1, 1, 4}), unit_affine(),
                 D::NiftiType::kUint8);
  try {
    case_maps(instances.parent_path(), grid);
    FAIL() << "a mask of another shape was read";
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cyst_instance-1_annotation-3.nii.gz"), std::string::npos) << e.what();
  }
}

// Every real case: the majority equals KiTS's segmentation.nii.gz on every voxel, while the flat
// vote of the raters' maps does not (so that this test can tell the two apart).
TEST(KitsMajority, EqualsKits23SegmentationOnEveryRealCase) {
  const std::string folder = kits23_raters();
  SKIP_WITHOUT_KITS23(folder);
  const auto start = std::chrono::steady_clock::now();
  int64_t cases = 0, voxels = 0, flat_differs = 0, flat_cases = 0;
  for (const fs::path& case_folder : kits_cases(folder)) {
    const D::Volume segmentation =
        D::read_nifti((case_folder / "segmentation.nii.gz").string(), true, D::VoxelType::kAsStored);
    // In the files' voxel order [K,J,I], where the volumes are contiguous (the maps are views).
    const Tensor expected = segmentation.voxels.permute({2, 1, 0}).to(torch::kByte);
    const D::RaterMaps maps = case_maps(case_folder, segmentation);
    const int64_t differ = maps.majority.permute({2, 1, 0}).ne(expected).sum().item<int64_t>();
    EXPECT_EQ(differ, 0) << case_folder.filename().string() << ": " << differ << " voxels differ from KiTS's majority";
    const Tensor raters = maps.raters.permute({0, 3, 2, 1}).contiguous();
    const int64_t flat = D::majority_label(raters, 4).ne(expected).sum().item<int64_t>();
    flat_differs += flat;
    flat_cases += flat > 0;
    voxels += expected.numel();
    ++cases;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << cases << " KiTS23 cases, " << voxels << " voxels, in " << seconds << " s; the flat vote of the "
            << "raters' maps differs on " << flat_differs << " voxels of " << flat_cases << " cases\n";
  EXPECT_EQ(cases, 251);
  EXPECT_GT(flat_differs, 0);
}

// A few real cases through prepare, each with a placeholder image on its grid: the store's
// /slices/majority equals its /slices/label (segmentation.nii.gz, resized the same way), and the
// raters' agreement is measured against it.
TEST(KitsMajority, PrepareStoresKitsMajorityOfRealCases) {
  const std::string folder = kits23_raters();
  SKIP_WITHOUT_KITS23(folder);
  kdseg::test::TempDir dir;
  // Links to the case's annotations in `raw`, and an image of zeros on their grid.
  const auto add_case = [&](const fs::path& raw, const std::string& id) {
    const fs::path source = fs::path(folder) / id, target = raw / id;
    fs::create_directories(target);
    fs::create_directory_symlink(source / "instances", target / "instances");
    fs::create_symlink(source / "segmentation.nii.gz", target / "segmentation.nii.gz");
    const D::Volume segmentation = D::read_nifti((source / "segmentation.nii.gz").string());
    D::write_nifti((target / "imaging.nii.gz").string(), torch::zeros_like(segmentation.voxels), segmentation.affine,
                   D::NiftiType::kInt16);
  };
  // Three cases with cysts (all four label values) resized to 128 x 128; one at its own size.
  const fs::path three = fs::path(dir.path()) / "three", one = fs::path(dir.path()) / "one";
  for (const char* id : {"case_00006", "case_00021", "case_00030"}) add_case(three, id);
  add_case(one, "case_00030");
  for (const auto& [raw, size] : {std::pair{three, int64_t{128}}, std::pair{one, int64_t{0}}}) {
    D::PrepareOptions o;
    o.input = raw.string();
    o.output = dir.file(raw.filename().string() + ".h5");
    o.detect_layout = false;
    o.layout = D::Layout::kKits23;
    o.slices = D::SliceSelection::kAll;
    o.size = size;
    o.folds = 1;
    EXPECT_EQ(D::prepare_store(o).raters, 3);
    const D::h5::Handle file = D::PreparedStore::open_file(o.output);
    const auto dims = D::h5::dataset_dims(file, D::store::kMajority);
    ASSERT_EQ(dims, D::h5::dataset_dims(file, D::store::kLabel));
    const auto rows = static_cast<int64_t>(dims[0]), h = static_cast<int64_t>(dims[1]),
               w = static_cast<int64_t>(dims[2]);
    Tensor majority = torch::empty({rows, h, w}, torch::kByte), label = torch::empty({rows, h, w}, torch::kByte);
    Tensor raters = torch::empty({rows, 3, h, w}, torch::kByte);
    D::h5::read_array(file, D::store::kMajority, H5T_NATIVE_UINT8, majority.data_ptr());
    D::h5::read_array(file, D::store::kLabel, H5T_NATIVE_UINT8, label.data_ptr());
    D::h5::read_array(file, D::store::kRaters, H5T_NATIVE_UINT8, raters.data_ptr());
    EXPECT_EQ(majority.ne(label).sum().item<int64_t>(), 0) << o.output;
    // The label holds all four values, and the flat vote of the stored maps is another label.
    EXPECT_EQ(std::get<0>(at::_unique(label)).numel(), 4) << o.output;
    EXPECT_GT(D::majority_label(raters.transpose(0, 1), 4).ne(label).sum().item<int64_t>(), 0) << o.output;
    // The loader's majority (--labels majority, and evaluation's) is the stored one, in the task's classes.
    const D::Task task = D::make_task(D::parse_task("map:0:0,1:1,2:2,3:3"), D::Layout::kKits23);
    D::LoaderOptions lo;
    lo.train = false;
    lo.augment.crop = 0;
    lo.raters = D::RaterLabels::kMajority;
    std::vector<D::DistributedSampler::Item> items;
    for (int64_t row = 0; row < rows; ++row) items.push_back({row, 0});
    D::BatchLoader loader(o.output, task, lo, {items});
    const D::Batch batch = *loader.next();
    EXPECT_TRUE(batch.labels.equal(task.classes_of(majority))) << o.output;
  }
}

}  // namespace

// Synthetic data for the three layouts, the prepared store read back through the documented
// HDF5 names, and every bad input of `prepare` (nothing written unless --skip-bad-cases).
#include <gtest/gtest.h>
#include <hdf5.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/file_util.h"
#include "data/hdf5_util.h"
#include "data/nifti.h"
#include "data/prepared_store.h"
#include "data/synth.h"
#include "tests/data/temp_dir.h"

namespace {
namespace D = kdseg::data;
namespace fs = std::filesystem;
using torch::Tensor;

D::PrepareOptions options_for(const std::string& input, const std::string& output) {
  D::PrepareOptions o;
  o.input = input;
  o.output = output;
  o.size = 0;  // native: slices stay comparable with the volumes
  o.slices = D::SliceSelection::kOrgan;
  o.threads = 2;
  return o;
}

TEST(Prepare, SynthThenPrepareForEveryLayout) {
  for (const auto layout : {D::Layout::kLits, D::Layout::kKits19, D::Layout::kKits23}) {
    kdseg::test::TempDir dir;
    kdseg::test::write_small_dataset(dir.file("raw"), 6, 32, 12, layout, 3);
    D::PrepareOptions o = options_for(dir.file("raw"), dir.file("prepared.h5"));
    o.detect_layout = layout == D::Layout::kLits;  // KiTS19 and KiTS23 files look alike: name them
    o.layout = layout;
    const D::PrepareSummary summary = D::prepare_store(o);
    EXPECT_EQ(summary.layout, layout);
    EXPECT_EQ(summary.cases, 6);
    EXPECT_GT(summary.slices, 0);
    EXPECT_EQ(summary.image_dtype, "int16") << "synthetic HU are integers at native size";
    EXPECT_GT(summary.label_histogram[2], 0) << "tumour voxels";
    const D::PreparedStore store(dir.file("prepared.h5"));
    EXPECT_EQ(store.slices(), summary.slices);
    EXPECT_EQ(store.case_ids().size(), 6u);
    EXPECT_EQ(store.attribute("layout"), kdseg::enum_name(layout));
    EXPECT_EQ(store.attribute("content_hash"), summary.content_hash);
  }
}

// synth never writes over what it did not make: a folder with other files, or a dataset made
// with other options, is refused unless forced; a rerun with the same options rewrites it.
TEST(Prepare, SynthKeepsOtherDataUnlessForced) {
  kdseg::test::TempDir dir;
  fs::create_directories(dir.file("real/batch1"));
  kdseg::write_file_atomic(dir.file("real/batch1/volume-0.nii"), "a scan");
  D::SynthOptions o;
  o.cases = 1;
  o.size = 16;
  o.slices = 4;
  try {
    D::write_synthetic_dataset(dir.file("real"), o);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("real: is not empty and kdseg synth did not write it"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(kdseg::read_file(dir.file("real/batch1/volume-0.nii")), "a scan");
  D::write_synthetic_dataset(dir.file("synth"), o);
  const std::string first = kdseg::read_file(dir.file("synth/batch1/volume-0.nii"));
  EXPECT_NO_THROW(D::write_synthetic_dataset(dir.file("synth"), o));  // a rerun
  EXPECT_EQ(kdseg::read_file(dir.file("synth/batch1/volume-0.nii")), first);
  o.seed = 1;
  try {
    D::write_synthetic_dataset(dir.file("synth"), o);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("synth: holds a synthetic dataset made with other options"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(kdseg::read_file(dir.file("synth/batch1/volume-0.nii")), first);
  o.force = true;
  D::write_synthetic_dataset(dir.file("synth"), o);
  EXPECT_NE(kdseg::read_file(dir.file("synth/batch1/volume-0.nii")), first);
}

// prepare --force and synth --force over an --output that is a symbolic link: refused, naming
// it, rather than the link replaced (prepare's rename) or written through (synth).
TEST(Prepare, AnOutputThatIsALinkIsRefused) {
  kdseg::test::TempDir dir;
  kdseg::test::write_small_dataset(dir.file("raw"), 2, 16, 4);
  kdseg::write_file_atomic(dir.file("store.h5"), "someone's file");
  fs::create_symlink(dir.file("store.h5"), dir.file("p.h5"));
  auto p = options_for(dir.file("raw"), dir.file("p.h5"));
  p.force = true;
  try {
    D::prepare_store(p);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("p.h5: is a symbolic link"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_symlink(dir.file("p.h5")));
  EXPECT_EQ(kdseg::read_file(dir.file("store.h5")), "someone's file");
  fs::create_directories(dir.file("elsewhere"));
  fs::create_directory_symlink(dir.file("elsewhere"), dir.file("synth"));
  D::SynthOptions o;
  o.cases = 1;
  o.size = 16;
  o.slices = 4;
  o.force = true;
  try {
    D::write_synthetic_dataset(dir.file("synth"), o);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("synth: is a symbolic link"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::is_empty(dir.file("elsewhere")));
}

TEST(Prepare, SlicesAreTheCanonicalAxialSlicesOfEachCase) {
  kdseg::test::TempDir dir;
  kdseg::test::write_small_dataset(dir.file("raw"), 6, 24, 10);  // every stored orientation of the synthetic generator
  D::prepare_store(options_for(dir.file("raw"), dir.file("p.h5")));
  const D::PreparedStore store(dir.file("p.h5"));
  std::vector<std::string> volumes;
  for (const auto& e : fs::recursive_directory_iterator(dir.file("raw"))) {
    if (e.path().filename().string().rfind("volume-", 0) == 0) volumes.push_back(e.path().string());
  }
  ASSERT_EQ(volumes.size(), 6u);
  for (int64_t row = 0; row < store.slices(); ++row) {
    const std::string id = store.case_ids()[static_cast<size_t>(store.slice_case()[static_cast<size_t>(row)])];
    const auto it = std::find_if(volumes.begin(), volumes.end(), [&](const std::string& p) {
      const std::string name = fs::path(p).filename().string();
      return name == id + ".nii" || name == id + ".nii.gz";
    });
    ASSERT_NE(it, volumes.end()) << id;
    const D::Volume canonical = D::to_canonical(D::read_nifti(*it));
    const Tensor expected = canonical.voxels.select(2, store.slice_index()[static_cast<size_t>(row)]);
    EXPECT_TRUE(store.image(row).equal(expected)) << id << " slice " << store.slice_index()[static_cast<size_t>(row)];
  }
}

// The file read through the HDF5 C API by the documented names only.
TEST(Prepare, StoreHasTheDocumentedLayout) {
  kdseg::test::TempDir dir;
  kdseg::test::write_small_dataset(dir.file("raw"), 5, 24, 8);
  D::PrepareOptions o = options_for(dir.file("raw"), dir.file("p.h5"));
  o.size = 32;
  o.folds = 5;
  D::prepare_store(o);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const D::h5::Handle file(H5Fopen(dir.file("p.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  ASSERT_GE(file.get(), 0);
  const auto dims_of = [&](const char* name, H5T_class_t expected_class, size_t expected_size) {
    const D::h5::Handle set(H5Dopen2(file, name, H5P_DEFAULT));
    EXPECT_GE(set.get(), 0) << name;
    const D::h5::Handle space(H5Dget_space(set)), type(H5Dget_type(set));
    std::vector<hsize_t> dims(static_cast<size_t>(H5Sget_simple_extent_ndims(space)));
    H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    EXPECT_EQ(H5Tget_class(type), expected_class) << name;
    if (expected_size) {
      EXPECT_EQ(H5Tget_size(type), expected_size) << name;
    }
    return dims;
  };
  const auto image = dims_of("/slices/image", H5T_FLOAT, 4);  // resized: float32
  const auto label = dims_of("/slices/label", H5T_INTEGER, 1);
  ASSERT_EQ(image.size(), 3u);
  EXPECT_EQ(image[1], 32u);
  EXPECT_EQ(label, image);
  EXPECT_EQ(dims_of("/slices/case", H5T_INTEGER, 4)[0], image[0]);
  EXPECT_EQ(dims_of("/slices/index", H5T_INTEGER, 4)[0], image[0]);
  EXPECT_EQ(dims_of("/cases/id", H5T_STRING, 0)[0], 5u);
  EXPECT_EQ(dims_of("/cases/affine", H5T_FLOAT, 8), (std::vector<hsize_t>{5, 4, 4}));
  EXPECT_EQ(dims_of("/cases/shape", H5T_INTEGER, 4), (std::vector<hsize_t>{5, 3}));
  for (const char* name :
       {"/cases/spacing", "/cases/slices_kept", "/cases/fold", "/cases/image_file", "/cases/label_file"}) {
    EXPECT_GT(H5Lexists(file, name, H5P_DEFAULT), 0) << name;
  }
  for (const char* attr : {"format", "layout", "options", "tool_version", "created", "content_hash"}) {
    EXPECT_GT(H5Aexists(file, attr), 0) << attr;
  }
  // Chunked per slice with deflate and shuffle.
  const D::h5::Handle set(H5Dopen2(file, "/slices/image", H5P_DEFAULT));
  const D::h5::Handle plist(H5Dget_create_plist(set));
  hsize_t chunk[3] = {0, 0, 0};
  EXPECT_EQ(H5Pget_chunk(plist, 3, chunk), 3);
  EXPECT_EQ(chunk[0], 1u);
  EXPECT_EQ(H5Pget_nfilters(plist), 2);
}

TEST(Prepare, DeterministicFromSeedAndBalancedFolds) {
  kdseg::test::TempDir dir;
  kdseg::test::write_small_dataset(dir.file("a"), 7, 20, 8, D::Layout::kLits, 9);
  kdseg::test::write_small_dataset(dir.file("b"), 7, 20, 8, D::Layout::kLits, 9);
  EXPECT_EQ(kdseg::read_file(dir.file("a/batch1/volume-0.nii")), kdseg::read_file(dir.file("b/batch1/volume-0.nii")));
  const auto first = D::prepare_store(options_for(dir.file("a"), dir.file("a.h5")));
  const auto second = D::prepare_store(options_for(dir.file("b"), dir.file("b.h5")));
  EXPECT_EQ(first.content_hash, second.content_hash);
  const auto folds = D::assign_folds({"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"}, 5);
  std::vector<int> count(5, 0);
  for (int f : folds) count[static_cast<size_t>(f)]++;
  EXPECT_EQ(*std::max_element(count.begin(), count.end()) - *std::min_element(count.begin(), count.end()), 1);
  EXPECT_EQ(folds, D::assign_folds({"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"}, 5));
}

// A dataset of 3 good cases plus one broken in the given way.
class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    kdseg::test::write_small_dataset(dir.file("raw"), 3, 20, 8);
    fs::create_directories(dir.file("raw/bad"));
  }
  std::string bad(const std::string& name) const { return dir.file("raw/bad/" + name); }
  D::Affine affine() const { return {0.8, 0, 0, 0, 0, 0.8, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1}; }
  Tensor labels(int64_t z = 8) const {
    Tensor l = torch::zeros({20, 20, z});
    l.narrow(0, 5, 8).narrow(1, 5, 8).fill_(1);
    l.narrow(0, 7, 3).narrow(1, 7, 3).fill_(2);
    return l;
  }
  // The error of prepare (and that nothing was written), then the skip-bad-cases summary.
  std::string expect_refused() {
    std::string what;
    try {
      D::prepare_store(options_for(dir.file("raw"), dir.file("out.h5")));
    } catch (const kdseg::Error& e) {
      what = e.what();
    }
    EXPECT_NE(what.find("nothing was written"), std::string::npos) << what;
    EXPECT_FALSE(fs::exists(dir.file("out.h5")));
    for (const auto& e : fs::directory_iterator(dir.path())) {
      EXPECT_EQ(e.path().filename().string().find("kdseg-tmp"), std::string::npos) << "temporary file left behind";
    }
    D::PrepareOptions skip = options_for(dir.file("raw"), dir.file("out.h5"));
    skip.skip_bad_cases = true;
    const D::PrepareSummary summary = D::prepare_store(skip);
    EXPECT_EQ(summary.cases, 3);
    EXPECT_EQ(summary.skipped.size(), 1u);
    return what;
  }
  kdseg::test::TempDir dir;
};

TEST_F(BadInput, MissingPartner) {
  D::write_nifti(bad("volume-7.nii"), torch::zeros({20, 20, 8}), affine(), D::NiftiType::kInt16);
  EXPECT_NE(expect_refused().find("volume-7.nii: volume without its segmentation-7"), std::string::npos);
}

TEST_F(BadInput, TruncatedFile) {
  D::write_nifti(bad("volume-7.nii"), torch::zeros({20, 20, 8}), affine(), D::NiftiType::kInt16);
  D::write_nifti(bad("segmentation-7.nii"), labels(), affine(), D::NiftiType::kUint8);
  fs::resize_file(bad("volume-7.nii"), 2000);
  EXPECT_NE(expect_refused().find("volume-7.nii: truncated file"), std::string::npos);
}

TEST_F(BadInput, ShapesDiffer) {
  D::write_nifti(bad("volume-7.nii"), torch::zeros({20, 20, 9}), affine(), D::NiftiType::kInt16);
  D::write_nifti(bad("segmentation-7.nii"), labels(8), affine(), D::NiftiType::kUint8);
  EXPECT_NE(expect_refused().find("segmentation-7.nii: shape 20x20x8 differs from volume-7.nii 20x20x9"),
            std::string::npos);
}

TEST_F(BadInput, AffinesDiffer) {
  D::Affine other = affine();
  other[3] = 25;
  D::write_nifti(bad("volume-7.nii"), torch::zeros({20, 20, 8}), affine(), D::NiftiType::kInt16);
  D::write_nifti(bad("segmentation-7.nii"), labels(), other, D::NiftiType::kUint8);
  EXPECT_NE(expect_refused().find("segmentation-7.nii: affine differs from volume-7.nii"), std::string::npos);
}

TEST_F(BadInput, LabelsOutsideTheLayoutSet) {
  Tensor l = labels();
  l[0][0][0] = 5;
  D::write_nifti(bad("volume-7.nii"), torch::zeros({20, 20, 8}), affine(), D::NiftiType::kInt16);
  D::write_nifti(bad("segmentation-7.nii"), l, affine(), D::NiftiType::kUint8);
  EXPECT_NE(expect_refused().find("label values 5.000000 outside the lits set {0,1,2}"), std::string::npos);
}

TEST_F(BadInput, NanIntensities) {
  Tensor v = torch::zeros({20, 20, 8});
  v[3][3][3] = std::numeric_limits<float>::infinity();
  D::write_nifti(bad("volume-7.nii"), v, affine(), D::NiftiType::kFloat32);
  D::write_nifti(bad("segmentation-7.nii"), labels(), affine(), D::NiftiType::kUint8);
  EXPECT_NE(expect_refused().find("volume-7.nii: 1 voxels are NaN or Inf"), std::string::npos);
}

TEST(Prepare, SameBytesForAnyNumberOfThreads) {
  kdseg::test::TempDir dir;
  D::SynthOptions s;
  s.cases = 3;
  s.size = 48;
  s.slices = 10;
  D::write_synthetic_dataset(dir.file("raw"), s);
  ::setenv("SOURCE_DATE_EPOCH", "1767225600", 1);
  std::string first;
  for (int threads : {1, 2, 5}) {
    D::PrepareOptions o = options_for(dir.file("raw"), dir.file("p.h5"));
    o.force = true;
    o.threads = threads;
    D::prepare_store(o);
    const std::string bytes = kdseg::read_file(dir.file("p.h5"));
    if (first.empty()) first = bytes;
    EXPECT_TRUE(bytes == first) << threads << " threads";
    EXPECT_EQ(D::PreparedStore(dir.file("p.h5")).attribute("created"), "2026-01-01T00:00:00Z");
  }
  ::unsetenv("SOURCE_DATE_EPOCH");
}

TEST(Prepare, ExistingOutputNeedsForce) {
  kdseg::test::TempDir dir;
  kdseg::test::write_small_dataset(dir.file("raw"), 2, 20, 6);
  D::prepare_store(options_for(dir.file("raw"), dir.file("p.h5")));
  EXPECT_THROW(D::prepare_store(options_for(dir.file("raw"), dir.file("p.h5"))), kdseg::Error);
  D::PrepareOptions o = options_for(dir.file("raw"), dir.file("p.h5"));
  o.force = true;
  EXPECT_NO_THROW(D::prepare_store(o));
}

}  // namespace

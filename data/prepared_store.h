// The prepared store: one HDF5 file holding the selected axial slices of every case in
// canonical RAS orientation, with a case table and provenance (docs/formats.md).
//
//   /slices/image  [N,H,W] int16 (HU, when every case's values are exact integers in range)
//                            or float32; chunked per slice, deflate+shuffle
//   /slices/label  [N,H,W] uint8, the original label values
//   /slices/case   [N] int32  row of the case table
//   /slices/index  [N] int32  axial index k in the canonical volume
//   /slices/raters [N,R,H,W] uint8 every rater's labels (stores of multi-rater data only)
//   /slices/majority [N,H,W] uint8 the raters' majority as KiTS aggregates it (KiTS stores with
//                            raters only; data/raters.h, read_rater_maps)
//   /cases/id, /cases/image_file, /cases/label_file   [C] strings
//   /cases/shape [C,3] int32 (canonical), /cases/spacing [C,3] float64 (mm),
//   /cases/affine [C,4,4] float64 (canonical), /cases/slices_kept [C] int32, /cases/fold [C] int32
//   /cases/raters [C] int32, /cases/rater_agreement [C,R] float64 (with /slices/raters)
//   /cases/rater_pairwise_dice [C,G] float64, the raters' mean pairwise Dice per agreement region
//                            (data/rater_agreement.h; NaN where absent), named by the attribute
//                            rater_regions ("kidney,tumor,cyst"); with /slices/raters
//   attributes on /: format, layout, options (JSON), tool_version, created, content_hash,
//                    table_hash (data/store_check.h; absent in stores written before 2026-12-08)
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/enum_names.h"
#include "data/layout.h"
#include "data/nifti.h"
#include "data/raters.h"

namespace kdseg::data {
namespace h5 {
class Handle;  // data/hdf5_util.h
}

enum class SliceSelection { kTumour, kOrgan, kAll };
// --slices, and "slices" in the store's options: parse_enum<data::SliceSelection>, enum_name.
inline constexpr EnumName<SliceSelection> kSliceSelectionNames[] = {
    {SliceSelection::kTumour, "tumor", "those holding tumour"},
    {SliceSelection::kTumour, "tumour", kAlias},
    {SliceSelection::kOrgan, "organ", "those holding the organ"},
    {SliceSelection::kAll, "all", ""},
};
constexpr EnumNames<SliceSelection> enum_names(EnumTag<SliceSelection>) { return kSliceSelectionNames; }

struct PrepareOptions {
  std::string input;
  std::string output;
  bool detect_layout = true;
  Layout layout = Layout::kLits;
  SliceSelection slices = SliceSelection::kTumour;
  int64_t size = 512;  // output H = W; 0 keeps the canonical in-plane size ("native")
  int folds = 5;
  int compression = 4;  // deflate level 0-9; 0 stores uncompressed
  bool skip_bad_cases = false;
  bool force = false;                       // replace an existing output
  int threads = 0;                          // threads compressing slices (0: the cores available)
  RaterSearch raters = RaterSearch::kAuto;  // keep every rater's labels when the files exist
  int qubiq_task = 1;                       // the QUBIQ task whose masks are read (taskTT_segRR)
  int rater_count = 0;                      // raters every case must have (--raters N); 0: the count most cases have
};

struct PrepareSummary {
  Layout layout = Layout::kLits;
  int cases = 0;
  int64_t slices = 0;
  std::vector<std::string> skipped;  // "<file>: <problem>" of bad cases skipped
  std::vector<int64_t> slices_per_fold;
  std::vector<int64_t> cases_per_fold;
  std::vector<int64_t> label_histogram;  // voxels per label value in the kept slices
  std::string image_dtype;               // "int16" or "float32"
  int64_t raters = 0;                    // per case (0: none kept)
  std::string content_hash;
  std::string rater_agreement;  // the raters' pairwise Dice per region (describe_agreement), or ""
  double seconds = 0;
};

// The "format" attribute on / that every reader checks (PreparedStore::open_file).
inline constexpr const char* kPreparedStoreFormat = "kdseg prepared store 1";

// The store's groups, datasets and attributes (the format above), named once for its writer
// (data/prepare*.cpp) and its readers (PreparedStore, the batch loader).
namespace store {
inline constexpr const char* kSlices = "slices";
inline constexpr const char* kImage = "slices/image";
inline constexpr const char* kLabel = "slices/label";
inline constexpr const char* kSliceCase = "slices/case";
inline constexpr const char* kSliceIndex = "slices/index";
inline constexpr const char* kRaters = "slices/raters";
inline constexpr const char* kMajority = "slices/majority";
inline constexpr const char* kCases = "cases";
inline constexpr const char* kCaseId = "cases/id";
inline constexpr const char* kImageFile = "cases/image_file";
inline constexpr const char* kLabelFile = "cases/label_file";
inline constexpr const char* kShape = "cases/shape";
inline constexpr const char* kSpacing = "cases/spacing";
inline constexpr const char* kAffine = "cases/affine";
inline constexpr const char* kSlicesKept = "cases/slices_kept";
inline constexpr const char* kFold = "cases/fold";
inline constexpr const char* kCaseRaters = "cases/raters";
inline constexpr const char* kRaterAgreement = "cases/rater_agreement";
inline constexpr const char* kRaterPairwiseDice = "cases/rater_pairwise_dice";
inline constexpr const char* kFormatAttribute = "format";
inline constexpr const char* kLayoutAttribute = "layout";
inline constexpr const char* kOptionsAttribute = "options";
inline constexpr const char* kToolVersionAttribute = "tool_version";
inline constexpr const char* kCreatedAttribute = "created";
inline constexpr const char* kContentHashAttribute = "content_hash";
inline constexpr const char* kTableHashAttribute = "table_hash";  // data/store_check.h
inline constexpr const char* kRaterRegionsAttribute = "rater_regions";
}  // namespace store

// Whether a store of `layout` with `raters` per case keeps /slices/majority: KiTS's majority is
// voted per instance, so it cannot be voted again from the raters' label maps; QUBIQ's is the
// store's label.
inline bool keeps_majority(Layout layout, int64_t raters) { return raters > 0 && layout != Layout::kQubiq; }

// The processes of `mpirun -np N kdseg prepare` (data/ knows no communicator: the caller passes
// its collectives). Rank r converts cases r, r + N, ... into a part file beside the output;
// rank 0 joins the parts into the store.
struct PrepareRanks {
  int rank = 0, size = 1;
  std::function<void(std::vector<int64_t>&)> sum;  // in place, across ranks
  std::function<void()> wait_for_all;              // a barrier with no time limit
};

// Reads, checks, reorients, selects and resizes every case and writes the store atomically, one
// case in memory at a time, its slices compressed on `options.threads` threads. The store's bytes
// do not depend on the threads or ranks (with SOURCE_DATE_EPOCH set, not on the time either).
// By default nothing is written when any case is bad; with skip_bad_cases each bad case is
// logged and skipped. Errors name the file and what is wrong.
PrepareSummary prepare_store(const PrepareOptions& options, const PrepareRanks& ranks = {});

// The fold of each case: a deterministic, balanced assignment from the case ids alone.
std::vector<int> assign_folds(const std::vector<std::string>& case_ids, int folds);

// Read access to a prepared store (one HDF5 handle; not thread-safe).
class PreparedStore {
 public:
  explicit PreparedStore(const std::string& path);
  ~PreparedStore();
  PreparedStore(const PreparedStore&) = delete;
  PreparedStore& operator=(const PreparedStore&) = delete;

  // The one format check of every reader of a store: opens `path` read-only once it is a regular
  // file, an HDF5 file, and carries the prepared store's "format" attribute; errors end in
  // "no such prepared store", "not an HDF5 file, or unreadable" or "not a kdseg prepared store".
  // Callers include data/hdf5_util.h for h5::Handle.
  static h5::Handle open_file(const std::string& path);

  int64_t slices() const { return slices_; }
  int64_t height() const { return height_; }
  int64_t width() const { return width_; }
  const std::vector<std::string>& case_ids() const { return case_ids_; }
  const std::vector<int32_t>& slice_case() const { return slice_case_; }
  const std::vector<int32_t>& slice_index() const { return slice_index_; }
  const std::vector<int32_t>& case_fold() const { return case_fold_; }
  // The source NIfTI of each case, its canonical shape [I,J,K] and canonical affine.
  const std::vector<std::string>& case_image_files() const { return case_image_files_; }
  const std::vector<std::array<int64_t, 3>>& case_shapes() const { return case_shapes_; }
  const std::vector<Affine>& case_affines() const { return case_affines_; }
  // Case c's voxel spacing in mm as stored: {between slices, along rows, along columns}, the
  // canonical spacing with the plane scaled by prepare's resize to height() x width().
  std::array<double, 3> stored_spacing(size_t c) const;
  std::string attribute(const std::string& name) const;

  // The number of folds (1 + the largest fold number), and the rows of the cases in `folds`
  // (every row when empty), in store order. Errors name a fold that does not exist.
  int folds() const;
  std::vector<int64_t> rows_in_folds(const std::vector<int>& folds) const;

  // Slice `row`: image [H,W] float32 (HU) and label [H,W] uint8.
  at::Tensor image(int64_t row) const;
  at::Tensor label(int64_t row) const;

  // Raters per case (0: the store keeps none), and each rater's agreement with the majority
  // (/cases/rater_agreement, the weights of `--labels weighted`), per case.
  int64_t raters() const { return raters_; }
  const std::vector<std::vector<double>>& rater_agreement() const { return rater_agreement_; }
  // How much the raters agree with each other: per case, the mean pairwise Dice of each region
  // (/cases/rater_pairwise_dice, NaN where absent; data/rater_agreement.h), and the regions'
  // names. Empty for stores without raters and stores written before it was kept.
  const std::vector<std::vector<double>>& rater_pairwise_dice() const { return rater_pairwise_; }
  const std::vector<std::string>& rater_regions() const { return rater_regions_; }

 private:
  void read_case_geometry();  // /cases/image_file, /cases/shape, /cases/affine
  void read_rater_table();    // /slices/raters' R, /cases/rater_agreement
  at::Tensor read_row(const char* dataset, int64_t row, at::ScalarType type) const;
  std::string path_;
  std::unique_ptr<h5::Handle> file_;
  int64_t slices_ = 0, height_ = 0, width_ = 0;
  std::vector<std::string> case_ids_;
  std::vector<int32_t> slice_case_, slice_index_, case_fold_;
  std::vector<std::string> case_image_files_;
  std::vector<std::array<int64_t, 3>> case_shapes_;
  std::vector<Affine> case_affines_;
  int64_t raters_ = 0;
  std::vector<std::vector<double>> rater_agreement_;
  std::vector<std::vector<double>> rater_pairwise_;
  std::vector<std::string> rater_regions_;
};

}  // namespace kdseg::data

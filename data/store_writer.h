// Internal to `kdseg prepare` (data/prepare*.cpp): the writer of a prepared store
// (data/prepared_store.h), or of a rank's part of one, a case at a time.
//
// Slices arrive as chunks already compressed (data/deflate.h's encode_chunk, the bytes HDF5's
// shuffle + deflate filters would write) and are written with H5Dwrite_chunk, each with the
// word_digest of its values, which the writer chains into the store's content hash. The same
// calls in the same order write the same bytes.
#pragma once

#include <hdf5.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/hash.h"
#include "data/hdf5_util.h"
#include "data/layout.h"
#include "data/orientation.h"
#include "data/prepared_store.h"

namespace kdseg::data::detail {

// One row of a dataset: its chunk as stored, the word_digest of its values (chained into the
// content hash) and, for labels, how many pixels hold each value.
struct EncodedRow {
  std::vector<uint8_t> chunk;
  uint64_t digest = 0;
  std::vector<int64_t> counts;
};

// Appends rows of shape `row` ([] for scalars) to an extendible dataset [n, row...], one row per
// chunk (4096 scalars per chunk), shuffled and deflated at `level` (none at 0). Slices are
// written as chunks made by encode_chunk.
class RowWriter {
 public:
  RowWriter(hid_t parent, const char* name, hid_t type, std::vector<hsize_t> row, int level);
  // `rows` rows of values of the dataset's type, converted and compressed by HDF5.
  void append(const void* data, int64_t rows);
  // Room for `rows` more rows, written with write_chunk.
  void extend(int64_t rows);
  void write_chunk(int64_t row, const std::vector<uint8_t>& chunk);
  hsize_t rows() const { return rows_; }

 private:
  h5::Handle set_;
  hid_t type_;
  std::vector<hsize_t> row_;
  hsize_t rows_ = 0;
};

// What the store records of a case besides its slices.
struct CaseEntry {
  std::string id, image_file, label_file;
  std::vector<int32_t> index;
  std::array<int32_t, 3> shape{};
  std::array<double, 3> spacing{};
  Affine affine{};
  std::vector<double> agreement;
  std::vector<double> pairwise;  // per agreement region (rater_agreement.h); NaN: absent
};

// The slice datasets, in the order a case's rows are written.
enum class Rows { kImage, kLabel, kRaters, kMajority };

// Writes a store (or a rank's part of one) into `path` a case at a time: begin_case, its image
// rows, label rows, rater rows and majority rows (keeps_majority) in order, end_case; finish writes the case table and
// the attributes. `integral` stores the image as int16, else float32; `raters` is the raters per case (0: none kept).
class StoreWriter {
 public:
  StoreWriter(const std::string& path, const PrepareOptions& options, Layout layout, bool integral, int64_t raters);

  hid_t file() const { return file_; }
  size_t image_element() const { return integral_ ? 2 : 4; }

  // Every case's slices share the first case's in-plane size (`height` x `width`).
  void begin_case(CaseEntry entry, int64_t height, int64_t width);
  // Row j of the case in dataset `which`; rows of a dataset come in order. Empties `row`.
  void write(Rows which, int64_t j, EncodedRow& row);
  void end_case();

  // Counts of label values of rows written without them (a part's, joined into the store).
  void add_histogram(const std::vector<int64_t>& counts);
  // Each row's digest, per dataset, and the label histogram so far (a part's own tables).
  const std::vector<uint64_t>& digests(Rows which) const { return digests_[static_cast<size_t>(which)]; }
  const std::vector<int64_t>& histogram() const { return histogram_; }

  // The case table, the attributes and the summary's counts. A store needs a slice; a rank's
  // part (`require_slices` false) may hold none.
  void finish(PrepareSummary& summary, bool require_slices = true);

 private:
  void create_slice_sets(int64_t height, int64_t width);
  h5::Handle write_case_table(const std::vector<int>& fold_of);

  const PrepareOptions& options_;
  const Layout layout_;
  const bool integral_;
  const int64_t raters_;  // per case; 0: the store keeps no raters
  // Declared in creation order, so that they close in the reverse.
  h5::Handle file_, slices_;
  std::unique_ptr<RowWriter> image_rows_, label_rows_, rater_rows_, majority_rows_;
  RowWriter case_rows_, index_rows_;
  int64_t height_ = -1, width_ = -1, first_row_ = 0;
  uint64_t hash_ = kFnvOffset;
  CaseEntry entry_;
  std::vector<std::string> ids_, image_files_, label_files_;
  std::vector<int32_t> slices_kept_, shapes_;
  std::vector<double> spacings_, affines_, agreement_;
  std::vector<std::vector<double>> pairwise_;
  std::vector<int64_t> histogram_;
  std::vector<uint64_t> digests_[4];  // per Rows value, every row written
};

}  // namespace kdseg::data::detail

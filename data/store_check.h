// `kdseg verify --data`: whether a prepared store still holds what prepare wrote.
//
// prepare chains a digest of every slice it writes (and each case's id and slice indices) into
// the store's content_hash (data/store_writer.h), and digests its case table (geometry, files,
// folds, rater tables) into table_hash. Reading both back (slices through HDF5, whose deflate
// filter checks each compressed chunk's Adler-32 on the way) and digesting them again tells a
// store whose bytes changed after it was written (a flipped bit on disk, a copy damaged in
// transfer, an uncompressed store edited in place) from an intact one.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>

namespace kdseg::data {

struct StoreCheck {
  std::string recorded;        // the content_hash attribute
  std::string computed;        // the same hash from the slices as they are now
  std::string table_recorded;  // the table_hash attribute; empty in stores written before it
  std::string table_computed;
  std::string created;  // the created attribute: which definition of the content hash applies
  int64_t slices = 0;
  int cases = 0;
  double seconds = 0;
  bool intact() const {
    return !recorded.empty() && recorded == computed && (table_recorded.empty() || table_recorded == table_computed);
  }
};

// The table_hash of the open store `file`: FNV-1a over the case table's datasets in a fixed
// order (/cases/id, image_file, label_file, shape, spacing, affine, slices_kept, fold, raters,
// rater_agreement, rater_pairwise_dice; each present one by its name, then its values in their
// stored element type, strings with their lengths), as hex64. prepare records it; verify
// recomputes it.
std::string case_table_hash(hid_t file);

// Reads every slice of the store at `path`. Throws kdseg::Error naming the file (and the dataset
// and row) when it cannot be read, or a compressed chunk fails its check; `progress` shows a bar.
StoreCheck check_store_content(const std::string& path, bool progress = true);

}  // namespace kdseg::data

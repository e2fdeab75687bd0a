// `kdseg verify --data`: whether a prepared store still holds the slices prepare wrote.
//
// prepare chains a digest of every slice it writes (and each case's id and slice indices) into
// the store's content_hash (data/store_writer.h). Reading every slice back through HDF5 (whose
// deflate filter checks each compressed chunk's Adler-32 on the way) and chaining the same
// digests tells a store whose bytes changed after it was written (a flipped bit on disk, a copy
// damaged in transfer, an uncompressed store edited in place) from an intact one.
#pragma once

#include <cstdint>
#include <string>

namespace kdseg::data {

struct StoreCheck {
  std::string recorded;  // the content_hash attribute
  std::string computed;  // the same hash from the slices as they are now
  int64_t slices = 0;
  int cases = 0;
  double seconds = 0;
  bool intact() const { return !recorded.empty() && recorded == computed; }
};

// Reads every slice of the store at `path`. Throws kdseg::Error naming the file (and the dataset
// and row) when it cannot be read, or a compressed chunk fails its check; `progress` shows a bar.
StoreCheck check_store_content(const std::string& path, bool progress = true);

}  // namespace kdseg::data

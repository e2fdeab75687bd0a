// Synthetic CT data in the LiTS and KiTS layouts, written as real NIfTI files: air, a body
// outline, an organ with realistic HU (liver, or two kidneys), and tumours as lower-density
// blobs whose boundaries are soft (partial-volume blur plus noise), so that the label at the
// boundary is genuinely ambiguous. Orientations (axis permutations and flips), datatypes and,
// for LiTS, .nii/.nii.gz vary across cases. Deterministic from the seed.
#pragma once

#include <cstdint>
#include <string>

#include "data/layout.h"

namespace kdseg::data {

struct SynthOptions {
  Layout layout = Layout::kLits;
  int cases = 4;
  int64_t size = 64;    // in-plane voxels
  int64_t slices = 32;  // axial slices
  uint64_t seed = 0;
  bool force = false;  // write into a folder that holds other files
};

struct SynthSummary {
  int cases = 0;
  int64_t tumour_voxels = 0;
  int64_t organ_voxels = 0;
};

// Writes the dataset into `dir` (created if needed) and records the options in
// dir/.kdseg-synth.json first. A folder that holds anything else is refused (it may be real
// data) unless `force`; a folder written before with the same options is rewritten with the
// same files, so a rerun of an interrupted synth completes it. Throws kdseg::Error naming the
// folder.
SynthSummary write_synthetic_dataset(const std::string& dir, const SynthOptions& options);

}  // namespace kdseg::data

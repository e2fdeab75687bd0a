// Internal to `kdseg prepare` (data/prepare*.cpp): reading and checking one case, and what the
// run decides from the files' headers before any case is converted.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "data/layout.h"
#include "data/orientation.h"
#include "data/prepared_store.h"
#include "data/raters.h"

namespace kdseg::data::detail {

// A case in memory, checked, in the dtypes its files store; nothing is reoriented yet.
struct CaseVolumes {
  at::Tensor image;               // [I,J,K] the file's values (a view of its [K,J,I] order)
  at::Tensor label;               // [I,J,K] uint8 label values
  at::Tensor raters;              // [R,I,J,K] uint8 label maps of the raters, or undefined
  at::Tensor majority;            // [I,J,K] uint8 their majority (data/raters.h), where keeps_majority
  Reorientation canonical;        // of the image's voxel axes
  std::vector<int32_t> index;     // the canonical axial slices kept, ascending
  std::vector<double> agreement;  // each rater's Dice against the majority (data/raters.h)
  std::vector<double> pairwise;   // per agreement region, the raters' mean pairwise Dice (rater_agreement.h)
};

// Reads the image, its label file (or, for QUBIQ, the raters' majority) and the raters, checks
// them (the same grid, the layout's label values) and selects the slices options.slices asks
// for. Errors name the file.
CaseVolumes read_case(const CaseFiles& files, const RaterFiles& rater_files, const PrepareOptions& options,
                      Layout layout, int threads);

// A case that cannot be used: the problem, naming its files.
std::string case_problem(const std::exception& e, const CaseFiles& files);

// Whether `path`'s values are exact integers in int16's range (the store then keeps int16).
// A file that cannot be read counts as integral: its case is reported when it is converted.
bool integral_values(const std::string& path);

// Whether slices of `path` are resized to `size` (the store then keeps float32: bilinear HU are
// fractional); `size` 0 keeps the native size.
bool resized(const std::string& path, int64_t size);

}  // namespace kdseg::data::detail

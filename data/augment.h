// Per-sample transforms of one slice, on the CPU: the training augmentation (random scale, flip
// and crop, its randomness drawn from a seed alone so that it is the same whatever the number of
// ranks or workers) and the evaluation centre crop. Called by the batch loader's workers.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace kdseg::data {

struct AugmentOptions {
  double scale_min = 0.5, scale_max = 2.0;  // random scale (1 and 1: none)
  bool flip = true;                         // left-right flip (the R axis, dim 0 of a slice)
  int64_t crop = 384;                       // output size; 0 keeps the (scaled) slice
};

// One sample: image [1,H,W] (windowed), label [H,W] int64, optional extra maps [C,H,W]
// (soft labels) that follow the same geometric transform.
struct Sample {
  at::Tensor image, label, extra;
};

// The training transform, drawing its randomness from `seed` only: random scale (bilinear
// image and extra maps, which stay normalised; nearest labels), flip, random crop with padding
// (image with -1, the window's low end; labels with ignore_index; extra maps with 0).
Sample augment(const Sample& in, const AugmentOptions& options, uint64_t seed, int64_t ignore_index);
// The evaluation transform: centre crop (with the same padding), or the whole slice (crop 0).
Sample center_crop(const Sample& in, int64_t crop, int64_t ignore_index);

}  // namespace kdseg::data

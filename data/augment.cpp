#include "data/augment.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "core/random.h"

namespace kdseg::data {
namespace {
namespace F = torch::nn::functional;
using torch::Tensor;

// Pads [C,H,W] at the bottom/right to at least `size` and crops size x size at (top, left).
Tensor pad_crop(const Tensor& t, int64_t size, int64_t top, int64_t left, double fill) {
  const int64_t h = t.size(1), w = t.size(2);
  Tensor padded = t;
  if (h < size || w < size) {
    padded = torch::full({t.size(0), std::max(h, size), std::max(w, size)}, fill, t.options());
    padded.narrow(1, 0, h).narrow(2, 0, w).copy_(t);
  }
  return padded.narrow(1, top, size).narrow(2, left, size).contiguous();
}

Sample crop_all(const Sample& in, int64_t size, int64_t top, int64_t left, int64_t ignore_index) {
  Sample out;
  out.image = pad_crop(in.image, size, top, left, -1.0);
  out.label = pad_crop(in.label.unsqueeze(0), size, top, left, static_cast<double>(ignore_index)).squeeze(0);
  if (in.extra.defined()) out.extra = pad_crop(in.extra, size, top, left, 0.0);
  return out;
}

// Source coordinates (pixel centres at integers) of every output pixel along one axis, as
// grid_sample's normalised coordinates (align_corners=false), and whether each falls inside the
// scaled slice.
std::pair<Tensor, Tensor> sample_axis(int64_t n_out, int64_t offset, int64_t scaled, int64_t source, bool mirror) {
  Tensor dst = torch::arange(n_out, torch::kDouble) + static_cast<double>(offset);
  const Tensor inside = dst < static_cast<double>(scaled);
  if (mirror) dst = static_cast<double>(scaled - 1) - dst;
  const Tensor src = (dst + 0.5) * (static_cast<double>(source) / static_cast<double>(scaled)) - 0.5;
  return std::make_pair(((2 * src + 1) / static_cast<double>(source) - 1).to(torch::kFloat), inside);
}

}  // namespace

// Scale, flip and crop in one resampling of the output grid (grid_sample), so that the cost is
// that of the crop whatever the scale: output pixel (i, j) is pixel (top + i, left + j) of the
// slice scaled to round(H*s) x round(W*s) (the sampling positions of bilinear interpolation
// with align_corners=false), mirrored along dim 0 when flipped; positions outside the scaled
// slice are padding.
Sample augment(const Sample& in, const AugmentOptions& options, uint64_t seed, int64_t ignore_index) {
  Rng rng(seed);
  const double scale =
      options.scale_max > options.scale_min ? rng.uniform(options.scale_min, options.scale_max) : options.scale_min;
  const bool flip = options.flip && rng.bernoulli(0.5);
  const int64_t h = in.image.size(1), w = in.image.size(2), crop = options.crop;
  const int64_t scaled_h = std::max<int64_t>(1, std::llround(static_cast<double>(h) * scale));
  const int64_t scaled_w = std::max<int64_t>(1, std::llround(static_cast<double>(w) * scale));
  const int64_t out_h = crop > 0 ? crop : scaled_h, out_w = crop > 0 ? crop : scaled_w;
  const int64_t top = crop > 0 ? rng.uniform_int(0, std::max<int64_t>(0, scaled_h - crop)) : 0;
  const int64_t left = crop > 0 ? rng.uniform_int(0, std::max<int64_t>(0, scaled_w - crop)) : 0;
  if (scaled_h == h && scaled_w == w && !flip && out_h <= h && out_w <= w) {
    return crop_all(in, out_h, top, left, ignore_index);  // a plain crop: no resampling
  }
  const auto [grid_y, inside_y] = sample_axis(out_h, top, scaled_h, h, flip);
  const auto [grid_x, inside_x] = sample_axis(out_w, left, scaled_w, w, false);
  const Tensor grid =
      torch::stack({grid_x.view({1, out_w}).expand({out_h, out_w}), grid_y.view({out_h, 1}).expand({out_h, out_w})}, 2)
          .unsqueeze(0);
  const Tensor outside = (inside_y.view({out_h, 1}) & inside_x.view({1, out_w})).logical_not();
  const auto sample = [&](const Tensor& t, F::GridSampleFuncOptions::mode_t mode) {
    return F::grid_sample(t.unsqueeze(0), grid,
                          F::GridSampleFuncOptions().mode(mode).padding_mode(torch::kBorder).align_corners(false))
        .squeeze(0);
  };
  Sample out;
  out.image = sample(in.image, torch::kBilinear).masked_fill(outside.unsqueeze(0), -1.0);
  out.label = sample(in.label.unsqueeze(0).to(torch::kFloat), torch::kNearest)
                  .squeeze(0)
                  .round()
                  .to(torch::kLong)
                  .masked_fill(outside, ignore_index);
  if (in.extra.defined()) out.extra = sample(in.extra, torch::kBilinear).masked_fill(outside.unsqueeze(0), 0.0);
  return out;
}

Sample center_crop(const Sample& in, int64_t crop, int64_t ignore_index) {
  if (crop <= 0) return in;
  const int64_t h = in.image.size(1), w = in.image.size(2);
  // A slice smaller than the crop is padded around its centre.
  Sample centred = in;
  const int64_t pad_h = std::max<int64_t>(0, crop - h), pad_w = std::max<int64_t>(0, crop - w);
  if (pad_h > 0 || pad_w > 0) {
    const std::vector<int64_t> pad{pad_w / 2, pad_w - pad_w / 2, pad_h / 2, pad_h - pad_h / 2};
    centred.image = F::pad(in.image, F::PadFuncOptions(pad).value(-1.0));
    centred.label =
        F::pad(in.label.unsqueeze(0), F::PadFuncOptions(pad).value(static_cast<double>(ignore_index))).squeeze(0);
    if (in.extra.defined()) centred.extra = F::pad(in.extra, F::PadFuncOptions(pad).value(0.0));
  }
  const int64_t top = (centred.image.size(1) - crop) / 2, left = (centred.image.size(2) - crop) / 2;
  return crop_all(centred, crop, top, left, ignore_index);
}

}  // namespace kdseg::data

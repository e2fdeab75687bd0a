#include "eval/figures.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "eval/report_text.h"

namespace kdseg::eval {
namespace {
using torch::Tensor;

constexpr uint8_t kBackground = 24;  // between panels

// The colour map's control points at 0, 0.25, 0.5, 0.75 and 1 (close to viridis).
constexpr float kMap[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};

}  // namespace

Colour model_colour(size_t m) {
  const std::string hex = report::detail::color_of(m);  // "#RRGGBB"
  Colour colour{};
  for (size_t k = 0; k < 3; ++k) colour[k] = static_cast<uint8_t>(std::stoi(hex.substr(1 + 2 * k, 2), nullptr, 16));
  return colour;
}

Tensor contour(const Tensor& mask) {
  KDSEG_CHECK(mask.dim() == 2, "contour: the mask must be [H,W], got ", mask.sizes());
  const Tensor m = mask.to(torch::kBool);
  // Outside the slice counts as outside the mask.
  const Tensor padded = torch::constant_pad_nd(m, {1, 1, 1, 1}, 0);
  const int64_t h = m.size(0), w = m.size(1);
  using torch::indexing::Slice;
  const Tensor inside = padded.index({Slice(0, h), Slice(1, w + 1)}) &
                        padded.index({Slice(2, h + 2), Slice(1, w + 1)}) &
                        padded.index({Slice(1, h + 1), Slice(0, w)}) & padded.index({Slice(1, h + 1), Slice(2, w + 2)});
  return m & inside.logical_not();
}

Tensor colour_map(const Tensor& values) {
  const Tensor v = values.to(torch::kFloat).clamp(0, 1) * 4;  // position among the control points
  const Tensor low = v.floor().clamp(0, 3).to(torch::kLong);
  const Tensor fraction = (v - low.to(torch::kFloat)).unsqueeze(-1);
  const Tensor table = torch::from_blob(const_cast<float*>(&kMap[0][0]), {5, 3}, torch::kFloat);
  const Tensor a = table.index({low}), b = table.index({low + 1});
  return (a + (b - a) * fraction).round().to(torch::kByte);
}

Tensor grey(const Tensor& windowed) {
  const Tensor g = ((windowed.to(torch::kFloat).clamp(-1, 1) + 1) * 127.5f).round().to(torch::kByte);
  return g.unsqueeze(-1).expand({g.size(0), g.size(1), 3}).contiguous();
}

void paint(Tensor& rgb, const Tensor& mask, const Colour& colour) {
  const Tensor c = torch::tensor({colour[0], colour[1], colour[2]}, torch::kByte);
  rgb.index_put_({mask.to(torch::kBool)}, c);
}

Tensor panel(const Tensor& rgb, std::array<double, 2> spacing, double pixels_per_mm) {
  KDSEG_CHECK(rgb.dim() == 3 && rgb.size(2) == 3, "panel: the image must be [X,Y,3], got ", rgb.sizes());
  // Radiological: rows run posterior-wards (Y flipped), columns to the patient's left (X flipped).
  const Tensor turned = rgb.transpose(0, 1).flip({0, 1});  // [Y,X,3]
  const int64_t rows = std::max<int64_t>(1, std::lround(turned.size(0) * spacing[1] * pixels_per_mm));
  const int64_t columns = std::max<int64_t>(1, std::lround(turned.size(1) * spacing[0] * pixels_per_mm));
  // Nearest neighbour: each output pixel takes the slice pixel under its centre.
  const Tensor r = ((torch::arange(rows, torch::kDouble) + 0.5) * turned.size(0) / rows).floor().to(torch::kLong);
  const Tensor c = ((torch::arange(columns, torch::kDouble) + 0.5) * turned.size(1) / columns).floor().to(torch::kLong);
  return turned.index_select(0, r).index_select(1, c).contiguous();
}

RgbImage tile(const std::vector<std::vector<Tensor>>& grid, int gap) {
  std::vector<int64_t> heights(grid.size(), 0), widths;
  for (size_t r = 0; r < grid.size(); ++r) {
    if (widths.size() < grid[r].size()) widths.resize(grid[r].size(), 0);
    for (size_t c = 0; c < grid[r].size(); ++c) {
      if (!grid[r][c].defined()) continue;
      heights[r] = std::max(heights[r], grid[r][c].size(0));
      widths[c] = std::max(widths[c], grid[r][c].size(1));
    }
  }
  int64_t height = gap, width = gap;
  for (int64_t h : heights) height += h + gap;
  for (int64_t w : widths) width += w + gap;
  Tensor canvas = torch::full({height, width, 3}, kBackground, torch::kByte);
  int64_t y = gap;
  for (size_t r = 0; r < grid.size(); ++r) {
    int64_t x = gap;
    for (size_t c = 0; c < grid[r].size(); ++c) {
      const Tensor& p = grid[r][c];
      if (p.defined()) canvas.narrow(0, y, p.size(0)).narrow(1, x, p.size(1)).copy_(p);
      x += widths[c] + gap;
    }
    y += heights[r] + gap;
  }
  RgbImage image;
  image.height = static_cast<int>(height);
  image.width = static_cast<int>(width);
  image.pixels.assign(canvas.data_ptr<uint8_t>(), canvas.data_ptr<uint8_t>() + canvas.numel());
  return image;
}

}  // namespace kdseg::eval

// The pictures of report.html: what a model did on a slice. Contours of masks, colour maps of
// probabilities and entropy, panels at the slice's true aspect, and a grid of panels as one
// RgbImage (eval/png.h). Slices are canonical [X,Y] (RAS+: X towards the patient's right, Y
// anterior); panels show them radiologically (anterior up, the patient's right on the viewer's
// left).
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <vector>

#include "eval/png.h"

namespace kdseg::eval {

using Colour = std::array<uint8_t, 3>;

// Model m's colour: report.html's (eval/report_text.h, color_of). The reference contour is white.
Colour model_colour(size_t m);
inline constexpr Colour kReferenceColour{255, 255, 255};

// The boundary of `mask` [H,W] bool: its pixels with a 4-neighbour outside it (or outside the
// slice).
at::Tensor contour(const at::Tensor& mask);

// Values in [0, 1] [H,W] -> [H,W,3] uint8 through a perceptual dark-blue-to-yellow map (0 dark
// blue, 0.5 teal-green, 1 yellow); values outside [0, 1] are clamped.
at::Tensor colour_map(const at::Tensor& values);

// The windowed CT [H,W] in [-1, 1] (data/task.h's window) as grey [H,W,3] uint8.
at::Tensor grey(const at::Tensor& windowed);

// Paints `mask` [H,W] bool of `rgb` [H,W,3] uint8 in `colour` (in place).
void paint(at::Tensor& rgb, const at::Tensor& mask, const Colour& colour);

// A canonical slice image [X,Y,3] as a panel: turned radiologically and resized (nearest) so that a
// pixel is `spacing` mm ([x, y]) at `pixels_per_mm`.
at::Tensor panel(const at::Tensor& rgb, std::array<double, 2> spacing, double pixels_per_mm);

// Panels [h,w,3] uint8 in a grid (rows of columns; an undefined tensor leaves its cell dark),
// `gap` pixels apart on a dark background, as one image.
RgbImage tile(const std::vector<std::vector<at::Tensor>>& grid, int gap = 4);

}  // namespace kdseg::eval

// The pictures of the report on arrays small enough to check by hand: contours, the colour map,
// panels at their true aspect and orientation, tiles, PNG bytes read back by libpng, base64, and
// training curves from a metrics.jsonl with a resume and a torn last line.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/figures.h"
#include "eval/png.h"
#include "eval/training_curves.h"
#include "tests/data/temp_dir.h"

namespace {
namespace E = kdseg::eval;
using torch::Tensor;

Tensor mask_of(const std::vector<std::string>& rows) {
  Tensor m = torch::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())}, torch::kBool);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < rows[r].size(); ++c) m[r][c] = rows[r][c] == '#';
  }
  return m;
}

TEST(Figures, ContourIsTheMaskPixelsWithANeighbourOutside) {
  const Tensor square = mask_of({".....", ".###.", ".###.", ".###.", "....."});
  EXPECT_TRUE(E::contour(square).equal(mask_of({".....", ".###.", ".#.#.", ".###.", "....."})));
  // The slice's edge counts as outside; a one-pixel line is all contour.
  const Tensor corner = mask_of({"##.", "##.", "..#"});
  EXPECT_TRUE(E::contour(corner).equal(corner));
  const Tensor full = torch::ones({4, 4}, torch::kBool);
  EXPECT_TRUE(E::contour(full).equal(mask_of({"####", "#..#", "#..#", "####"})));
  EXPECT_EQ(E::contour(torch::zeros({3, 3}, torch::kBool)).sum().item<int64_t>(), 0);
}

TEST(Figures, ColourMapRunsThroughItsControlPointsAndClamps) {
  const Tensor rgb = E::colour_map(torch::tensor({-1.0f, 0.0f, 0.5f, 1.0f, 2.0f, 0.125f}));
  const auto at = [&](int64_t i) {
    return std::vector<int>{rgb[i][0].item<int>(), rgb[i][1].item<int>(), rgb[i][2].item<int>()};
  };
  EXPECT_EQ(at(0), (std::vector<int>{68, 1, 84}));     // clamped to 0
  EXPECT_EQ(at(1), (std::vector<int>{68, 1, 84}));     // 0: dark violet-blue
  EXPECT_EQ(at(2), (std::vector<int>{33, 145, 140}));  // 0.5: teal
  EXPECT_EQ(at(3), (std::vector<int>{253, 231, 37}));  // 1: yellow
  EXPECT_EQ(at(4), at(3));                             // clamped to 1
  // Halfway between the first two control points (68,1,84) and (59,82,139).
  EXPECT_EQ(at(5), (std::vector<int>{64, 42, 112}));
  // The grey of the window: -1 black, 1 white.
  const Tensor g = E::grey(torch::tensor({{-1.0f, 1.0f}}));
  EXPECT_EQ(g[0][0][0].item<int>(), 0);
  EXPECT_EQ(g[0][1][2].item<int>(), 255);
}

TEST(Figures, PanelsAreRadiologicalAtTheTrueAspect) {
  // A canonical slice [X=2, Y=3] (RAS+): mark x = 0, the patient's left-most column, and y = 2, the
  // most anterior row.
  Tensor rgb = torch::zeros({2, 3, 3}, torch::kByte);
  rgb[0][2] = torch::tensor({255, 0, 0}, torch::kByte);
  // Pixels of 1 mm along X and 2 mm along Y, at 1 pixel per mm: 2 columns, 6 rows.
  const Tensor p = E::panel(rgb, {1.0, 2.0}, 1.0);
  ASSERT_EQ(p.sizes(), torch::IntArrayRef({6, 2, 3}));
  // Anterior at the top, the patient's left on the viewer's right.
  EXPECT_EQ(p[0][1][0].item<int>(), 255);
  EXPECT_EQ(p[1][1][0].item<int>(), 255);
  EXPECT_EQ(p.select(2, 0).sum().item<int64_t>(), 2 * 255);
}

TEST(Figures, TilesLayPanelsOutWithGaps) {
  const Tensor a = torch::full({2, 3, 3}, 200, torch::kByte), b = torch::full({4, 1, 3}, 100, torch::kByte);
  const E::RgbImage image = E::tile({{a, b}, {Tensor(), a}}, 1);
  // Columns 3 and 3 wide (b and a share the second), rows 4 and 2 high, gaps of 1: 9 by 9.
  EXPECT_EQ(image.width, 9);
  EXPECT_EQ(image.height, 9);
  const auto pixel = [&](int x, int y) { return image.pixels[static_cast<size_t>((y * image.width + x) * 3)]; };
  EXPECT_EQ(pixel(1, 1), 200);  // a at (1,1)
  EXPECT_EQ(pixel(5, 4), 100);  // b at (5,1), 4 rows
  EXPECT_EQ(pixel(1, 6), 24);   // the empty cell stays background
  EXPECT_EQ(pixel(5, 6), 200);  // a again
}

TEST(Png, WhatIsWrittenReadsBackPixelForPixel) {
  E::RgbImage image;
  image.width = 5;
  image.height = 3;
  for (int i = 0; i < 15; ++i) {
    image.pixels.push_back(static_cast<uint8_t>(i * 17));
    image.pixels.push_back(static_cast<uint8_t>(255 - i));
    image.pixels.push_back(static_cast<uint8_t>(i % 2 ? 0 : 255));
  }
  const std::string bytes = E::encode_png(image);
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
  const E::RgbImage back = E::decode_png(bytes);
  EXPECT_EQ(back.width, 5);
  EXPECT_EQ(back.height, 3);
  EXPECT_EQ(back.pixels, image.pixels);
  EXPECT_THROW(E::decode_png("not a png at all"), kdseg::Error);
  EXPECT_THROW(E::decode_png(bytes.substr(0, bytes.size() / 2)), kdseg::Error);  // truncated
  image.pixels.pop_back();
  EXPECT_THROW(E::encode_png(image), kdseg::Error);
}

TEST(Png, Base64OfTheRfcVectors) {
  EXPECT_EQ(E::base64(""), "");
  EXPECT_EQ(E::base64("f"), "Zg==");
  EXPECT_EQ(E::base64("fo"), "Zm8=");
  EXPECT_EQ(E::base64("foo"), "Zm9v");
  EXPECT_EQ(E::base64("foobar"), "Zm9vYmFy");
}

TEST(TrainingCurves, AResumedRunIsOneCurveAndATornLineIsSkipped) {
  kdseg::test::TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  std::ofstream(path) << R"({"step": 10, "loss": 1.0, "lr": 0.1}
{"step": 20, "loss": 0.8, "lr": 0.2}
{"validation": {"step": 20, "mean_dice": 0.5, "mean_ece": 0.2}}
{"step": 30, "loss": 0.7, "lr": 0.3}
{"step": 20, "loss": 0.75, "lr": 0.2}
{"step": 30, "loss": 0.6, "lr": 0.3}
{"validation": {"step": 30, "mean_dice": 0.6, "mean_ece": 0.1}}
{"step": 40, "lo)";
  const nlohmann::json c = E::read_training_curves(path);
  EXPECT_EQ(c.at("steps"), nlohmann::json({10, 20, 30}));
  EXPECT_EQ(c.at("loss"), nlohmann::json({1.0, 0.75, 0.6}));  // the resumed run's values win
  EXPECT_EQ(c.at("lr"), nlohmann::json({0.1, 0.2, 0.3}));
  EXPECT_EQ(c.at("validation").at("steps"), nlohmann::json({20, 30}));
  EXPECT_EQ(c.at("validation").at("dice"), nlohmann::json({0.5, 0.6}));
  // Thinned to 2 points: every other one and the last.
  EXPECT_EQ(E::read_training_curves(path, 2).at("steps"), nlohmann::json({10, 30}));
  EXPECT_TRUE(E::read_training_curves(dir.file("absent.jsonl")).is_null());
}

}  // namespace

// SyncBatchNorm2d on CUDA, one process: the layer's own autograd function against
// BatchNorm2d, in float32 and under bf16 activations, contiguous and channels-last (CUDA's
// channels-last backward kernel reads statistics that the CPU kernels ignore). Skips without
// a CUDA device.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dist/sync_batch_norm.h"

namespace {
namespace D = kdseg::dist;
using torch::Tensor;

TEST(SyncBatchNormGpu, MatchesBatchNorm2dInEveryLayoutAndPrecision) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  for (const auto dtype : {torch::kFloat, torch::kBFloat16}) {
    for (const auto format : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
      torch::manual_seed(3);
      D::SyncBatchNorm2d sync(8, nullptr);
      torch::nn::BatchNorm2d plain(8);
      {
        torch::NoGradGuard no_grad;
        const Tensor w = torch::rand({8}) + 0.5, b = torch::randn({8});
        sync->weight.copy_(w);
        sync->bias.copy_(b);
        plain->weight.copy_(w);
        plain->bias.copy_(b);
      }
      sync->to(torch::kCUDA);
      plain->to(torch::kCUDA);
      // A mean far from 0 against the spread; the float32 reference sees the values the layer
      // sees (rounded to bf16 first when the activations are bf16).
      const Tensor x = (torch::randn({4, 8, 16, 16}) * 2 + 6).to(torch::kCUDA).to(dtype).contiguous(format);
      const Tensor g = torch::randn({4, 8, 16, 16}).to(torch::kCUDA).to(dtype).contiguous(format);
      const Tensor mine = x.clone().requires_grad_(true);
      const Tensor reference = x.to(torch::kFloat).requires_grad_(true);
      const Tensor out = sync(mine), expected = plain(reference);
      out.backward(g);
      expected.backward(g.to(torch::kFloat));
      const auto relative = [](const Tensor& a, const Tensor& b) {
        return (a.to(torch::kFloat) - b).abs().max().item<double>() / b.abs().max().item<double>();
      };
      const double tol = dtype == torch::kFloat ? 1e-5 : 2e-2;
      EXPECT_EQ(out.scalar_type(), dtype);
      EXPECT_LT(relative(out, expected), tol) << dtype << " " << format;
      EXPECT_LT(relative(mine.grad(), reference.grad()), tol) << dtype << " " << format;
      EXPECT_LT(relative(sync->weight.grad(), plain->weight.grad()), tol) << dtype << " " << format;
      EXPECT_LT(relative(sync->running_var, plain->running_var), 1e-5) << dtype << " " << format;
    }
  }
}

}  // namespace

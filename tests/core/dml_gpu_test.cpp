// The loss family on CUDA: the ATen composition used there against the fused CPU kernel, in
// float32 and float64, and the bf16 autocast contract. Skips without a CUDA device.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/losses/distill.h"
#include "core/losses/dml.h"

namespace {
namespace L = kdseg::losses;
using torch::Tensor;

#define KDSEG_REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

TEST(DmlGpu, MatchesCpuLossAndGradient) {
  KDSEG_REQUIRE_CUDA();
  torch::manual_seed(0);
  for (const auto dtype : {torch::kDouble, torch::kFloat}) {
    const Tensor z_cpu = torch::randn({4, 3, 64, 64}, dtype).requires_grad_(true);
    const Tensor y = torch::randint(0, 3, {4, 64, 64}, torch::kLong);
    const Tensor p = torch::softmax(torch::randn({4, 3, 64, 64}, dtype), 1);
    const Tensor z_gpu = z_cpu.detach().cuda().requires_grad_(true);
    const auto options = L::DmlOptions().image_weight(0.5).class_weight(0.25);
    const Tensor cpu = L::dml_loss(z_cpu, y, {}, options) + L::dml_loss(z_cpu, p, {}, options);
    const Tensor gpu = L::dml_loss(z_gpu, y.cuda(), {}, options) + L::dml_loss(z_gpu, p.cuda(), {}, options);
    cpu.backward();
    gpu.backward();
    const double tol = dtype == torch::kDouble ? 1e-12 : 1e-5;
    EXPECT_NEAR(cpu.item<double>(), gpu.item<double>(), tol);
    EXPECT_LT((z_cpu.grad() - z_gpu.grad().cpu()).abs().max().item<double>(), tol * 1e-1 + 1e-9);
  }
}

TEST(DmlGpu, Bf16AutocastComputesTheLossInFloat32) {
  KDSEG_REQUIRE_CUDA();
  torch::manual_seed(1);
  const Tensor z = torch::randn({2, 2, 32, 32}, torch::kCUDA).to(torch::kBFloat16).requires_grad_(true);
  const Tensor y = torch::randint(0, 2, {2, 32, 32}, torch::TensorOptions(torch::kLong).device(torch::kCUDA));
  const Tensor loss = L::SegmentationObjective()({z, Tensor(), y, Tensor(), Tensor()}).total;
  EXPECT_EQ(loss.scalar_type(), torch::kFloat);
  loss.backward();
  EXPECT_TRUE(z.grad().isfinite().all().item<bool>());
}

}  // namespace

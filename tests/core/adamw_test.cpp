// MultiTensorAdamW against LibTorch's AdamW: the same parameters after several steps (bit for
// bit on CPU), with parameter groups, weight decay on some, channels-last weights, and a
// parameter that skips steps; and checkpoints that either optimiser loads.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "core/adamw.h"

namespace {
using torch::Tensor;
namespace O = torch::optim;

struct Params {
  std::vector<Tensor> weights, biases;
  std::vector<Tensor> all() const {
    std::vector<Tensor> out = weights;
    out.insert(out.end(), biases.begin(), biases.end());
    return out;
  }
};

Params make_params() {
  torch::manual_seed(7);
  Params p;
  p.weights = {torch::randn({8, 4, 3, 3}).contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true),
               torch::randn({16, 8}).requires_grad_(true)};
  p.biases = {torch::randn({8}).requires_grad_(true), torch::randn({16}).requires_grad_(true)};
  return p;
}

template <typename Optimizer>
std::unique_ptr<Optimizer> make_optimizer(const Params& p) {
  std::vector<O::OptimizerParamGroup> groups;
  auto decayed = std::make_unique<O::AdamWOptions>(1e-2);
  decayed->weight_decay(0.1);
  groups.emplace_back(p.weights, std::move(decayed));
  auto plain = std::make_unique<O::AdamWOptions>(1e-1);
  plain->weight_decay(0);
  groups.emplace_back(p.biases, std::move(plain));
  return std::make_unique<Optimizer>(groups, O::AdamWOptions(1e-3));
}

// Step s: gradients from a fixed function of the step; the last bias gets none on odd steps.
void set_gradients(const Params& p, int s) {
  torch::manual_seed(100 + s);
  const auto all = p.all();
  for (size_t i = 0; i < all.size(); ++i) {
    Tensor t = all[i];
    if (i + 1 == all.size() && s % 2 == 1) {
      t.mutable_grad() = Tensor();
      continue;
    }
    t.mutable_grad() = torch::randn(t.sizes()).contiguous(t.suggest_memory_format());
  }
}

// Steps [from, to) of two optimisers, each over its own copy of the parameters, same gradients.
void step_both(const Params& a, O::Optimizer& on_a, const Params& b, O::Optimizer& on_b, int from, int to) {
  for (int s = from; s < to; ++s) {
    set_gradients(a, s);
    set_gradients(b, s);
    on_a.step();
    on_b.step();
  }
}

TEST(MultiTensorAdamW, MatchesLibTorchAdamW) {
  const Params a = make_params(), b = make_params();
  auto reference = make_optimizer<O::AdamW>(a);
  auto multi = make_optimizer<kdseg::MultiTensorAdamW>(b);
  step_both(a, *reference, b, *multi, 0, 6);
  const auto pa = a.all(), pb = b.all();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(pa[i].equal(pb[i])) << "parameter " << i << " differs by " << (pa[i] - pb[i]).abs().max().item<double>();
    EXPECT_FALSE(pa[i].equal(make_params().all()[i])) << "parameter " << i << " never moved";
  }
  EXPECT_TRUE(b.weights[0].is_contiguous(at::MemoryFormat::ChannelsLast)) << "updates keep the layout";
}

TEST(MultiTensorAdamW, CheckpointsAreLibTorchAdamWs) {
  const Params a = make_params(), b = make_params();
  auto reference = make_optimizer<O::AdamW>(a);
  auto multi = make_optimizer<kdseg::MultiTensorAdamW>(b);
  step_both(a, *reference, b, *multi, 0, 3);
  // Swap optimisers through their saved state: each continues where the other stopped.
  std::stringstream from_multi, from_reference;
  torch::serialize::OutputArchive out_multi, out_reference;
  multi->save(out_multi);
  reference->save(out_reference);
  out_multi.save_to(from_multi);
  out_reference.save_to(from_reference);
  auto multi_from_reference = make_optimizer<kdseg::MultiTensorAdamW>(a);
  auto reference_from_multi = make_optimizer<O::AdamW>(b);
  torch::serialize::InputArchive in_reference, in_multi;
  in_reference.load_from(from_reference);
  in_multi.load_from(from_multi);
  multi_from_reference->load(in_reference);
  reference_from_multi->load(in_multi);
  step_both(a, *multi_from_reference, b, *reference_from_multi, 3, 6);
  const auto pa = a.all(), pb = b.all();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(pa[i].equal(pb[i])) << "parameter " << i;
}

TEST(MultiTensorAdamW, AmsgradIsRefused) {
  const Params p = make_params();
  auto options = O::AdamWOptions(1e-3);
  options.amsgrad(true);
  kdseg::MultiTensorAdamW optimizer(p.all(), options);
  set_gradients(p, 0);
  EXPECT_THROW(optimizer.step(), c10::Error);
}

}  // namespace

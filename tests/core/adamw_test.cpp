// MultiTensorAdamW against LibTorch's AdamW: the same parameters after several steps (bit for
// bit on CPU), with parameter groups, weight decay on some, channels-last weights, and a
// parameter that skips steps; checkpoints keyed by position (LibTorch's own layout still loads),
// with mismatched groups refused.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "core/adamw.h"
#include "core/error.h"

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
    EXPECT_TRUE(pa[i].equal(pb[i])) << "parameter " << i << " differs by "
                                    << (pa[i] - pb[i]).abs().max().item<double>();
    EXPECT_FALSE(pa[i].equal(make_params().all()[i])) << "parameter " << i << " never moved";
  }
  EXPECT_TRUE(b.weights[0].is_contiguous(at::MemoryFormat::ChannelsLast)) << "updates keep the layout";
}

template <typename Optimizer>
std::stringstream saved(const Optimizer& optimizer) {
  torch::serialize::OutputArchive out;
  optimizer.save(out);
  std::stringstream bytes;
  out.save_to(bytes);
  return bytes;
}

template <typename Optimizer>
void load(Optimizer& optimizer, std::stringstream bytes) {
  torch::serialize::InputArchive in;
  in.load_from(bytes);
  optimizer.load(in);
}

TEST(MultiTensorAdamW, CheckpointsResumeAndLibTorchsLayoutLoads) {
  const Params a = make_params(), b = make_params();
  auto reference = make_optimizer<O::AdamW>(a);
  auto multi = make_optimizer<kdseg::MultiTensorAdamW>(b);
  step_both(a, *reference, b, *multi, 0, 3);
  // New optimisers over the same parameters (other tensor addresses would do as well) continue
  // from the saved states: LibTorch's layout into one, this class's own into the other.
  auto from_reference = make_optimizer<kdseg::MultiTensorAdamW>(a);
  auto from_multi = make_optimizer<kdseg::MultiTensorAdamW>(b);
  load(*from_reference, saved(*reference));
  load(*from_multi, saved(*multi));
  step_both(a, *from_reference, b, *from_multi, 3, 6);
  const auto pa = a.all(), pb = b.all();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(pa[i].equal(pb[i])) << "parameter " << i;
  EXPECT_TRUE(b.weights[0].is_contiguous(at::MemoryFormat::ChannelsLast)) << "updates keep the layout";
}

TEST(MultiTensorAdamW, CheckpointsOfOtherGroupsAreRefused) {
  const Params p = make_params();
  auto multi = make_optimizer<kdseg::MultiTensorAdamW>(p);
  set_gradients(p, 0);
  multi->step();
  kdseg::MultiTensorAdamW one_group(p.all(), O::AdamWOptions(1e-3));
  try {
    load(one_group, saved(*multi));
    ADD_FAILURE() << "loaded two groups into one";
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than 1 parameter groups"), std::string::npos) << e.what();
  }
  Params fewer = make_params();
  fewer.biases.pop_back();
  auto smaller = make_optimizer<kdseg::MultiTensorAdamW>(fewer);
  EXPECT_THROW(load(*smaller, saved(*multi)), kdseg::Error);
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

namespace kdseg {
namespace {

// The same scaling and returned norm as LibTorch's clip_grad_norm_, above and below the limit,
// with a parameter that has no gradient.
TEST(ClipGradNorm, MatchesLibTorch) {
  torch::manual_seed(3);
  for (double max_norm : {0.5, 1e3}) {
    std::vector<at::Tensor> ours, theirs;
    for (const auto& shape : std::vector<std::vector<int64_t>>{{4, 3}, {7}, {2, 2, 5}, {3}}) {
      at::Tensor p = torch::randn(shape, torch::requires_grad());
      at::Tensor q = p.detach().clone().requires_grad_();
      if (shape.size() != 1 || shape[0] != 3) {  // the last one keeps no gradient
        const at::Tensor g = torch::randn(shape);
        p.mutable_grad() = g.clone();
        q.mutable_grad() = g.clone();
      }
      ours.push_back(p);
      theirs.push_back(q);
    }
    const at::Tensor norm = clip_grad_norm(ours, max_norm);
    const double expected = torch::nn::utils::clip_grad_norm_(theirs, max_norm);
    EXPECT_NEAR(norm.item<double>(), expected, 1e-5 * expected) << max_norm;
    for (size_t i = 0; i < ours.size(); ++i) {
      ASSERT_EQ(ours[i].grad().defined(), theirs[i].grad().defined());
      if (ours[i].grad().defined()) {
        EXPECT_TRUE(torch::allclose(ours[i].grad(), theirs[i].grad(), 1e-6, 1e-7)) << i;
      }
    }
    if (max_norm < expected) {
      double clipped = 0;
      for (const auto& p : ours) clipped += p.grad().defined() ? p.grad().pow(2).sum().item<double>() : 0;
      EXPECT_NEAR(std::sqrt(clipped), max_norm, 1e-5);
    }
  }
  EXPECT_EQ(clip_grad_norm({torch::zeros({2}, torch::requires_grad())}, 1.0).item<double>(), 0.0);
  EXPECT_THROW(clip_grad_norm({}, 0.0), Error);
}

}  // namespace
}  // namespace kdseg

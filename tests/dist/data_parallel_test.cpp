// Gradient buckets against per-parameter all-reduce, no_sync accumulation, uneven batches,
// SyncBatchNorm, and the end-to-end equivalence of N ranks with batch B/N and 1 rank with B.
#include <torch/torch.h>

#include "core/losses/distill.h"
#include "core/models/unet.h"
#include "dist/autograd_collectives.h"
#include "dist/data_parallel.h"
#include "dist/sync_batch_norm.h"
#include "tests/dist/mpi_test_main.h"

namespace {
using kdseg::test::all_ranks;
using kdseg::test::world;
using torch::Tensor;
namespace D = kdseg::dist;
namespace L = kdseg::losses;

// A small conv net: conv-SyncBN-ReLU x2 and a 1x1 head, 3 classes.
struct NetImpl : torch::nn::Module {
  NetImpl(D::Communicator* comm, int64_t width = 8)
      : conv1(
            register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, width, 3).padding(1).bias(false)))),
        bn1(register_module("bn1", D::SyncBatchNorm2d(width, comm))),
        conv2(register_module("conv2",
                              torch::nn::Conv2d(torch::nn::Conv2dOptions(width, width, 3).padding(1).bias(false)))),
        bn2(register_module("bn2", D::SyncBatchNorm2d(width, comm))),
        head(register_module("head", torch::nn::Conv2d(torch::nn::Conv2dOptions(width, 3, 1)))) {}
  Tensor forward(const Tensor& x) {
    Tensor h = torch::relu(bn1(conv1(x)));
    h = torch::relu(bn2(conv2(h)));
    return head(h);
  }
  torch::nn::Conv2d conv1;
  D::SyncBatchNorm2d bn1;
  torch::nn::Conv2d conv2;
  D::SyncBatchNorm2d bn2;
  torch::nn::Conv2d head;
};
TORCH_MODULE(Net);
// Net(nullptr) would be an empty module holder: pass a typed null communicator.
D::Communicator* const kNoComm = nullptr;

struct Batch {
  Tensor images, labels;
};
constexpr int64_t kIgnored = 7;
// The same global batch on every rank. Sample i ignores its first i rows, so ranks keep
// different numbers of pixels.
Batch global_batch(int64_t size, uint64_t seed) {
  torch::manual_seed(seed);
  Tensor images = torch::randn({size, 1, 12, 12});
  Tensor labels = (images.squeeze(1) > 0.5).to(torch::kLong) + (images.squeeze(1) > 1.2).to(torch::kLong);
  for (int64_t i = 0; i < size; ++i) labels[i].narrow(0, 0, i % 12).fill_(kIgnored);
  return {images, labels};
}

std::vector<Tensor> grads_of(Net& net) {
  std::vector<Tensor> out;
  for (const auto& p : net->parameters()) out.push_back(p.grad().clone());
  return out;
}

TEST(DataParallel, BucketsGiveThePerParameterAllReduce) {
  const int r = world().rank();
  Net reference(kNoComm), bucketed(kNoComm);
  torch::manual_seed(1);
  Net init(kNoComm);
  torch::NoGradGuard g;
  for (auto* net : {&reference, &bucketed}) {
    auto src = init->parameters();
    auto dst = (*net)->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  torch::manual_seed(100 + r);  // different data on each rank
  const Tensor x = torch::randn({2, 1, 12, 12});
  {
    torch::AutoGradMode enable(true);
    reference(x).pow(2).mean().backward();
    for (auto& p : reference->parameters()) {
      Tensor grad = p.grad();
      world().all_reduce(grad, D::ReduceOp::kAverage);
    }
    // Tiny buckets: many of them, reduced while backward runs.
    D::DataParallel ddp(bucketed.ptr(), world(), D::DataParallelOptions{256, 1024, true});
    EXPECT_EQ(ddp.bucket_count(), 3u);  // head+bn2 | conv2 | bn1+conv1
    bucketed(x).pow(2).mean().backward();
    ddp.synchronize_gradients();
  }
  const auto a = grads_of(reference), b = grads_of(bucketed);
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  // Same sums, possibly in another order inside MPI: float32 rounding only.
  EXPECT_TRUE(all_ranks(worst < 1e-6)) << "rank " << r << " max difference " << worst;
}

TEST(DataParallel, NoSyncAccumulatesThenReducesTheSum) {
  const int r = world().rank();
  torch::manual_seed(2);
  Net net(kNoComm);
  torch::manual_seed(2);
  Net plain(kNoComm);
  D::DataParallel ddp(net.ptr(), world(), D::DataParallelOptions{512, 2048, true});
  torch::manual_seed(200 + r);
  const Tensor x1 = torch::randn({2, 1, 12, 12}), x2 = torch::randn({2, 1, 12, 12});
  {
    auto guard = ddp.no_sync();
    net(x1).pow(2).mean().backward();
    ddp.synchronize_gradients();  // a no-op under no_sync
  }
  net(x2).pow(2).mean().backward();
  ddp.synchronize_gradients();
  // Reference: the local sum of both micro-batches' gradients, averaged over ranks.
  plain(x1).pow(2).mean().backward();
  plain(x2).pow(2).mean().backward();
  const auto reduced = grads_of(net);
  double worst = 0;
  auto params = plain->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor local = params[i].grad().clone();
    world().all_reduce(local, D::ReduceOp::kAverage);
    worst = std::max(worst, (local - reduced[i]).abs().max().item<double>());
  }
  EXPECT_TRUE(all_ranks(worst < 1e-6)) << "max difference " << worst;
}

// Training on CUDA keeps convolution weights channels-last: they are broadcast, and their
// gradients go through the buckets, in logical order, so the result is the per-parameter
// all-reduce of a contiguous copy.
TEST(DataParallel, ChannelsLastParametersReduceLikeContiguousOnes) {
  const int r = world().rank();
  torch::manual_seed(4);
  Net contiguous(kNoComm);
  torch::manual_seed(4 + r);  // DataParallel broadcasts rank 0's (channels-last) weights
  Net channels_last(kNoComm);
  kdseg::models::use_channels_last(*channels_last);
  ASSERT_FALSE(channels_last->conv2->weight.is_contiguous());
  D::DataParallel ddp(channels_last.ptr(), world(), D::DataParallelOptions{512, 2048, true});
  torch::manual_seed(400 + r);
  const Tensor x = torch::randn({2, 1, 12, 12});
  channels_last(x.contiguous(at::MemoryFormat::ChannelsLast)).pow(2).mean().backward();
  ddp.synchronize_gradients();
  contiguous(x).pow(2).mean().backward();
  const auto reduced = grads_of(channels_last);
  auto params = contiguous->parameters();
  double worst = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor local = params[i].grad().clone();
    world().all_reduce(local, D::ReduceOp::kAverage);
    worst = std::max(worst, (local - reduced[i]).abs().max().item<double>());
  }
  EXPECT_TRUE(all_ranks(worst < 1e-5)) << "rank " << r << " max difference " << worst;
}

TEST(DataParallel, UnevenBatchCountsStopTogether) {
  const int r = world().rank();
  torch::manual_seed(3);
  Net net(kNoComm);
  D::DataParallel ddp(net.ptr(), world());
  const int my_batches = 2 + r;  // rank 0: 2, rank 1: 3, ...
  int steps = 0;
  while (ddp.all_ranks_have_batch(steps < my_batches)) {
    net(torch::randn({2, 1, 12, 12})).mean().backward();
    ddp.synchronize_gradients();
    ++steps;
  }
  EXPECT_TRUE(all_ranks(steps == 2));
}

TEST(DataParallel, HooksGoAwayWithTheObjectAndNoSyncNests) {
  torch::manual_seed(6);
  Net net(kNoComm);
  {
    D::DataParallel ddp(net.ptr(), world(), D::DataParallelOptions{512, 2048, true});
    auto outer = ddp.no_sync();
    { auto inner = ddp.no_sync(); }
    net(torch::randn({2, 1, 12, 12})).mean().backward();  // still under the outer guard: local only
    ddp.synchronize_gradients();                          // a no-op
  }
  // After the DataParallel is gone, backward is plain local autograd (no hook, no collective).
  net->zero_grad();
  net(torch::randn({2, 1, 12, 12})).mean().backward();
  EXPECT_TRUE(all_ranks(net->conv1->weight.grad().defined()));
}

TEST(SyncBatchNorm, MatchesBatchNorm2dOnOneProcess) {
  torch::manual_seed(4);
  const Tensor x = torch::randn({4, 5, 6, 6}) * 3 + 1;
  D::SyncBatchNorm2d sync(5, nullptr);
  torch::nn::BatchNorm2d plain(5);
  const Tensor a = sync(x), b = plain(x);
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-5);
  EXPECT_LT((sync->running_var - plain->running_var).abs().max().item<double>(), 1e-6);
  sync->eval();
  plain->eval();
  EXPECT_LT((sync(x) - plain(x)).abs().max().item<double>(), 1e-5);
  // Without momentum: the cumulative average of BatchNorm2d.
  D::SyncBatchNorm2d cumulative(torch::nn::BatchNormOptions(5).momentum({}), nullptr);
  torch::nn::BatchNorm2d reference(torch::nn::BatchNormOptions(5).momentum({}));
  for (int i = 0; i < 3; ++i) {
    const at::Tensor batch = torch::randn({4, 5, 6, 6}) * (i + 1);
    cumulative(batch);
    reference(batch);
  }
  EXPECT_LT((cumulative->running_var - reference->running_var).abs().max().item<double>(), 1e-5);
  EXPECT_LT((cumulative->running_mean - reference->running_mean).abs().max().item<double>(), 1e-5);
}

// N ranks with per-rank batch B/N follow 1 rank with batch B: SyncBatchNorm, CE and
// global-batch DML, bucketed gradients, 5 SGD steps.
// The gradients too: each rank normalises its share of a global batch with the global
// statistics, and gets the share of BatchNorm2d's input gradient on the whole batch; weight and
// bias gradients summed over ranks are BatchNorm2d's. Contiguous and channels-last, with and
// without affine parameters.
TEST(SyncBatchNorm, GradientsAreThoseOfTheWholeBatch) {
  const int r = world().rank(), n = world().size();
  for (const bool channels_last : {false, true}) {
    for (const bool affine : {true, false}) {
      const auto options = torch::nn::BatchNormOptions(5).affine(affine);
      torch::manual_seed(9);
      D::SyncBatchNorm2d sync(options, &world());
      torch::nn::BatchNorm2d plain(options);
      if (affine) {
        torch::NoGradGuard g;
        const Tensor w = torch::rand({5}) + 0.5, b = torch::randn({5});
        sync->weight.copy_(w);
        sync->bias.copy_(b);
        plain->weight.copy_(w);
        plain->bias.copy_(b);
      }
      const Tensor whole = torch::randn({2 * n, 5, 6, 6}) * 3 + 1, upstream = torch::randn({2 * n, 5, 6, 6});
      const auto layout = [&](const Tensor& t) {
        return channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
      };
      const Tensor mine = layout(whole.narrow(0, 2 * r, 2)).requires_grad_(true);
      const Tensor all = layout(whole).requires_grad_(true);
      const Tensor out_mine = sync(mine), out_all = plain(all);
      out_mine.backward(upstream.narrow(0, 2 * r, 2));
      out_all.backward(upstream);
      const double out_error = (out_mine - out_all.narrow(0, 2 * r, 2)).abs().max().item<double>();
      const double grad_error = (mine.grad() - all.grad().narrow(0, 2 * r, 2)).abs().max().item<double>();
      double param_error = 0;
      if (affine) {
        Tensor gw = sync->weight.grad().clone(), gb = sync->bias.grad().clone();
        world().all_reduce(gw, D::ReduceOp::kSum);
        world().all_reduce(gb, D::ReduceOp::kSum);
        param_error = std::max((gw - plain->weight.grad()).abs().max().item<double>(),
                               (gb - plain->bias.grad()).abs().max().item<double>());
      }
      EXPECT_TRUE(all_ranks(out_error < 1e-5 && grad_error < 1e-5 && param_error < 1e-4))
          << "channels_last " << channels_last << " affine " << affine << ": output " << out_error << ", input grad "
          << grad_error << ", parameter grads " << param_error;
    }
  }
}

TEST(DataParallel, NRanksWithBatchBOverNFollowOneRankWithBatchB) {
  const int r = world().rank(), n = world().size();
  const int64_t per_rank = 2, global = per_rank * n;
  const auto dml = L::DmlOptions();
  const auto train = [&](D::Communicator* comm, int64_t offset, int64_t count) {
    torch::manual_seed(5);
    Net net(comm);
    std::unique_ptr<D::DataParallel> ddp;
    if (comm) ddp = std::make_unique<D::DataParallel>(net.ptr(), *comm, D::DataParallelOptions{1024, 4096, true});
    torch::optim::SGD sgd(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
    const L::SegmentationObjective objective(L::ObjectiveWeights(), dml, kIgnored,
                                             comm ? D::global_batch(*comm, dml) : L::GlobalBatch());
    for (int step = 0; step < 5; ++step) {
      const Batch batch = global_batch(global, 50 + step);
      sgd.zero_grad();
      const Tensor logits = net(batch.images.narrow(0, offset, count));
      objective({logits, Tensor(), batch.labels.narrow(0, offset, count), Tensor(), Tensor()}).total.backward();
      if (ddp) ddp->synchronize_gradients();
      sgd.step();
    }
    std::vector<Tensor> state;
    for (const auto& p : net->parameters()) state.push_back(p.detach().clone());
    for (const auto& b : net->buffers()) state.push_back(b.detach().clone().to(torch::kDouble));
    return state;
  };
  const auto single = train(nullptr, 0, global);
  const auto parallel = train(&world(), r * per_rank, per_rank);
  double worst = 0;
  for (size_t i = 0; i < single.size(); ++i) {
    const double scale = std::max(1.0, single[i].abs().max().item<double>());
    worst = std::max(
        worst, (single[i].to(torch::kDouble) - parallel[i].to(torch::kDouble)).abs().max().item<double>() / scale);
  }
  // float32 reductions in another order over 5 steps of momentum SGD: a few 1e-6 relative.
  EXPECT_TRUE(all_ranks(worst < 2e-5)) << "rank " << r << " max relative difference " << worst;
}

}  // namespace

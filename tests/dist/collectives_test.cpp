// The MPI communicator's collectives against hand-computed values, the autograd-aware
// collectives, and the global-batch DML reducer.
#include <torch/torch.h>

#include "core/error.h"
#include "core/losses/dml.h"
#include "dist/autograd_collectives.h"
#include "dist/backends.h"
#include "tests/dist/mpi_test_main.h"

namespace {
using kdseg::test::all_ranks;
using kdseg::test::world;
using torch::Tensor;
namespace D = kdseg::dist;

TEST(Collectives, AllReduceEveryOpAndDtype) {
  const int r = world().rank(), n = world().size();
  for (const auto dtype : {torch::kFloat, torch::kDouble, torch::kLong, torch::kInt}) {
    // Rank r holds [r+1, 10*(r+1), -(r+1)].
    const Tensor mine = torch::tensor({1.0, 10.0, -1.0}, torch::kDouble).mul(r + 1).to(dtype);
    Tensor sum = mine.clone(), max = mine.clone(), min = mine.clone();
    world().all_reduce(sum, D::ReduceOp::kSum);
    world().all_reduce(max, D::ReduceOp::kMax);
    world().all_reduce(min, D::ReduceOp::kMin);
    const double s = n * (n + 1) / 2.0;
    EXPECT_TRUE(sum.to(torch::kDouble).equal(torch::tensor({s, 10 * s, -s}, torch::kDouble))) << dtype;
    EXPECT_TRUE(max.to(torch::kDouble).equal(torch::tensor({1.0 * n, 10.0 * n, -1.0}, torch::kDouble))) << dtype;
    EXPECT_TRUE(min.to(torch::kDouble).equal(torch::tensor({1.0, 10.0, -1.0 * n}, torch::kDouble))) << dtype;
  }
  Tensor avg = torch::full({4}, static_cast<double>(r), torch::kDouble);
  world().all_reduce(avg, D::ReduceOp::kAverage);
  EXPECT_TRUE(avg.equal(torch::full({4}, (n - 1) / 2.0, torch::kDouble)));
}

TEST(Collectives, BroadcastGatherBarrier) {
  const int r = world().rank(), n = world().size();
  Tensor b = torch::full({2, 3}, static_cast<float>(r));
  world().broadcast(b, n - 1);
  EXPECT_TRUE(b.equal(torch::full({2, 3}, static_cast<float>(n - 1))));
  const Tensor gathered = world().all_gather(torch::full({2, 2}, static_cast<float>(r)));
  ASSERT_EQ(gathered.sizes(), (std::vector<int64_t>{2 * n, 2}));
  for (int k = 0; k < n; ++k) EXPECT_TRUE(gathered.narrow(0, 2 * k, 2).eq(k).all().item<bool>());
  world().barrier();
  EXPECT_GE(world().local_rank(), 0);
  EXPECT_EQ(world().local_size(), n);  // one node
}

// Tensors beyond what one MPI call counts (int) go in pieces: with 7-element pieces, 100 elements
// take 15 calls, the last one short, and every element arrives.
TEST(Collectives, LargeTensorsGoInPieces) {
  const int64_t before = D::detail::set_mpi_piece_elements(7);
  const int r = world().rank(), n = world().size();
  Tensor sum = torch::arange(100, torch::kLong) * (r + 1);
  world().all_reduce(sum, D::ReduceOp::kSum);
  Tensor sent = r == 0 ? torch::arange(100, torch::kByte) : torch::zeros({100}, torch::kByte);
  world().broadcast(sent, 0);
  Tensor empty = torch::zeros({0});
  world().all_reduce(empty, D::ReduceOp::kSum);
  D::detail::set_mpi_piece_elements(before);
  const bool ok =
      sum.equal(torch::arange(100, torch::kLong) * (n * (n + 1) / 2)) && sent.equal(torch::arange(100, torch::kByte));
  EXPECT_TRUE(all_ranks(ok));
}

TEST(Collectives, HostTensorsReduceOverTheCommunicatorsDevice) {
  const int r = world().rank(), n = world().size();
  EXPECT_TRUE(world().device().is_cpu());
  Tensor counts = torch::tensor({static_cast<double>(r), 1.0}, torch::kDouble);
  D::all_reduce_any_device(world(), counts, D::ReduceOp::kSum);
  EXPECT_TRUE(counts.equal(torch::tensor({n * (n - 1) / 2.0, static_cast<double>(n)}, torch::kDouble)));
}

TEST(Collectives, ErrorsNameTheProblem) {
  Tensor strided = torch::zeros({4, 4}).t();
  std::string what;
  try {
    world().all_reduce(strided, D::ReduceOp::kSum);
  } catch (const kdseg::Error& e) {
    what = e.what();
  }
  EXPECT_TRUE(all_ranks(what.find("contiguous") != std::string::npos)) << what;
  EXPECT_THROW(kdseg::parse_enum<D::Backend>("--backend", "gloo"), kdseg::Error);
}

TEST(AutogradCollectives, SumAndGatherGradientsSumOverRanks) {
  const int r = world().rank(), n = world().size();
  const Tensor x = torch::full({3}, static_cast<double>(r + 1), torch::kDouble).requires_grad_(true);
  const Tensor total = D::all_reduce_sum_with_grad(x, world());
  // Every rank's loss is sum(total * w) with w = [1,2,3]: d(sum over ranks)/dx = n * w.
  (total * torch::tensor({1.0, 2.0, 3.0}, torch::kDouble)).sum().backward();
  EXPECT_TRUE(x.grad().equal(torch::tensor({1.0, 2.0, 3.0}, torch::kDouble) * n));

  const Tensor y = torch::full({2, 1}, static_cast<double>(r), torch::kDouble).requires_grad_(true);
  const Tensor all = D::all_gather_with_grad(y, world());
  ASSERT_EQ(all.size(0), 2 * n);
  (all.squeeze(1) * torch::arange(2 * n, torch::kDouble)).sum().backward();
  // Row k of the gathered tensor is weighted k on every rank: the sum over ranks is n * k.
  EXPECT_TRUE(y.grad().squeeze(1).equal(torch::arange(2 * r, 2 * r + 2, torch::kDouble) * n));
}

// N ranks with per-rank batch B/N and the reducer give the loss of the whole batch B on one
// process, and (after the data-parallel average) its gradient.
TEST(GlobalBatchDml, LossAndGradientEqualTheWholeBatch) {
  const int r = world().rank(), n = world().size();
  const int64_t per_rank = 2;
  torch::manual_seed(7);  // same global batch on every rank
  const Tensor logits = torch::randn({per_rank * n, 3, 6, 6}, torch::kDouble);
  const Tensor labels = torch::randint(0, 3, {per_rank * n, 6, 6}, torch::kLong);
  for (const auto& options : {kdseg::losses::DmlOptions(),
                              kdseg::losses::DmlOptions().dataset_weight(0.5).image_weight(0.3).class_weight(0.2)}) {
    const Tensor whole_z = logits.clone().requires_grad_(true);
    const Tensor whole = kdseg::losses::dml_loss(whole_z, labels, {}, options);
    whole.backward();

    const Tensor local_z = logits.narrow(0, r * per_rank, per_rank).clone().requires_grad_(true);
    const auto reducer = D::global_batch_dml_reducer(world(), options);
    const Tensor global =
        kdseg::losses::dml_loss(local_z, labels.narrow(0, r * per_rank, per_rank), {}, options, reducer);
    global.backward();
    // Each rank holds N * dL/dz for its slice: the sum over ranks' identical losses. The
    // data-parallel average of parameter gradients (1/N) then yields exactly dL/dtheta.
    const Tensor expected = whole_z.grad().narrow(0, r * per_rank, per_rank);
    const bool loss_ok = std::abs(global.item<double>() - whole.item<double>()) < 1e-12;
    const bool grad_ok = (local_z.grad() / n - expected).abs().max().item<double>() < 1e-12;
    EXPECT_TRUE(all_ranks(loss_ok && grad_ok))
        << "rank " << r << ": loss " << global.item<double>() << " vs " << whole.item<double>();
  }
}

}  // namespace

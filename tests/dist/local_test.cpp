// The local backend (world size 1) and backend selection, in a plain process.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/build_config.h"
#include "core/error.h"
#include "dist/autograd_collectives.h"
#include "dist/communicator.h"

namespace {
namespace D = kdseg::dist;

TEST(LocalCommunicator, CollectivesAreTheIdentity) {
  D::CommunicatorOptions options;
  options.backend = D::Backend::kLocal;
  auto comm = D::make_communicator(options);
  EXPECT_EQ(comm->size(), 1);
  EXPECT_EQ(comm->rank(), 0);
  at::Tensor t = torch::arange(6, torch::kFloat);
  for (const auto op : {D::ReduceOp::kSum, D::ReduceOp::kAverage, D::ReduceOp::kMax, D::ReduceOp::kMin}) {
    comm->all_reduce(t, op);
    EXPECT_TRUE(t.equal(torch::arange(6, torch::kFloat)));
  }
  comm->broadcast(t, 0);
  EXPECT_TRUE(comm->all_gather(t).equal(t));
  EXPECT_THROW(comm->broadcast(t, 1), kdseg::Error);
  comm->barrier();
  // The autograd collectives reduce to the identity too.
  const at::Tensor x = torch::ones({3}, torch::requires_grad());
  D::all_reduce_sum_with_grad(x, *comm).sum().backward();
  EXPECT_TRUE(x.grad().equal(torch::ones({3})));
}

TEST(Backend, AutoWithoutLauncherIsLocalAndNamesAreParsed) {
  if (D::launched_by_launcher()) GTEST_SKIP() << "started by a launcher";
  auto comm = D::make_communicator({});
  EXPECT_EQ(comm->backend(), D::Backend::kLocal);
  EXPECT_EQ(kdseg::parse_enum<D::Backend>("--backend", "nccl"), D::Backend::kNccl);
  EXPECT_STREQ(kdseg::enum_name(D::Backend::kMpi), "mpi");
  try {
    kdseg::parse_enum<D::Backend>("--backend", "gloo");
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--backend: 'gloo' is not one of auto, local, mpi, nccl"), std::string::npos);
  }
}

TEST(Backend, NcclOnCpuOrWithoutNcclNamesTheFix) {
  D::CommunicatorOptions options;
  options.backend = D::Backend::kNccl;
  options.cuda = false;
  try {
    D::make_communicator(options);
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("--device cuda"), std::string::npos) << e.what();
  }
  if (!KDSEG_HAVE_NCCL) {
    options.cuda = true;
    try {
      D::make_communicator(options);
      FAIL();
    } catch (const kdseg::Error& e) {
      EXPECT_NE(std::string(e.what()).find("-DKDSEG_WITH_NCCL=ON"), std::string::npos) << e.what();
    }
  }
}

// One GPU per node-local rank when the node's ranks share the visible GPUs; GPU 0 when each
// rank sees only its own; a clear error when GPUs are missing.
TEST(Device, EachRankFindsItsGpu) {
  EXPECT_EQ(D::node_local_gpu(0, 1, 1), 0);
  EXPECT_EQ(D::node_local_gpu(3, 4, 1), 0) << "a launcher that gives each rank its own GPU";
  EXPECT_EQ(D::node_local_gpu(3, 4, 4), 3);
  EXPECT_EQ(D::node_local_gpu(1, 2, 8), 1);
  const auto message = [](int local_rank, int local_size, int visible) {
    try {
      D::node_local_gpu(local_rank, local_size, visible);
    } catch (const kdseg::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(2, 4, 2).find("4 ranks on this node but 2 visible GPUs"), std::string::npos) << message(2, 4, 2);
  EXPECT_NE(message(0, 1, 0).find("sees no CUDA device"), std::string::npos) << message(0, 1, 0);
  if (!torch::cuda::is_available()) {
    const auto comm = D::make_communicator();
    EXPECT_THROW(D::rank_cuda_device(*comm), kdseg::Error);
  }
}

}  // namespace

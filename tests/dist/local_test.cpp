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
  EXPECT_EQ(D::parse_backend("nccl"), D::Backend::kNccl);
  EXPECT_EQ(D::backend_name(D::Backend::kMpi), "mpi");
  try {
    D::parse_backend("gloo");
    FAIL();
  } catch (const kdseg::Error& e) {
    EXPECT_NE(std::string(e.what()).find("use auto, local, mpi or nccl"), std::string::npos);
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

}  // namespace

// The NCCL backend at world size 1 on a GPU, its results compared with the MPI backend's on
// the same data. Skips without a CUDA device; built only with NCCL.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "dist/communicator.h"
#include "dist/data_parallel.h"

namespace {
namespace D = kdseg::dist;

TEST(NcclCommunicator, MatchesTheMpiBackendAtWorldSizeOne) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  D::CommunicatorOptions nccl_options;
  nccl_options.backend = D::Backend::kNccl;
  nccl_options.cuda = true;
  auto nccl = D::make_communicator(nccl_options);
  D::CommunicatorOptions mpi_options;
  mpi_options.backend = D::Backend::kMpi;
  auto mpi = D::make_communicator(mpi_options);
  torch::manual_seed(0);
  const at::Tensor data = torch::randn({1 << 20});
  for (const auto op : {D::ReduceOp::kSum, D::ReduceOp::kAverage, D::ReduceOp::kMax, D::ReduceOp::kMin}) {
    at::Tensor on_gpu = data.cuda(), on_cpu = data.clone();
    nccl->all_reduce(on_gpu, op);
    mpi->all_reduce(on_cpu, op);
    EXPECT_TRUE(on_gpu.cpu().equal(on_cpu));
  }
  at::Tensor b = data.cuda();
  nccl->broadcast(b, 0);
  EXPECT_TRUE(b.cpu().equal(data));
  EXPECT_TRUE(nccl->all_gather(data.cuda()).cpu().equal(mpi->all_gather(data)));
  nccl->barrier();
  EXPECT_TRUE(nccl->device().is_cuda());
  at::Tensor host = data.clone();  // metric sums and flags stay on the host: staged through the GPU
  D::all_reduce_any_device(*nccl, host, D::ReduceOp::kMax);
  EXPECT_TRUE(host.device().is_cpu() && host.equal(data));
  auto second = nccl->duplicate();
  at::Tensor d = data.cuda();
  second->all_reduce(d, D::ReduceOp::kSum);
  EXPECT_TRUE(d.cpu().equal(data));
}

TEST(NcclCommunicator, DataParallelStepOnTheGpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  D::CommunicatorOptions options;
  options.backend = D::Backend::kNccl;
  options.cuda = true;
  auto comm = D::make_communicator(options);
  auto net = std::make_shared<torch::nn::LinearImpl>(64, 8);
  net->to(torch::kCUDA);
  D::DataParallel ddp(net, *comm);
  net->forward(torch::randn({4, 64}, torch::kCUDA)).pow(2).mean().backward();
  const at::Tensor before = net->weight.grad().clone();
  ddp.synchronize_gradients();
  EXPECT_TRUE(net->weight.grad().equal(before)) << "averaging over one rank changes nothing";
}

}  // namespace

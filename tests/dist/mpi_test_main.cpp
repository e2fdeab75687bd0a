#include "tests/dist/mpi_test_main.h"

#include <torch/torch.h>

#include <cstring>

namespace kdseg::test {
namespace {
std::unique_ptr<dist::Communicator> g_world;
}

dist::Communicator& world() { return *g_world; }

bool all_ranks(bool ok) {
  at::Tensor flag = torch::full({1}, ok ? 1 : 0, torch::kInt);
  g_world->all_reduce(flag, dist::ReduceOp::kMin);
  return flag.item<int>() == 1;
}

std::string shared_folder(std::unique_ptr<TempDir>& owner) {
  std::string path;
  if (g_world->rank() == 0) {
    owner = std::make_unique<TempDir>();
    path = owner->path();
  }
  at::Tensor bytes = torch::zeros({512}, torch::kByte);
  if (g_world->rank() == 0) std::memcpy(bytes.data_ptr(), path.data(), path.size());
  g_world->broadcast(bytes, 0);
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr()));
}

}  // namespace kdseg::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  torch::set_num_threads(1);  // ranks share the two cores
  kdseg::dist::CommunicatorOptions options;
  options.backend = kdseg::dist::Backend::kMpi;
  options.collective_timeout = std::chrono::seconds(120);
  kdseg::test::g_world = kdseg::dist::make_communicator(options);
  if (kdseg::test::g_world->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  at::Tensor worst = torch::full({1}, failed, torch::kInt);
  kdseg::test::g_world->all_reduce(worst, kdseg::dist::ReduceOp::kMax);
  kdseg::test::g_world.reset();
  return worst.item<int>();
}

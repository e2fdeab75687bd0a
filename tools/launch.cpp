#include "tools/launch.h"

#include <torch/torch.h>

#include <sstream>

#include "core/cpu_cores.h"
#include "core/log.h"

namespace kdseg::tools {
namespace po = boost::program_options;

int run_distributed(const po::variables_map& vm, bool cuda, const std::function<int(dist::Communicator&)>& body) {
  dist::CommunicatorOptions options;
  options.backend = dist::parse_backend(vm["backend"].as<std::string>());
  options.cuda = cuda;
  options.collective_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(vm["collective-timeout"].as<double>() * 1000));
  auto comm = dist::make_communicator(options);
  const int threads = vm["threads"].as<int>();
  torch::set_num_threads(threads > 0 ? threads : default_threads(comm->local_size()));
  log::init(comm->rank(), comm->size(), log::parse_level(vm["log-level"].as<std::string>()));
  return dist::run_or_abort(*comm, [&] { return body(*comm); });
}

std::vector<int> parse_folds(const std::string& text) {
  std::vector<int> folds;
  if (text.empty() || text == "all") return folds;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      folds.push_back(std::stoi(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw po::error("--folds: '" + item + "' is not a fold number (expected e.g. 0,2,3 or all)");
    }
  }
  return folds;
}

}  // namespace kdseg::tools

#include "tools/launch.h"

#include <ATen/Parallel.h>

#include <limits>
#include <optional>
#include <sstream>

#include "core/cpu_cores.h"
#include "core/log.h"
#include "core/parse.h"

namespace kdseg::tools {
namespace po = boost::program_options;

int run_distributed(const po::variables_map& vm, bool cuda, const std::function<int(dist::Communicator&)>& body) {
  dist::CommunicatorOptions options;
  options.backend = vm["backend"].as<dist::Backend>();  // parsed by run_command
  options.cuda = cuda;
  options.collective_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(vm["collective-timeout"].as<double>() * 1000));
  auto comm = dist::make_communicator(options);
  const int threads = vm["threads"].as<int>();
  at::set_num_threads(threads > 0 ? threads : default_threads(comm->local_size()));
  log::init(comm->rank(), comm->size(), vm["log-level"].as<log::Level>());
  return dist::run_or_abort(*comm, [&] { return body(*comm); });
}

std::string config_origin(const po::variables_map& vm, const std::string& name) {
  const auto origin = vm.find(config_line_key(name));
  return origin == vm.end() ? std::string() : origin->second.as<std::string>() + ": ";
}

data::TaskSpec parse_task_option(const po::variables_map& vm) {
  try {
    return data::parse_task(vm["task"].as<std::string>());
  } catch (const Error& e) {
    throw po::error(config_origin(vm, "task") + e.message());
  }
}

std::vector<int> parse_folds(const std::string& text) {
  std::vector<int> folds;
  if (text == "all") return folds;
  if (text.empty()) throw po::error("--folds is empty: give fold numbers (e.g. 0,2,3) or all");
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const std::optional<int64_t> fold = parse_integer(item);
    if (!fold || *fold < std::numeric_limits<int>::min() || *fold > std::numeric_limits<int>::max()) {
      throw po::error("--folds: '" + item + "' is not a fold number (expected e.g. 0,2,3 or all)");
    }
    folds.push_back(static_cast<int>(*fold));
  }
  return folds;
}

}  // namespace kdseg::tools

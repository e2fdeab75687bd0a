// What every multi-process subcommand does before its work: the communicator for this process
// (from --backend and --collective-timeout), LibTorch's thread count (--threads, or the cores
// available to this process: its own when the launcher bound it, else a share among this
// node's ranks), rank-aware logging, and aborting the whole job on an error.
#pragma once

#include <boost/program_options.hpp>

#include <c10/core/Device.h>

#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "dist/communicator.h"

namespace kdseg::tools {

int run_distributed(const boost::program_options::variables_map& vm, bool cuda,
                    const std::function<int(dist::Communicator&)>& body);

// Option `name` through its parser (parse_device_type, student::parse_loss_kind, ...): a value
// the parser refuses (kdseg::Error) is a usage error that names it.
template <typename Parse>
auto parse_option(const boost::program_options::variables_map& vm, const char* name, Parse parse) {
  try {
    return parse(vm[name].template as<std::string>());
  } catch (const Error& e) {
    throw boost::program_options::error(e.message());
  }
}

// Parses "0,2,3" into fold numbers; "all" is every fold (an empty list); "" is a usage error.
std::vector<int> parse_folds(const std::string& text);

}  // namespace kdseg::tools

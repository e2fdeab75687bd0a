// What every multi-process subcommand does before its work: the communicator for this process
// (from --backend and --collective-timeout), LibTorch's thread count (--threads, or the cores
// available to this process: its own when the launcher bound it, else a share among this
// node's ranks), rank-aware logging, and aborting the whole job on an error.
#pragma once

#include <boost/program_options.hpp>

#include <c10/core/Device.h>

#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/enum_names.h"
#include "core/error.h"
#include "data/task.h"
#include "dist/communicator.h"

namespace kdseg::tools {

int run_distributed(const boost::program_options::variables_map& vm, bool cuda,
                    const std::function<int(dist::Communicator&)>& body);

// Where the variables map keeps "FILE:LINE" of a value that a --config file gave (tools/cli.cpp
// records it; the space keeps it apart from every option's name), so that a value checked after
// parsing is named by its line like the parser's own errors.
inline std::string config_line_key(const std::string& name) { return "config line of " + name; }

// "FILE:LINE: " when the value of option `name` came from a --config file, else "".
std::string config_origin(const boost::program_options::variables_map& vm, const std::string& name);

// The enumerated option `name` (its names in core/enum_names.h), one of `only` when given: a
// name it does not know is a usage error, "--name: 'x' is not one of a, b, c", after the file and
// line of a --config file that gave it.
template <typename E>
E parse_option(const boost::program_options::variables_map& vm, const char* name, std::initializer_list<E> only = {}) {
  try {
    return parse_enum<E>(std::string("--") + name, vm[name].as<std::string>(), only);
  } catch (const Error& e) {
    throw boost::program_options::error(config_origin(vm, name) + e.message());
  }
}

// --task (data::parse_task) as the enumerated options are: a usage error names what it takes.
data::TaskSpec parse_task_option(const boost::program_options::variables_map& vm);

// Parses "0,2,3" into fold numbers; "all" is every fold (an empty list); "" is a usage error.
std::vector<int> parse_folds(const std::string& text);

}  // namespace kdseg::tools

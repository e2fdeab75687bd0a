// The `kdseg` command line: subcommand dispatch, shared options, configuration files.
//
// Command line first, then an optional INI file (`--config FILE`), so the command line wins.
// Exit codes: 0 success, 1 runtime error, 2 usage error (unknown command or option, bad value),
// 3 a subcommand that this build does not provide yet.
#pragma once

#include <boost/program_options.hpp>

#include <functional>
#include <string>
#include <vector>

namespace kdseg::tools {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
// Stopped by a signal at a safe point with its state saved (core/stop_request.h): run the same
// command again with --resume (train, distill) or as it was (precompute) to continue. 75 is
// EX_TEMPFAIL, "try again later".
inline constexpr int kExitStopped = 75;

struct Command {
  std::string name;
  std::string summary;
  // Adds the command's own options; the shared ones (--help, --config, --log-level,
  // --threads) are added by the dispatcher.
  std::function<void(boost::program_options::options_description&)> add_options;
  // Runs with the parsed options.
  std::function<int(const boost::program_options::variables_map&)> run;
};

// Every subcommand, in the order `kdseg --help` lists them.
const std::vector<Command>& commands();

// Parses argv, dispatches, and turns exceptions into messages and exit codes.
int run(int argc, const char* const* argv);

// The text of `kdseg --version`.
std::string version_text();

}  // namespace kdseg::tools

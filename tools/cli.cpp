#include "tools/cli.h"

#include <torch/version.h>

#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "core/build_config.h"
#include "core/enum_names.h"
#include "core/error.h"
#include "core/log.h"
#include "dist/communicator.h"
#include "tools/cache_commands.h"
#include "tools/data_commands.h"
#include "tools/evaluate_command.h"
#include "tools/launch.h"
#include "tools/predict_command.h"
#include "tools/train_command.h"

namespace kdseg::tools {
namespace po = boost::program_options;

namespace {

std::string usage_text() {
  std::ostringstream out;
  out << "kdseg: knowledge distillation for CT segmentation with the Dice semimetric loss\n\n"
      << "usage: kdseg <command> [options]\n"
      << "       [mpirun -np N] kdseg <command> [options]\n"
      << "       kdseg <command> --help\n"
      << "       kdseg --version\n\n"
      << "commands:\n";
  for (const Command& c : commands()) {
    out << "  " << c.name << std::string(16 - std::min<size_t>(c.name.size(), 15), ' ') << c.summary << "\n";
  }
  out << "\nOptions on the command line take precedence over those in --config FILE (INI).\n";
  return out.str();
}

po::options_description shared_options() {
  po::options_description shared("shared options");
  // clang-format off
  shared.add_options()
      ("help,h", "show this command's options")
      ("config", po::value<std::string>(), "INI file with further options (the command line wins)")
      ("log-level", po::value<std::string>()->default_value("info"), enum_help<log::Level>().c_str())
      ("threads", po::value<int>()->default_value(0), "CPU threads for LibTorch (0: the cores available to the process, shared by the node's ranks)")
      ("backend", po::value<std::string>()->default_value("auto"),
       ("communication between ranks: " + enum_help<dist::Backend>()).c_str())
      ("collective-timeout", po::value<double>()->default_value(600),
       "seconds a collective may take before the job is reported and aborted (0: never)");
  // clang-format on
  return shared;
}

// The text of an INI file without a UTF-8 byte order mark (editors on Windows write one, and
// Boost would read it as part of the first key).
std::string config_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw po::error("cannot read --config file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw po::error("cannot read --config file '" + path + "'");
  std::string out = text.str();
  if (out.compare(0, 3, "\xEF\xBB\xBF") == 0) out.erase(0, 3);
  return out;
}

// Every line of an INI file is blank, a comment or `key = value` with a key the command knows,
// other than `config` (a file naming another could loop or shadow); a usage error names the
// file, the line and what is wrong with it. Returns the line of each key, for value errors.
std::map<std::string, int> check_config_lines(const std::string& path, const std::string& text, const Command& command,
                                              const po::options_description& all) {
  std::map<std::string, int> lines;
  std::istringstream in(text);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#' || line[first] == ';') continue;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    const size_t equals = line.find('=');
    if (line[first] == '[') throw po::error(where + "sections are not used; write 'key = value' lines");
    if (equals == std::string::npos)
      throw po::error(where + "expected 'key = value', got '" + line.substr(first) + "'");
    std::string key = line.substr(first, equals - first);
    key.erase(key.find_last_not_of(" \t") + 1);
    if (key == "config") {
      throw po::error(where +
                      "a --config file cannot name another; write its options here or give both on the "
                      "command line");
    }
    if (all.find_nothrow(key, /*approx=*/false) == nullptr) {
      throw po::error(where + "unknown option '" + key + "' (kdseg " + command.name + " --help lists them)");
    }
    lines.emplace(key, number);
  }
  return lines;
}

void store_config_file(const std::string& path, const Command& command, const po::options_description& all,
                       po::variables_map& vm) {
  const std::string text = config_text(path);
  const std::map<std::string, int> lines = check_config_lines(path, text, command, all);
  std::map<std::string, int> from_file;  // the command line wins: only the values the file gives
  for (const auto& [key, line] : lines) {
    if (vm.count(key) == 0 || vm[key].defaulted()) from_file.emplace(key, line);
  }
  try {
    std::istringstream in(text);
    po::store(po::parse_config_file<char>(in, all), vm);
    for (const auto& [key, line] : from_file)
      vm.insert({config_line_key(key), po::variable_value(path + ":" + std::to_string(line), false)});
  } catch (const po::error_with_option_name& e) {
    // A value of the wrong type: the line that gave it.
    const std::string name = e.get_option_name();
    const size_t start = name.find_first_not_of('-');
    const auto line = lines.find(start == std::string::npos ? name : name.substr(start));
    throw po::error(path + (line == lines.end() ? "" : ":" + std::to_string(line->second)) + ": " + e.what());
  } catch (const po::error& e) {
    throw po::error(path + ": " + e.what());
  }
}

int run_command(const Command& command, const std::vector<std::string>& args) {
  po::options_description own(command.name + " options");
  if (command.add_options) command.add_options(own);
  po::options_description all;
  all.add(own).add(shared_options());

  po::variables_map vm;
  // No guessing of abbreviated option names: `--epoch` must not silently mean `--epochs`.
  const int style = po::command_line_style::unix_style ^ po::command_line_style::allow_guessing;
  po::store(po::command_line_parser(args).options(all).style(style).run(), vm);
  if (vm.count("help")) {
    std::cout << "usage: kdseg " << command.name << " [options]\n" << command.summary << "\n";
    std::cout << "\n" << all;
    return kExitOk;
  }
  if (vm.count("config")) store_config_file(vm["config"].as<std::string>(), command, all, vm);
  po::notify(vm);
  // The shared enumerated options are parsed once, here, into their types: commands read
  // vm["backend"].as<dist::Backend>() and vm["log-level"].as<log::Level>().
  vm.at("backend").value() = parse_option<dist::Backend>(vm, "backend");
  if (vm["collective-timeout"].as<double>() < 0) throw po::error("--collective-timeout must be >= 0 seconds");
  const auto level = parse_option<log::Level>(vm, "log-level");
  vm.at("log-level").value() = level;
  log::init(0, 1, level);
  const int threads = vm["threads"].as<int>();
  if (threads < 0 || threads > 1024) throw po::error("--threads must be 0 (the cores available) to 1024");
  return command.run(vm);
}

}  // namespace

const std::vector<Command>& commands() {
  static const std::vector<Command> all = {
      Command{"synth", "write synthetic LiTS/KiTS-shaped NIfTI data", add_synth_options, run_synth},
      Command{"prepare", "convert LiTS/KiTS NIfTI volumes into a prepared HDF5 store", add_prepare_options,
              run_prepare},
      Command{"train", "train a network (teacher or hard-label student)", add_train_options, run_train},
      Command{"precompute", "run the teacher once and cache its soft labels to HDF5", add_precompute_options,
              run_precompute},
      Command{"distill", "train a student with DML against a teacher's soft labels (cached or online)",
              add_distill_options, run_distill},
      Command{"evaluate", "report Dice and calibration of one or more models", add_evaluate_options, run_evaluate},
      Command{"calibrate", "fit a model's temperature on a held-out fold and write it calibrated",
              add_calibrate_options, run_calibrate},
      Command{"predict", "segment new scans with a model or an ensemble, in their own geometry", add_predict_options,
              run_predict},
      Command{"export", "write a checkpoint as a TorchScript module that PyTorch loads without kdseg",
              add_export_options, run_export},
      Command{"cache inspect", "show a soft-label cache's shape, format, provenance and size",
              add_cache_inspect_options, run_cache_inspect},
      Command{"cache verify", "check every slice, checksum and the provenance of a soft-label cache",
              add_cache_verify_options, run_cache_verify},
      Command{"verify", "check that stores, models and caches still hold what kdseg wrote (checksums, content hash)",
              add_verify_options, run_verify},
  };
  return all;
}

std::string version_text() {
  std::ostringstream out;
  out << "kdseg " << KDSEG_VERSION << " (git " << KDSEG_GIT_HASH << ")\n"
      << "LibTorch " << TORCH_VERSION_MAJOR << "." << TORCH_VERSION_MINOR << "." << TORCH_VERSION_PATCH
      << (KDSEG_HAVE_CUDA ? " with CUDA" : " (CPU)") << "\n"
      << "backends: local" << (KDSEG_HAVE_MPI ? " mpi" : "") << (KDSEG_HAVE_NCCL ? " nccl" : "");
  if (!KDSEG_HAVE_MPI) out << " (mpi not compiled in: -DKDSEG_WITH_MPI=ON)";
  if (!KDSEG_HAVE_NCCL) out << " (nccl not compiled in: needs a CUDA LibTorch and -DKDSEG_WITH_NCCL=ON)";
  out << "\n";
  return out.str();
}

int run(int argc, const char* const* argv) {
  // A file size limit (ulimit -f, a batch system's file quota) then fails the write that passes
  // it with EFBIG, reported like a full disk, instead of killing the process.
  std::signal(SIGXFSZ, SIG_IGN);
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    std::cerr << usage_text();
    return kExitUsage;
  }
  const std::string& first = args.front();
  if (first == "--help" || first == "-h" || first == "help") {
    std::cout << usage_text();
    return kExitOk;
  }
  if (first == "--version" || first == "version") {
    std::cout << version_text();
    return kExitOk;
  }
  // Two-word commands: `kdseg cache inspect ...`.
  const bool two_words = first == "cache" && args.size() > 1 && args[1].rfind("-", 0) != 0;
  const std::string name = two_words ? first + " " + args[1] : first;
  const auto& all = commands();
  const auto it = std::find_if(all.begin(), all.end(), [&](const Command& c) { return c.name == name; });
  if (it == all.end()) {
    // `kdseg cache` or `kdseg cache --help`: the usage, whose list names its subcommands.
    if (first == "cache" && !two_words) {
      const bool help = args.size() > 1 && (args[1] == "--help" || args[1] == "-h");
      (help ? std::cout : std::cerr) << "kdseg cache: give a subcommand (cache inspect, cache verify)\n\n"
                                     << usage_text();
      return help ? kExitOk : kExitUsage;
    }
    std::cerr << "kdseg: unknown command '" << name << "'\n\n" << usage_text();
    return kExitUsage;
  }
  try {
    return run_command(*it, std::vector<std::string>(args.begin() + (two_words ? 2 : 1), args.end()));
  } catch (const po::error& e) {
    std::cerr << "kdseg " << it->name << ": " << e.what() << "\n(see: kdseg " << it->name << " --help)\n";
    return kExitUsage;
  } catch (const Error& e) {
    std::cerr << "[rank " << std::max(0, e.rank()) << "/" << std::max(1, process_world_size())
              << "] error: " << e.what() << "\n";
    return kExitError;
  } catch (const std::exception& e) {
    std::cerr << "[rank " << std::max(0, process_rank()) << "/" << std::max(1, process_world_size())
              << "] error: " << error_message(e) << "\n";
    return kExitError;
  }
}

}  // namespace kdseg::tools

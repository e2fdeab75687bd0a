// Options and entry points of `kdseg evaluate` and `kdseg calibrate` (tools/evaluate_command.cpp).
#pragma once

#include <boost/program_options.hpp>

namespace kdseg::tools {

void add_evaluate_options(boost::program_options::options_description& description);
int run_evaluate(const boost::program_options::variables_map& vm);

void add_calibrate_options(boost::program_options::options_description& description);
int run_calibrate(const boost::program_options::variables_map& vm);

}  // namespace kdseg::tools

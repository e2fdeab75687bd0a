// Options and entry point of `kdseg train` (tools/train_command.cpp).
#pragma once

#include <boost/program_options.hpp>

namespace kdseg::tools {

void add_train_options(boost::program_options::options_description& description);
int run_train(const boost::program_options::variables_map& vm);

void add_distill_options(boost::program_options::options_description& description);
int run_distill(const boost::program_options::variables_map& vm);

}  // namespace kdseg::tools

// Options and entry points of the data subcommands (tools/data_commands.cpp).
#pragma once

#include <boost/program_options.hpp>

namespace kdseg::tools {

void add_synth_options(boost::program_options::options_description& description);
int run_synth(const boost::program_options::variables_map& vm);

void add_prepare_options(boost::program_options::options_description& description);
int run_prepare(const boost::program_options::variables_map& vm);

}  // namespace kdseg::tools

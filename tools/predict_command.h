// Options and entry points of `kdseg predict` and `kdseg export` (tools/predict_command.cpp).
#pragma once

#include <boost/program_options.hpp>

namespace kdseg::tools {

void add_predict_options(boost::program_options::options_description& description);
int run_predict(const boost::program_options::variables_map& vm);

void add_export_options(boost::program_options::options_description& description);
int run_export(const boost::program_options::variables_map& vm);

}  // namespace kdseg::tools

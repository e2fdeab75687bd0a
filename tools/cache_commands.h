// Options and entry points of `kdseg precompute`, `kdseg cache inspect`, `kdseg cache verify` and
// `kdseg verify`.
#pragma once

#include <boost/program_options.hpp>

namespace kdseg::tools {

void add_precompute_options(boost::program_options::options_description& description);
int run_precompute(const boost::program_options::variables_map& vm);

void add_cache_inspect_options(boost::program_options::options_description& description);
int run_cache_inspect(const boost::program_options::variables_map& vm);

void add_cache_verify_options(boost::program_options::options_description& description);
int run_cache_verify(const boost::program_options::variables_map& vm);

void add_verify_options(boost::program_options::options_description& description);
int run_verify(const boost::program_options::variables_map& vm);

}  // namespace kdseg::tools

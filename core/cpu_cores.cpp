#include "core/cpu_cores.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>

namespace kdseg {
namespace {

int affinity_cores() {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof mask, &mask) != 0)
    return static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
  return std::max(1, CPU_COUNT(&mask));
}

// "max 100000" (no quota) or "200000 100000" (2 cores' worth) in the process's cgroup.
int cgroup_quota_cores() {
  std::ifstream in("/sys/fs/cgroup/cpu.max");
  std::string quota;
  double period = 0;
  if (!(in >> quota >> period) || quota == "max" || period <= 0) return 0;
  try {
    return std::max(1, static_cast<int>(std::ceil(std::stod(quota) / period)));
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

int available_cores() {
  const int cores = affinity_cores(), quota = cgroup_quota_cores();
  return quota > 0 ? std::min(cores, quota) : cores;
}

int default_threads(int local_ranks) {
  const int cores = available_cores();
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  const bool bound = online > 0 && affinity_cores() < online;
  return bound ? cores : std::max(1, cores / std::max(1, local_ranks));
}

}  // namespace kdseg

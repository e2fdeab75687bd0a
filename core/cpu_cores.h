// How many CPU cores this process may use, for thread-count defaults: its affinity mask (what
// `mpirun --bind-to`, SLURM's cpusets and taskset set) and its cgroup's CPU quota (containers).
#pragma once

namespace kdseg {

// Cores in this process's affinity mask, capped by the cgroup v2 quota (cpu.max) when there is
// one. At least 1.
int available_cores();

// LibTorch threads for one of `local_ranks` processes on this node: all available cores when a
// launcher bound the process to a subset of the machine (each rank has its own), else an equal
// share of them. At least 1.
int default_threads(int local_ranks);

}  // namespace kdseg

// Graceful stop. SIGTERM (what SLURM and Kubernetes send before they kill a job), SIGINT
// (Ctrl-C) and SIGUSR1 (`#SBATCH --signal=B:USR1@120`, forwarded to every rank by mpirun) ask a
// long command to stop at its next safe point: `train` and `distill` after the current step,
// with last.pt written; `precompute` after the current batch, with its shard flushed. The same
// request arriving twice within 2 s (SLURM and mpirun both deliver it) counts once; a signal
// after that has its default effect and ends the process at once.
#pragma once

#include <string>

namespace kdseg {

// Installs the handlers (idempotent). Commands that cannot stop gracefully do not call it and
// keep the default actions.
void install_stop_handlers();

// Whether a stop was asked for. Async-signal-safe flag; cheap enough to read every step.
bool stop_requested();

// "SIGTERM", "SIGINT" or "SIGUSR1": the signal that asked; "" when none did.
std::string stop_signal_name();

}  // namespace kdseg

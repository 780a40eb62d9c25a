// SIGINT / SIGTERM (Ctrl-C, Slurm at the time limit): the first one asks cachelab to stop at
// the next step boundary (the run in flight is abandoned and its temporary file removed, so
// a resume redoes it; finished runs are kept); a second one ends the process at once.
#pragma once

namespace cachelab {

void install_interrupt_handlers();
// The signal that asked to stop, or 0.
int interrupted();
// Throws cachelab::Error ("interrupted by SIGTERM") when a stop was asked for.
void throw_if_interrupted();
// Ask the process to stop as if `sig` arrived (tests).
void request_interrupt(int sig);

}  // namespace cachelab

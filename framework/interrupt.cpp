#include "framework/interrupt.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include "framework/error.h"

namespace cachelab {
namespace {

std::atomic<int> g_signal{0};

void on_signal(int sig) {
  if (g_signal.exchange(sig) != 0) {
    // A second signal: stop now (async-signal-safe calls only).
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  const char msg[] = "\n[cachelab] stopping at the next step (send the signal again to stop at once)\n";
  (void)!write(2, msg, sizeof(msg) - 1);
}

}  // namespace

void install_interrupt_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a parent waiting for its workers wakes up
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int interrupted() { return g_signal.load(); }

void request_interrupt(int sig) { g_signal.store(sig); }

void throw_if_interrupted() {
  const int sig = g_signal.load();
  CL_CHECK(sig == 0, "interrupted by " << (sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal")
                                       << "; the run in flight was abandoned (re-run to resume)");
}

}  // namespace cachelab

// The process's stop request. SIGINT/SIGTERM (or request_stop) ask long work to save what it has and
// return: the trainer checkpoints after its current step, `continue --watch` ends between rounds.
//
//   StopSignals scope;            // SIGINT/SIGTERM set the request while `scope` lives
//   while (!stop_signal()) work();
//
// A request made before a fit() starts is honoured at its first step; fit() clears it when it returns,
// so one run's stop does not leak into the next in the same process.
#pragma once
#include <csignal>

namespace dsforge {

void request_stop(int sig = SIGTERM);  // async-signal-safe
int stop_signal();                     // the signal asked with, 0 when no stop is pending
void clear_stop();

// Installs handlers that call request_stop for SIGINT and SIGTERM; restores the previous ones after.
// Nested scopes are fine (they install the same handler).
class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

}  // namespace dsforge

// Stop signals: a flag for the training loop, set by a handler that does nothing else.
#include "kernels_common.h"
#include <signal.h>
#include <string.h>

// A stop request from SIGTERM or SIGUSR1 (as SLURM sends before a time limit): the handler only
// sets a flag, which the training loop reads at each step boundary.
static volatile sig_atomic_t stop_requested = 0;

static void on_stop_signal(int signal_number) {
    (void)signal_number;
    stop_requested = 1;
}

void cohort_install_stop_signals(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGUSR1, &action, NULL);
}

int cohort_stop_requested(void) { return stop_requested; }

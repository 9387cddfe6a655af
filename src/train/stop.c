/* Stop signals (SIGUSR1, SIGTERM, SIGINT) taken by one thread that waits for
 * them, never by a handler on a compute thread.
 *
 * Why not a plain handler: oneDNN's JIT GEMM kernels (Debian 12's 2.7, and
 * upstream until 3.11, issue uxlfoundation/oneDNN#4845) point rsp at a heap
 * workspace while they run. A signal handled on that thread has the kernel
 * push its signal frame there, over live heap memory: a storm of stop signals
 * during training corrupted the heap (glibc "corrupted size vs. prev_size")
 * about once in ten runs here, and a loop of dnnl_sgemm calls under an
 * interval timer does it with oneDNN alone (docs/design.md).
 * So the stop signals are blocked in every thread (the mask is inherited by
 * threads made later: OpenMP's, Open MPI's, the loader's), and a thread of
 * ours takes them with sigwait(): no frame is ever pushed on a compute thread.
 * This must run before any other thread exists (main() calls it before
 * MPI_Init). */
#include "stop.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { MODE_STOP, MODE_IGNORE, MODE_RELEASED };

static atomic_int       requested, mode, taken, ints; /* ints: SIGINTs while armed */
static int              started;
static struct sigaction old_act[3];
static const int        stop_sigs[3] = {SIGUSR1, SIGTERM, SIGINT};

static void stop_set(sigset_t *set) {
    sigemptyset(set);
    for (int i = 0; i < 3; i++) sigaddset(set, stop_sigs[i]);
}

/* The signal's earlier disposition, on this thread (the only one where it is
 * unblocked): a default one ends the program as if we had never caught it. */
static void act_as_before(int sig) {
    for (int i = 0; i < 3; i++)
        if (stop_sigs[i] == sig) sigaction(sig, &old_act[i], NULL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    raise(sig);
    pthread_sigmask(SIG_BLOCK, &one, NULL);
}

static void *stop_thread(void *arg) {
    (void)arg;
    sigset_t set;
    stop_set(&set);
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0) continue;
        int m = atomic_load(&mode);
        if (m == MODE_RELEASED) {
            act_as_before(sig);
        } else if (m == MODE_STOP) {
            /* Ctrl-C: a checkpoint and exit 75; a second one ends the program. */
            if (sig == SIGINT && atomic_fetch_add(&ints, 1) > 0) act_as_before(sig);
            atomic_store(&requested, 1);
        } /* MODE_IGNORE: stopped already; exit 75 must stay exit 75 */
        atomic_fetch_add(&taken, 1);
    }
    return NULL;
}

/* Only when no thread could be made: a handler that sets the flag (the
 * oneDNN hazard above then applies). */
static void on_stop_signal(int sig) {
    (void)sig;
    atomic_store(&requested, 1);
}

int md_stop_catch(void) {
    if (started) { /* again after a search ended: a fresh request, a fresh Ctrl-C count */
        if (atomic_load(&mode) != MODE_STOP) {
            atomic_store(&requested, 0);
            atomic_store(&ints, 0);
            atomic_store(&mode, MODE_STOP);
        }
        return 0;
    }
    for (int i = 0; i < 3; i++) sigaction(stop_sigs[i], NULL, &old_act[i]);
    sigset_t set, before;
    stop_set(&set);
    if (pthread_sigmask(SIG_BLOCK, &set, &before) != 0) return -1;
    pthread_t      t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int e = pthread_create(&t, &a, stop_thread, NULL);
    pthread_attr_destroy(&a);
    if (e != 0) {
        pthread_sigmask(SIG_SETMASK, &before, NULL);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_stop_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        for (int i = 0; i < 3; i++) sigaction(stop_sigs[i], &sa, NULL);
        return -1;
    }
    atomic_store(&mode, MODE_STOP);
    started = 1;
    return 0;
}

int  md_stop_requested(void) { return atomic_load(&requested); }
void md_stop_ignore_further(void) { atomic_store(&mode, MODE_IGNORE); }
void md_stop_release(void) { atomic_store(&mode, MODE_RELEASED); }

void md_stop_send_self(int sig) {
    int before = atomic_load(&taken);
    kill(getpid(), sig);
    if (!started) return;
    /* Wait until the thread has taken it, so a test hook's stop is at the step
     * it names (bounded: 10 s). */
    struct timespec ts = {0, 100000};
    for (int i = 0; i < 100000 && atomic_load(&taken) == before; i++) nanosleep(&ts, NULL);
}

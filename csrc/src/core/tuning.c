/* Settings read once from the environment and the machine. */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/tuning.h"

static uint64_t spin_ns;
static pthread_once_t spin_once = PTHREAD_ONCE_INIT;

static void spin_init(void)
{
    /* Watching for work instead of sleeping saves a wake-up per transfer,
     * but only pays when there are cores to spare: on two, the watcher
     * takes the CPU that the application's threads need. */
    const char *env = getenv("IXFER_SPIN_US");
    if (env && *env)
        spin_ns = strtoull(env, NULL, 10) * 1000ull;
    else
        spin_ns = sysconf(_SC_NPROCESSORS_ONLN) >= 4 ? 50000ull : 0;
}

uint64_t ixfer_spin_ns(void)
{
    pthread_once(&spin_once, spin_init);
    return spin_ns;
}

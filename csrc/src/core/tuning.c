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

static uint64_t poll_max_ns;
static pthread_once_t poll_once = PTHREAD_ONCE_INIT;

static void poll_init(void)
{
    /* The longest sleep of a progress thread that must poll its CQ (no wait
     * fd): bounds both the latency of the first completion after an idle
     * spell and the idle CPU (one CQ read per period). */
    const char *env = getenv("IXFER_POLL_MAX_US");
    uint64_t us = env && *env ? strtoull(env, NULL, 10) : 1000;
    poll_max_ns = (us ? us : 1) * 1000ull;
}

uint64_t ixfer_poll_max_ns(void)
{
    pthread_once(&poll_once, poll_init);
    return poll_max_ns;
}

static uint64_t inline_max;
static pthread_once_t inline_once = PTHREAD_ONCE_INIT;

static void inline_init(void)
{
    /* The caller's thread does the provider's work for what it posts itself
     * (tcp copies the data into the socket there): bounded so post() stays
     * short. */
    const char *env = getenv("IXFER_INLINE_POST_MAX");
    inline_max = env && *env ? strtoull(env, NULL, 10) : 65536;
}

uint64_t ixfer_inline_post_max(void)
{
    pthread_once(&inline_once, inline_init);
    return inline_max;
}

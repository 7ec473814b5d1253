/* Lazily opened optional libraries (CUDA driver, cuFile). */
#ifndef IXFER_CORE_DYNLIB_H
#define IXFER_CORE_DYNLIB_H

#include <pthread.h>
#include <stdint.h>

struct ixfer_dynlib {
    const char *env_var;      /* override, e.g. "IXFER_CUDA_SO" */
    const char *default_name; /* e.g. "libcuda.so.1" */
    const char *what;         /* advice when missing */
    pthread_mutex_t lock;
    int state;                /* 0 untried, 1 loaded, -1 failed */
    void *handle;
    char path[512];
    char error[768];
};

#define IXFER_DYNLIB_INIT(env, name, advice) \
    { env, name, advice, PTHREAD_MUTEX_INITIALIZER, 0, NULL, "", "" }

/* Opens the library once; returns IXFER_OK or IXFER_ERR_LIBRARY_MISSING. */
int32_t ixfer_dynlib_open(struct ixfer_dynlib *lib);
/* Resolves a symbol of an opened library, or NULL. */
void *ixfer_dynlib_sym(struct ixfer_dynlib *lib, const char *name);

#endif

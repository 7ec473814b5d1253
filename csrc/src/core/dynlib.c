#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/dynlib.h"
#include "core/error.h"

int32_t ixfer_dynlib_open(struct ixfer_dynlib *lib)
{
    pthread_mutex_lock(&lib->lock);
    if (lib->state == 0) {
        const char *env = getenv(lib->env_var);
        snprintf(lib->path, sizeof lib->path, "%s", env && *env ? env : lib->default_name);
        lib->handle = dlopen(lib->path, RTLD_NOW | RTLD_LOCAL);
        if (lib->handle) {
            lib->state = 1;
        } else {
            snprintf(lib->error, sizeof lib->error, "cannot open %s (%s); %s", lib->path,
                     dlerror(), lib->what);
            lib->state = -1;
        }
    }
    int state = lib->state;
    pthread_mutex_unlock(&lib->lock);
    if (state < 0)
        return ixfer_fail(IXFER_ERR_LIBRARY_MISSING, "%s", lib->error);
    return IXFER_OK;
}

void *ixfer_dynlib_sym(struct ixfer_dynlib *lib, const char *name)
{
    return lib->handle ? dlsym(lib->handle, name) : NULL;
}

/* CUDA helpers for the engines (cuda.c): the file engine's staging and cuFile
 * paths, and the network engine's staging of device memory. */
#ifndef IXFER_GPU_CUDA_H
#define IXFER_GPU_CUDA_H

#include <stdint.h>

/* Makes the primary context of device ordinal current on this thread (loading
 * the driver first). */
int32_t ixfer_cuda_bind(int32_t ordinal);
/* Synchronous copies in the context bound on this thread. */
int32_t ixfer_cuda_htod(uint64_t dst, const void *src, uint64_t len);
int32_t ixfer_cuda_dtoh(void *dst, uint64_t src, uint64_t len);
/* Page-locks host memory for faster copies; returns whether it did. */
int ixfer_cuda_pin(void *p, uint64_t len);
/* ERR_INVALID_PARAM unless [addr, addr + len) lies in one device allocation;
 * binds its device's context. */
int32_t ixfer_cuda_check_range(uint64_t addr, uint64_t len);
/* Whether IXFER_EMULATE_VRAM=1 replaces the driver with host memory (ixfer.h). */
int ixfer_cuda_emulated(void);
void ixfer_cuda_unpin(void *p);

#endif

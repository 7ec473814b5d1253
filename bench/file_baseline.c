/* The baseline of the file benchmark: a plain pread/pwrite loop over a file,
 * one block at a time, as a program would do without ixfer.
 *   file_baseline read|write PATH BLOCK_BYTES FILE_BYTES SECONDS
 * Passes over the whole file (sequential blocks) until SECONDS have passed,
 * and prints one line: "GB/s <value> bytes <n> seconds <t>". */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 6 || (strcmp(argv[1], "read") && strcmp(argv[1], "write"))) {
        fprintf(stderr, "usage: %s read|write PATH BLOCK_BYTES FILE_BYTES SECONDS\n", argv[0]);
        return 2;
    }
    int writing = !strcmp(argv[1], "write");
    size_t block = strtoull(argv[3], NULL, 10);
    size_t file = strtoull(argv[4], NULL, 10);
    double seconds = atof(argv[5]);
    int fd = open(argv[2], writing ? O_WRONLY | O_CREAT : O_RDONLY, 0644);
    if (fd < 0 || block == 0 || file < block) {
        perror(argv[2]);
        return 1;
    }
    /* One buffer as large as the file, as ixfer's side has: each block moves
     * between its own memory and its own file range. */
    unsigned char *buf = aligned_alloc(4096, (file + 4095) / 4096 * 4096);
    if (!buf)
        return 1;
    memset(buf, 0x5a, file);
    size_t blocks = file / block;
    unsigned long long bytes = 0;
    double start = now(), elapsed = 0;
    do {
        for (size_t i = 0; i < blocks; i++) {
            size_t done = 0;
            while (done < block) {
                ssize_t n = writing ? pwrite(fd, buf + i * block + done, block - done, i * block + done)
                                    : pread(fd, buf + i * block + done, block - done, i * block + done);
                if (n <= 0) {
                    perror("io");
                    return 1;
                }
                done += (size_t)n;
            }
        }
        bytes += (unsigned long long)blocks * block;
        elapsed = now() - start;
    } while (elapsed < seconds);
    printf("GB/s %.3f bytes %llu seconds %.3f\n", bytes / elapsed / 1e9, bytes, elapsed);
    free(buf);
    close(fd);
    return 0;
}

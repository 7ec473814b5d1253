/* The C baseline of `ixfer bench --target-seg FILE --baseline`: a plain
 * pread/pwrite loop on one thread, as a program would move blocks between
 * its memory and a file without ixfer, on the file of the ixfer run.
 *   file_baseline PATH FILE_BYTES DIRECT(0|1)
 * Prints "ready", then answers each line on stdin
 *   warmup|run READ|WRITE BLOCK BATCH IOVS ITERS
 * with "ok" (warmup) or "result TOTAL POST_AVG POST_P99 TX_AVG TX_P99" (ns).
 * One iteration moves BATCH blocks, block b at offset b * BLOCK in memory and
 * in the file, each cut into IOVS pieces (lib/bench/layout.ts), one
 * pread/pwrite per piece. The calls are the transfer: post is 0, tx the
 * iteration. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_stats.h"

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "file_baseline: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

/* All of [off, off + len) with as many calls as it takes. */
static void move(int fd, int writing, unsigned char *buf, uint64_t off, uint64_t len)
{
    for (uint64_t done = 0; done < len;) {
        ssize_t n = writing ? pwrite(fd, buf + off + done, len - done, (off_t)(off + done))
                          : pread(fd, buf + off + done, len - done, (off_t)(off + done));
        if (n <= 0)
            die("%s at %" PRIu64 ": %s", writing ? "pwrite" : "pread", off + done, n ? strerror(errno) : "end of file");
        done += (uint64_t)n;
    }
}

int main(int argc, char **argv)
{
    if (argc != 4)
        die("usage: %s PATH FILE_BYTES DIRECT(0|1)", argv[0]);
    uint64_t bytes = strtoull(argv[2], NULL, 10);
    int fd = open(argv[1], O_RDWR | (atoi(argv[3]) ? O_DIRECT : 0));
    if (fd < 0)
        die("%s: %s", argv[1], strerror(errno));
    /* As large as the file, as ixfer's memory is: each block moves between
     * its own memory and its own file range. */
    unsigned char *buf = aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
    if (!buf)
        die("out of memory");
    memset(buf, 0x5a, bytes);
    printf("ready\n");
    fflush(stdout);

    char line[256], cmd[16], op[16];
    uint64_t block, batch, iovs, iters;
    while (fgets(line, sizeof line, stdin)) {
        if (!parse_row_command(line, cmd, op, &block, &batch, &iovs, &iters, bytes))
            die("bad command: %s", line);
        int writing = !strcmp(op, "WRITE");
        uint64_t piece = block / iovs;
        uint64_t *tx = calloc(iters ? iters : 1, sizeof *tx);
        if (!tx)
            die("out of memory");
        uint64_t start = now_ns();
        for (uint64_t it = 0; it < iters; it++) {
            uint64_t t0 = now_ns();
            for (uint64_t b = 0; b < batch; b++)
                for (uint64_t i = 0; i < iovs; i++)
                    move(fd, writing, buf, b * block + i * piece, i + 1 == iovs ? block - i * piece : piece);
            tx[it] = now_ns() - t0;
        }
        uint64_t total = now_ns() - start;
        if (!strcmp(cmd, "warmup"))
            printf("ok\n");
        else
            printf("result %" PRIu64 " 0 0 %" PRIu64 " %" PRIu64 "\n", total, avg(tx, iters), p99(tx, iters));
        fflush(stdout);
        free(tx);
    }
    free(buf);
    close(fd);
    return 0;
}

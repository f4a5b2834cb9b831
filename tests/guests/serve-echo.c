/*
 * serve-echo - the test guest for `wasinn serve` (wasm32-wasi, no WASI-NN).
 *
 *   serve-echo [--exit N] [--trap] [--spin MS] [--alloc MB] [--stderr TEXT] [WORD...]
 *
 * Writes "args: WORD WORD\n" and then stdin, unchanged, to stdout; then, in this order,
 * prints TEXT to stderr, allocates MB megabytes (exit 71 when that fails), busy-loops for
 * MS milliseconds, traps (unreachable), or exits with N.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    int exit_code = 0, trap = 0;
    long spin_ms = 0, alloc_mb = 0;
    const char *message = NULL;
    fputs("args:", stdout);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--exit") == 0 && i + 1 < argc)
            exit_code = atoi(argv[++i]);
        else if (strcmp(argv[i], "--trap") == 0)
            trap = 1;
        else if (strcmp(argv[i], "--spin") == 0 && i + 1 < argc)
            spin_ms = atol(argv[++i]);
        else if (strcmp(argv[i], "--alloc") == 0 && i + 1 < argc)
            alloc_mb = atol(argv[++i]);
        else if (strcmp(argv[i], "--stderr") == 0 && i + 1 < argc)
            message = argv[++i];
        else
            printf(" %s", argv[i]);
    }
    fputs("\n", stdout);
    static char buffer[65536]; /* static: the default wasm stack is only 64 KiB */
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, stdin)) > 0)
        fwrite(buffer, 1, n, stdout);
    fflush(stdout);
    if (message)
        fprintf(stderr, "%s\n", message);
    if (alloc_mb) {
        volatile char *block = malloc((size_t)alloc_mb << 20);
        if (!block) {
            fprintf(stderr, "serve-echo: cannot allocate %ld MB\n", alloc_mb);
            return 71;
        }
        block[0] = 1;
    }
    if (spin_ms) {
        double until = now_ms() + spin_ms;
        volatile unsigned long spins = 0;
        while (now_ms() < until)
            spins++;
    }
    if (trap)
        __builtin_trap();
    return exit_code;
}

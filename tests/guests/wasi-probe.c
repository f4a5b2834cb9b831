/* A WASI command for the runtime's own tests: one action per run, chosen by argv[1]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cat(const char *path) {
    FILE *file = fopen(path, "rb");
    if (!file) {
        perror(path);
        return 3;
    }
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, file)) > 0) fwrite(buffer, 1, n, stdout);
    fclose(file);
    return 0;
}

static int write_file(const char *path, const char *text) {
    FILE *file = fopen(path, "wb");
    if (!file) {
        perror(path);
        return 4;
    }
    fputs(text, file);
    return fclose(file) == 0 ? 0 : 5;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: wasi-probe args|env NAME|cat PATH|write PATH TEXT|exit N|trap|stdin\n");
        return 64;
    }
    const char *action = argv[1];
    if (!strcmp(action, "args")) {
        for (int i = 0; i < argc; i++) printf("%d=%s\n", i, argv[i]);
        return 0;
    }
    if (!strcmp(action, "env") && argc == 3) {
        const char *value = getenv(argv[2]);
        printf("%s\n", value ? value : "(unset)");
        return value ? 0 : 1;
    }
    if (!strcmp(action, "cat") && argc == 3) return cat(argv[2]);
    if (!strcmp(action, "write") && argc == 4) return write_file(argv[2], argv[3]);
    if (!strcmp(action, "exit") && argc == 3) exit(atoi(argv[2]));
    if (!strcmp(action, "trap")) __builtin_trap();
    if (!strcmp(action, "stdin")) {
        int c;
        while ((c = getchar()) != EOF) putchar(c);
        return 0;
    }
    fprintf(stderr, "wasi-probe: unknown action %s\n", action);
    return 64;
}

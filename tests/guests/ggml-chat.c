/*
 * ggml-chat.c - the call sequence of WasmEdge's wasmedge-ggml example guests, in C.
 *
 *   ggml-chat [--config JSON] [--meta JSON] [--stream] [--limit N] [--rounds N] [--reload N] [--time]
 *             NAME PROMPT
 *
 * Like the Rust examples: load_by_name_with_config(NAME, JSON) (load_by_name without
 * --config), init_execution_context, optionally set_input(1, --meta JSON), set_input(0,
 * U8 [len], PROMPT), get_output(1), then either compute + get_output(0) + get_output(1)
 * (basic/llama) or a compute_single / get_output_single loop until a non-zero errno
 * (llama-stream; --limit N stops it after N tokens, as compute_single ignores n-predict).
 * Output buffers are 24576 bytes, as in the examples.
 *
 * --reload N repeats the whole sequence N times with unload(graph) after each, as
 * test/unload does (graph handles 0..N-1).
 *
 * Output is one "key=value" line per fact so tests can compare exactly: payloads are hex
 * (text_hex=, piece_hex=), errnos are numbers (rc_compute=, rc_single=). A 103 from the load
 * prints "Model not found" like test/model-not-found. --time adds ttft_ms= and gen_ms=,
 * measured with CLOCK_MONOTONIC around the calls (for `wasinn bench`).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../examples/c/wasi_nn.h"

#define OUTPUT_BYTES 24576

static uint8_t output[OUTPUT_BYTES];

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void print_hex(const char *key, const uint8_t *data, uint32_t len) {
    static const char digits[] = "0123456789abcdef";
    printf("%s=", key);
    for (uint32_t i = 0; i < len; i++) {
        putchar(digits[data[i] >> 4]);
        putchar(digits[data[i] & 15]);
    }
    putchar('\n');
}

static int set_bytes(wasi_nn_context_t ctx, uint32_t index, const char *text) {
    uint32_t dims[1] = {(uint32_t)strlen(text)};
    wasi_nn_tensor_t tensor = {dims, 1, WASI_NN_TYPE_U8, (const uint8_t *)text, dims[0]};
    return wasi_nn_set_input(ctx, index, &tensor);
}

static void print_metadata(wasi_nn_context_t ctx, const char *key) {
    uint32_t written = 0;
    int rc = wasi_nn_get_output(ctx, 1, output, OUTPUT_BYTES, &written);
    if (rc != 0) {
        printf("rc_%s=%d\n", key, rc);
        return;
    }
    printf("%s=%.*s\n", key, (int)written, (const char *)output);
}

static const char *config = NULL, *meta = NULL;
static int stream = 0, timed = 0, rounds = 1, limit = -1, reloads = 1;

static int session(const char *name, const char *prompt);

int main(int argc, char **argv) {
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) config = argv[++i];
        else if (strcmp(argv[i], "--meta") == 0 && i + 1 < argc) meta = argv[++i];
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc) limit = atoi(argv[++i]);
        else if (strcmp(argv[i], "--reload") == 0 && i + 1 < argc) reloads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--stream") == 0) stream = 1;
        else if (strcmp(argv[i], "--time") == 0) timed = 1;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (argc - i != 2) {
        fprintf(stderr, "usage: ggml-chat [--config JSON] [--meta JSON] [--stream] [--limit N] [--rounds N] [--reload N] "
                        "[--time] "
                        "NAME PROMPT\n");
        return 2;
    }
    for (int reload = 0; reload < reloads; reload++) {
        int rc = session(argv[i], argv[i + 1]);
        if (rc != 0) return rc;
    }
    return 0;
}

static int session(const char *name, const char *prompt) {
    wasi_nn_graph_t graph;
    int rc = config ? wasi_nn_load_by_name_with_config(name, strlen(name), config, strlen(config), &graph)
                    : wasi_nn_load_by_name(name, strlen(name), &graph);
    if (rc == WASI_NN_ERRNO_MODEL_NOT_FOUND) {
        printf("Model not found\n");
        return 1;
    }
    printf("rc_load=%d\n", rc);
    if (rc != 0) return 1;
    printf("graph=%u\n", graph);

    wasi_nn_context_t ctx;
    rc = wasi_nn_init_execution_context(graph, &ctx);
    printf("rc_init=%d\n", rc);
    if (rc != 0) return 1;
    if (meta) {
        rc = set_bytes(ctx, 1, meta);
        printf("rc_meta=%d\n", rc);
        if (rc != 0) return 1;
    }

    for (int round = 0; round < rounds; round++) {
        double start = now_ms();
        rc = set_bytes(ctx, 0, prompt);
        printf("rc_set_input=%d\n", rc);
        if (rc != 0) return 1;
        if (round == 0) print_metadata(ctx, "metadata_before");
        uint32_t written = 0;
        if (!stream) {
            fflush(stdout); /* stream-stdout pieces come from the host, between our lines */
            rc = wasi_nn_compute(ctx);
            double done = now_ms();
            printf("rc_compute=%d\n", rc);
            int got = wasi_nn_get_output(ctx, 0, output, OUTPUT_BYTES, &written);
            if (got != 0) printf("rc_get_output=%d\n", got);
            else if (round == rounds - 1) print_hex("text_hex", output, written);
            if (timed) printf("gen_ms=%.4f\n", done - start);
        } else {
            int tokens = 0;
            while (limit < 0 || tokens < limit) {
                rc = wasi_nn_compute_single(ctx);
                if (rc != 0) break;
                rc = wasi_nn_get_output_single(ctx, 0, output, OUTPUT_BYTES, &written);
                if (rc != 0) break;
                if (tokens++ == 0 && timed) printf("ttft_ms=%.4f\n", now_ms() - start);
                if (round == rounds - 1) print_hex("piece_hex", output, written);
            }
            if (timed) printf("gen_ms=%.4f\n", now_ms() - start);
            printf("rc_single=%d\n", rc);
            if (round == rounds - 1) {
                int got = wasi_nn_get_output(ctx, 0, output, OUTPUT_BYTES, &written);
                if (got == 0) print_hex("text_hex", output, written);
            }
            printf("rc_fini=%d\n", wasi_nn_fini_single(ctx));
        }
    }
    print_metadata(ctx, "metadata_after");
    if (reloads > 1) printf("rc_unload=%d\n", wasi_nn_unload(graph));
    return 0;
}

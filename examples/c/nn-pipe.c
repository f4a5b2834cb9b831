/*
 * nn-pipe - a WASI-NN filter for serving (wasm32-wasi): stdin tensor -> stdout tensor.
 *
 *   nn-pipe --name NAME --dims 1x512x896x3 [--type f32] [--output INDEX] [--config JSON]
 *           [--argmax CLASSES]
 *
 * Reads stdin whole as the raw bytes of input 0 (TYPE, DIMS), runs the preloaded model
 * NAME (load_by_name, or load_by_name_with_config with --config) and writes the raw bytes
 * of output INDEX (default 0) to stdout. With --argmax, the output is read as f32 scores
 * 1 x CLASSES x H x W (NCHW) and what is written is the u8 class of each pixel, H x W: a
 * label map 16 times smaller than the scores, for segmentation served over a network. Made for `wasinn serve`, where the request body
 * is stdin, the query string is the arguments and stdout is the response body.
 *
 * Exit status (sysexits where there is one, so a server can tell whose fault it was):
 *   0 ok; 64 bad arguments; 65 stdin is not DIMS x TYPE bytes; 66 stdin unreadable;
 *   70 the host broke the get_output size protocol; 71 out of memory; 74 stdout unwritable;
 *   otherwise the wasi-nn errno of the failing call (1..8, 100..103).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn.h"

#define EXIT_USAGE 64
#define EXIT_DATAERR 65
#define EXIT_NOINPUT 66
#define EXIT_PROTOCOL 70
#define EXIT_NOMEM 71
#define EXIT_IOERR 74
#define MAX_DIMS 8

static const char USAGE[] =
    "usage: nn-pipe --name NAME --dims D1xD2x... [--type f16|f32|f64|u8|i32|i64]\n"
    "               [--output INDEX] [--config JSON] [--argmax CLASSES]\n";

/* f32 scores 1 x classes x plane (NCHW) -> the u8 index of each pixel's highest score,
 * written over the start of the same buffer; returns the plane size, 0 if they do not fit. */
static uint32_t argmax_labels(uint8_t *buffer, uint32_t bytes, uint32_t classes) {
    if (classes == 0 || classes > 256 || bytes % (4u * classes) != 0)
        return 0;
    uint32_t plane = bytes / 4 / classes;
    const float *scores = (const float *)buffer;
    for (uint32_t pixel = 0; pixel < plane; pixel++) {
        uint32_t best = 0;
        float top = scores[pixel];
        for (uint32_t c = 1; c < classes; c++) {
            float score = scores[(size_t)c * plane + pixel];
            if (score > top) {
                top = score;
                best = c;
            }
        }
        buffer[pixel] = (uint8_t)best; /* pixel < 4 * pixel: never overwrites unread scores */
    }
    return plane;
}

static _Noreturn void fail(int code, const char *what, const char *detail) {
    fprintf(stderr, "nn-pipe: %s%s%s\n", what, detail[0] ? ": " : "", detail);
    exit(code);
}

static _Noreturn void fail_nn(const char *call, int32_t err) {
    fprintf(stderr, "nn-pipe: %s failed: %s (errno %d)\n", call, wasi_nn_errno_name(err), (int)err);
    exit((int)err);
}

static void *xrealloc(void *old, size_t n) {
    void *p = realloc(old, n ? n : 1);
    if (!p)
        fail(EXIT_NOMEM, "out of memory", "");
    return p;
}

struct type_info {
    const char *name;
    wasi_nn_tensor_type_t code;
    uint32_t size;
};

static const struct type_info TYPES[] = {
    {"f16", WASI_NN_TYPE_F16, 2}, {"f32", WASI_NN_TYPE_F32, 4}, {"f64", WASI_NN_TYPE_F64, 8},
    {"u8", WASI_NN_TYPE_U8, 1},   {"i32", WASI_NN_TYPE_I32, 4}, {"i64", WASI_NN_TYPE_I64, 8},
};

static const struct type_info *parse_type(const char *text) {
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++)
        if (strcmp(TYPES[i].name, text) == 0)
            return &TYPES[i];
    fail(EXIT_USAGE, "unknown --type", text);
}

/* "1x512x896x3" -> dims; returns the element count (0 on overflow past 2**32). */
static uint64_t parse_dims(const char *text, uint32_t *dims, uint32_t *count) {
    uint64_t elements = 1;
    *count = 0;
    const char *p = text;
    while (*p) {
        char *end;
        unsigned long value = strtoul(p, &end, 10);
        if (end == p || (*end && *end != 'x' && *end != ',') || *count == MAX_DIMS)
            fail(EXIT_USAGE, "bad --dims (expected e.g. 1x512x896x3)", text);
        dims[(*count)++] = (uint32_t)value;
        elements *= value;
        if (elements > UINT32_MAX)
            fail(EXIT_USAGE, "--dims describe more than 4 GiB", text);
        p = *end ? end + 1 : end;
    }
    if (*count == 0)
        fail(EXIT_USAGE, "bad --dims (expected e.g. 1x512x896x3)", text);
    return elements;
}

/* expected: the size --dims promise; one byte more shows a longer stdin without a grow
 * (doubling from 1 MiB would copy 7 MB and touch 8 MB of fresh pages for a 5.5 MB tensor). */
static uint8_t *read_stdin(uint64_t expected, uint32_t *len_out) {
    size_t cap = expected < UINT32_MAX / 2 ? (size_t)expected + 1 : 1 << 20, len = 0;
    uint8_t *buf = xrealloc(NULL, cap);
    for (;;) {
        if (len == cap) {
            if (cap >= UINT32_MAX / 2)
                fail(EXIT_DATAERR, "stdin is larger than 2 GiB", "");
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len, stdin);
        len += n;
        if (n == 0) {
            if (ferror(stdin))
                fail(EXIT_NOINPUT, "cannot read stdin", "");
            break;
        }
    }
    *len_out = (uint32_t)len;
    return buf;
}

int main(int argc, char **argv) {
    const char *name = NULL, *dims_text = NULL, *config = NULL;
    const struct type_info *type = &TYPES[1];
    uint32_t output_index = 0, argmax_classes = 0;
    for (int i = 1; i < argc; i++) {
        const char *option = argv[i];
        if (i + 1 >= argc) {
            fputs(USAGE, stderr);
            fail(EXIT_USAGE, "missing value for", option);
        }
        const char *value = argv[++i];
        if (strcmp(option, "--name") == 0)
            name = value;
        else if (strcmp(option, "--dims") == 0)
            dims_text = value;
        else if (strcmp(option, "--type") == 0)
            type = parse_type(value);
        else if (strcmp(option, "--config") == 0)
            config = value;
        else if (strcmp(option, "--output") == 0)
            output_index = (uint32_t)strtoul(value, NULL, 10);
        else if (strcmp(option, "--argmax") == 0)
            argmax_classes = (uint32_t)strtoul(value, NULL, 10);
        else {
            fputs(USAGE, stderr);
            fail(EXIT_USAGE, "unknown option", option);
        }
    }
    if (!name || !dims_text) {
        fputs(USAGE, stderr);
        fail(EXIT_USAGE, "--name and --dims are required", "");
    }
    uint32_t dims[MAX_DIMS], dims_len;
    uint64_t expected = parse_dims(dims_text, dims, &dims_len) * type->size;

    uint32_t input_len;
    uint8_t *input = read_stdin(expected, &input_len);
    if (input_len != expected) {
        fprintf(stderr, "nn-pipe: stdin holds %u bytes; a %s %s tensor needs %llu\n", input_len, dims_text,
                type->name, (unsigned long long)expected);
        return EXIT_DATAERR;
    }

    wasi_nn_graph_t graph;
    int32_t err = config ? wasi_nn_load_by_name_with_config(name, strlen(name), config, strlen(config), &graph)
                         : wasi_nn_load_by_name(name, strlen(name), &graph);
    if (err)
        fail_nn("load_by_name", err);
    wasi_nn_context_t ctx;
    if ((err = wasi_nn_init_execution_context(graph, &ctx)))
        fail_nn("init_execution_context", err);
    wasi_nn_tensor_t tensor = {dims, dims_len, type->code, input, input_len};
    if ((err = wasi_nn_set_input(ctx, 0, &tensor)))
        fail_nn("set_input", err);
    free(input);
    if ((err = wasi_nn_compute(ctx)))
        fail_nn("compute", err);

    /* The too-small protocol: probe with no room for the size, then fetch exactly that. */
    uint32_t needed = 0, written = 0;
    err = wasi_nn_get_output(ctx, output_index, NULL, 0, &needed);
    if (err && err != WASI_NN_ERRNO_TOO_LARGE)
        fail_nn("get_output", err);
    uint8_t *output = xrealloc(NULL, needed);
    if (needed && (err = wasi_nn_get_output(ctx, output_index, output, needed, &written)))
        fail_nn("get_output", err);
    if (written != needed)
        fail(EXIT_PROTOCOL, "get_output wrote a different size than it asked for", "");
    if (argmax_classes) {
        needed = argmax_labels(output, needed, argmax_classes);
        if (needed == 0)
            fail(EXIT_USAGE, "--argmax: the output is not 1 x CLASSES x H x W f32 scores", "");
    }
    if (needed && fwrite(output, 1, needed, stdout) != needed)
        fail(EXIT_IOERR, "cannot write stdout", "");
    fflush(stdout);
    (void)wasi_nn_finalize_execution_context(ctx);
    (void)wasi_nn_unload(graph);
    return 0;
}

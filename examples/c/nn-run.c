/*
 * nn-run - generic WASI-NN command-line guest (wasm32-wasi).
 *
 * Loads a model (load, or load_by_name[_with_config] for preloaded models),
 * creates one execution context, feeds inputs read from files, computes,
 * fetches outputs with the too-small protocol (size probe with max_len 0 ->
 * too_large + needed size -> exact-size buffer), writes/prints them, then
 * finalizes the context and unloads the graph.
 *
 * Exit status: 0 on success; the wasi-nn errno of the first failing call;
 * 64 usage error; 66 an input file cannot be read; 70 the host broke the
 * get_output size protocol; 71 out of memory; 73 an output file cannot be
 * written. See examples/c/README.md.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "wasi_nn.h"

#define EXIT_USAGE 64    /* EX_USAGE */
#define EXIT_NOINPUT 66  /* EX_NOINPUT */
#define EXIT_PROTOCOL 70 /* EX_SOFTWARE */
#define EXIT_NOMEM 71    /* EX_OSERR */
#define EXIT_CANTCREAT 73 /* EX_CANTCREAT */

static const char USAGE[] =
    "usage: nn-run [--encoding NAME|NUMBER] [--target cpu|gpu|tpu|auto|NUMBER]\n"
    "              [--model PATH]...\n"
    "              [--name NAME [--config JSON|@PATH]]\n"
    "              [--input INDEX:TYPE:DIMS:PATH]...\n"
    "              [--output INDEX[:PATH]]...\n"
    "              [--repeat N] [--stream PATH] [--print] [--output-type TYPE] [--time]\n"
    "\n"
    "  --encoding     openvino onnx tensorflow pytorch tensorflowlite autodetect\n"
    "                 ggml neuralspeed whisper mlx piper chattts openvinogenai\n"
    "                 bitnet (case-insensitive), or a number sent as-is (default\n"
    "                 openvino)\n"
    "  --target       cpu gpu tpu auto, or a number sent as-is (default cpu)\n"
    "  --model PATH   one graph builder per --model, in order, for load()\n"
    "  --name NAME    load_by_name() a preloaded model instead of load();\n"
    "                 with --config: load_by_name_with_config() (@PATH reads a file)\n"
    "  --input        TYPE f16 f32 f64 u8 i32 i64 or a number sent as-is;\n"
    "                 DIMS like 1x3x224x224 (empty: no dims); PATH the raw bytes\n"
    "  --output       fetch output INDEX and write its bytes to PATH (if given);\n"
    "                 default when no --output: output 0, not written\n"
    "  --repeat N     run set_input+compute+get_output N times (default 1)\n"
    "  --stream PATH  compute with compute_single/get_output_single until\n"
    "                 end_of_sequence, then fini_single; tokens written to PATH\n"
    "  --print        print values of each output (first 5 and argmax, or text)\n"
    "  --output-type  f16 f32 f64 u8 i32 i64 text (default f32), for --print\n"
    "  --time         print 'time_ns N' per repetition: the set_input(s) +\n"
    "                 compute + get_output(s) of that round, CLOCK_MONOTONIC\n"
    "\n"
    "exit: 0 ok; wasi-nn errno of the failing call; 64 usage; 66 unreadable file;\n"
    "      70 host broke the get_output size protocol; 71 no memory; 73 cannot write\n";

/* ------------------------------------------------------------------------ */

static int have_graph = 0, have_ctx = 0;
static wasi_nn_graph_t graph;
static wasi_nn_context_t ctx;

static void cleanup_quietly(void) {
    if (have_ctx) {
        (void)wasi_nn_finalize_execution_context(ctx);
        have_ctx = 0;
    }
    if (have_graph) {
        (void)wasi_nn_unload(graph);
        have_graph = 0;
    }
}

static _Noreturn void die(int code) {
    cleanup_quietly();
    exit(code);
}

static _Noreturn void fail_nn(const char *call, int32_t err) {
    fprintf(stderr, "nn-run: %s failed: %s (errno %d)\n", call, wasi_nn_errno_name(err), (int)err);
    die((int)err);
}

static _Noreturn void usage_error(const char *fmt, const char *arg) {
    fputs("nn-run: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\n", stderr);
    fputs(USAGE, stderr);
    exit(EXIT_USAGE);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "nn-run: out of memory (%zu bytes)\n", n);
        die(EXIT_NOMEM);
    }
    return p;
}

static void *xrealloc(void *old, size_t n) {
    void *p = realloc(old, n ? n : 1);
    if (!p) {
        fprintf(stderr, "nn-run: out of memory (%zu bytes)\n", n);
        free(old);
        die(EXIT_NOMEM);
    }
    return p;
}

/* Read a whole file through WASI. Exits 66 naming the file on failure. */
static uint8_t *read_file(const char *path, uint32_t *len_out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "nn-run: cannot read %s: %s\n", path, strerror(errno));
        die(EXIT_NOINPUT);
    }
    /* Size the buffer from the file size when seekable; grow if it changes. */
    size_t cap = 1 << 16, len = 0;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size >= 0 && (unsigned long)size < SIZE_MAX)
            cap = (size_t)size + 1;
        if (fseek(f, 0, SEEK_SET) != 0) {
            fprintf(stderr, "nn-run: cannot read %s: %s\n", path, strerror(errno));
            fclose(f);
            die(EXIT_NOINPUT);
        }
    }
    uint8_t *buf = xmalloc(cap);
    for (;;) {
        if (len == cap) {
            if (cap > SIZE_MAX / 2) {
                fprintf(stderr, "nn-run: cannot read %s: file too large\n", path);
                free(buf);
                fclose(f);
                die(EXIT_NOINPUT);
            }
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f)) {
                fprintf(stderr, "nn-run: cannot read %s: %s\n", path, strerror(errno));
                free(buf);
                fclose(f);
                die(EXIT_NOINPUT);
            }
            break;
        }
    }
    fclose(f);
    *len_out = (uint32_t)len;
    return buf;
}

static void write_file(const char *path, const uint8_t *data, uint32_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "nn-run: cannot write %s: %s\n", path, strerror(errno));
        die(EXIT_CANTCREAT);
    }
    if ((len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        fprintf(stderr, "nn-run: cannot write %s: %s\n", path, strerror(errno));
        die(EXIT_CANTCREAT);
    }
}

/* ---- argument parsing ---------------------------------------------------- */

/* Parse an unsigned 32-bit number (decimal, 0x hex); returns 0 on failure. */
static int parse_u32(const char *s, size_t n, uint32_t *out) {
    char tmp[32];
    if (n == 0 || n >= sizeof tmp || s[0] == '-' || s[0] == '+' || s[0] == ' ')
        return 0;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    unsigned long long v = strtoull(tmp, &end, 0);
    if (errno || *end != '\0' || v > UINT32_MAX)
        return 0;
    *out = (uint32_t)v;
    return 1;
}

struct name_code {
    const char *name;
    uint32_t code;
};

static const struct name_code ENCODINGS[] = {
    {"openvino", WASI_NN_ENCODING_OPENVINO},
    {"onnx", WASI_NN_ENCODING_ONNX},
    {"tensorflow", WASI_NN_ENCODING_TENSORFLOW},
    {"pytorch", WASI_NN_ENCODING_PYTORCH},
    {"tensorflowlite", WASI_NN_ENCODING_TENSORFLOWLITE},
    {"tflite", WASI_NN_ENCODING_TENSORFLOWLITE},
    {"autodetect", WASI_NN_ENCODING_AUTODETECT},
    {"ggml", WASI_NN_ENCODING_GGML},
    {"neuralspeed", WASI_NN_ENCODING_NEURALSPEED},
    {"whisper", WASI_NN_ENCODING_WHISPER},
    {"mlx", WASI_NN_ENCODING_MLX},
    {"piper", WASI_NN_ENCODING_PIPER},
    {"chattts", WASI_NN_ENCODING_CHATTTS},
    {"openvinogenai", WASI_NN_ENCODING_OPENVINO_GENAI},
    {"bitnet", WASI_NN_ENCODING_BITNET},
    {NULL, 0},
};

static const struct name_code TARGETS[] = {
    {"cpu", WASI_NN_TARGET_CPU},
    {"gpu", WASI_NN_TARGET_GPU},
    {"tpu", WASI_NN_TARGET_TPU},
    {"auto", WASI_NN_TARGET_AUTO},
    {NULL, 0},
};

#define OUT_TEXT 1000u /* pseudo type for --output-type text */

static const struct name_code TYPES[] = {
    {"f16", WASI_NN_TYPE_F16},
    {"f32", WASI_NN_TYPE_F32},
    {"f64", WASI_NN_TYPE_F64},
    {"u8", WASI_NN_TYPE_U8},
    {"i32", WASI_NN_TYPE_I32},
    {"i64", WASI_NN_TYPE_I64},
    {NULL, 0},
};

static const char *type_name(uint32_t t) {
    for (const struct name_code *e = TYPES; e->name; e++)
        if (e->code == t)
            return e->name;
    return t == OUT_TEXT ? "text" : "?";
}

/* Name (case-insensitive) or number; returns 0 on failure. */
static int lookup(const struct name_code *table, const char *s, size_t n, uint32_t *out) {
    for (const struct name_code *e = table; e->name; e++) {
        if (strlen(e->name) == n && strncasecmp(e->name, s, n) == 0) {
            *out = e->code;
            return 1;
        }
    }
    return parse_u32(s, n, out);
}

struct input_spec {
    uint32_t index;
    uint32_t type;
    uint32_t *dims;
    uint32_t ndims;
    const char *path;
    uint8_t *data;
    uint32_t len;
};

struct output_spec {
    uint32_t index;
    const char *path; /* NULL: fetch and report only */
};

/* INDEX:TYPE:DIMS:PATH; PATH is everything after the third colon. */
static void parse_input(const char *arg, struct input_spec *in) {
    const char *c1 = strchr(arg, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    const char *c3 = c2 ? strchr(c2 + 1, ':') : NULL;
    if (!c3 || c3[1] == '\0')
        usage_error("--input wants INDEX:TYPE:DIMS:PATH, got '%s'", arg);
    if (!parse_u32(arg, (size_t)(c1 - arg), &in->index))
        usage_error("bad input index in '%s'", arg);
    if (!lookup(TYPES, c1 + 1, (size_t)(c2 - c1 - 1), &in->type))
        usage_error("bad tensor type in '%s'", arg);
    const char *d = c2 + 1;
    size_t dlen = (size_t)(c3 - d);
    in->ndims = 0;
    in->dims = NULL;
    if (dlen > 0) {
        uint32_t count = 1;
        for (size_t i = 0; i < dlen; i++)
            if (d[i] == 'x' || d[i] == 'X' || d[i] == ',')
                count++;
        in->dims = xmalloc(count * sizeof(uint32_t));
        const char *p = d;
        for (uint32_t k = 0; k < count; k++) {
            const char *q = p;
            while (q < c3 && *q != 'x' && *q != 'X' && *q != ',')
                q++;
            if (!parse_u32(p, (size_t)(q - p), &in->dims[k]))
                usage_error("bad dims in '%s'", arg);
            p = q + 1;
        }
        in->ndims = count;
    }
    in->path = c3 + 1;
    in->data = NULL;
    in->len = 0;
}

static void parse_output(const char *arg, struct output_spec *out) {
    const char *c = strchr(arg, ':');
    size_t n = c ? (size_t)(c - arg) : strlen(arg);
    if (!parse_u32(arg, n, &out->index))
        usage_error("--output wants INDEX[:PATH], got '%s'", arg);
    out->path = (c && c[1]) ? c + 1 : NULL;
    if (c && !c[1])
        usage_error("--output wants INDEX[:PATH], got '%s'", arg);
}

/* ---- outputs --------------------------------------------------------------- */

typedef int32_t (*get_output_fn)(wasi_nn_context_t, uint32_t, uint8_t *, uint32_t, uint32_t *);

/*
 * Fetch output `index` with the too-small protocol: probe with max_len 0,
 * expect too_large (7) and the needed size, allocate exactly that, fetch
 * again and check the byte count. A 0 return on the probe means "empty".
 * When *len_out holds the size from an earlier round, that size is tried first.
 */
static uint8_t *fetch_output(int single, uint32_t index, uint32_t *len_out) {
    get_output_fn fn = single ? wasi_nn_get_output_single : wasi_nn_get_output;
    const char *call = single ? "get_output_single" : "get_output";
    if (*len_out != 0) {
        /* A size learnt on an earlier round: one call, as a guest that knows its model does. */
        uint8_t *known = xmalloc(*len_out);
        uint32_t written = 0;
        int32_t first = fn(ctx, index, known, *len_out, &written);
        if (first == WASI_NN_ERRNO_SUCCESS && written == *len_out)
            return known;
        free(known);
        if (first != WASI_NN_ERRNO_TOO_LARGE && first != WASI_NN_ERRNO_SUCCESS)
            fail_nn(call, first);
    }
    uint8_t probe[4] = {0};
    uint32_t need = 0;
    int32_t err = fn(ctx, index, probe, 0, &need);
    if (err == WASI_NN_ERRNO_SUCCESS) {
        if (need != 0) {
            fprintf(stderr, "nn-run: %s returned success with max_len 0 but reported %u bytes\n",
                    call, (unsigned)need);
            die(EXIT_PROTOCOL);
        }
        *len_out = 0;
        return xmalloc(0);
    }
    if (err != WASI_NN_ERRNO_TOO_LARGE)
        fail_nn(call, err);
    if (need == 0) {
        fprintf(stderr, "nn-run: %s returned too_large for max_len 0 but needs 0 bytes\n", call);
        die(EXIT_PROTOCOL);
    }
    uint8_t *buf = xmalloc(need);
    uint32_t written = 0;
    err = fn(ctx, index, buf, need, &written);
    if (err != WASI_NN_ERRNO_SUCCESS) {
        free(buf);
        fail_nn(call, err);
    }
    if (written != need) {
        fprintf(stderr, "nn-run: %s wrote %u bytes, but the size probe said %u\n", call,
                (unsigned)written, (unsigned)need);
        free(buf);
        die(EXIT_PROTOCOL);
    }
    *len_out = need;
    return buf;
}

static size_t type_size(uint32_t t) {
    switch (t) {
    case WASI_NN_TYPE_F16: return 2;
    case WASI_NN_TYPE_F32: return 4;
    case WASI_NN_TYPE_F64: return 8;
    case WASI_NN_TYPE_U8: return 1;
    case WASI_NN_TYPE_I32: return 4;
    case WASI_NN_TYPE_I64: return 8;
    default: return 1;
    }
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            bits = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Element i as a double (little-endian, unaligned-safe). */
static double element(const uint8_t *p, uint32_t t, size_t i) {
    switch (t) {
    case WASI_NN_TYPE_F16: {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        return half_to_float(h);
    }
    case WASI_NN_TYPE_F32: {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    case WASI_NN_TYPE_F64: {
        double d;
        memcpy(&d, p + 8 * i, 8);
        return d;
    }
    case WASI_NN_TYPE_I32: {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        return v;
    }
    case WASI_NN_TYPE_I64: {
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        return (double)v;
    }
    default: return p[i];
    }
}

static void print_element(const uint8_t *p, uint32_t t, size_t i) {
    if (t == WASI_NN_TYPE_I64) {
        int64_t v;
        memcpy(&v, p + 8 * i, 8);
        printf("%lld", (long long)v);
    } else if (t == WASI_NN_TYPE_I32 || t == WASI_NN_TYPE_U8) {
        printf("%.0f", element(p, t, i));
    } else {
        printf("%g", element(p, t, i));
    }
}

static void print_text(const uint8_t *p, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\r')
            fputs("\\r", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c); /* UTF-8 bytes pass through */
    }
    putchar('"');
}

/* Rest of the "output I: N bytes" line for --print. */
static void print_values(const uint8_t *p, uint32_t len, uint32_t t) {
    if (t == OUT_TEXT) {
        fputs(", text: ", stdout);
        print_text(p, len);
        return;
    }
    size_t esz = type_size(t);
    size_t count = len / esz;
    printf(", %s[%zu]", type_name(t), count);
    if (count > 0) {
        fputs(" first:", stdout);
        for (size_t i = 0; i < count && i < 5; i++) {
            putchar(' ');
            print_element(p, t, i);
        }
        size_t best = 0;
        double best_v = element(p, t, 0);
        for (size_t i = 1; i < count; i++) {
            double v = element(p, t, i);
            if (v > best_v || (isnan(best_v) && !isnan(v))) {
                best_v = v;
                best = i;
            }
        }
        printf(", argmax: %zu (", best);
        print_element(p, t, best);
        putchar(')');
    }
    if (len % esz)
        printf(", %zu trailing bytes", (size_t)(len % esz));
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv) {
    uint32_t encoding = WASI_NN_ENCODING_OPENVINO;
    uint32_t target = WASI_NN_TARGET_CPU;
    const char *name = NULL, *config = NULL, *stream_path = NULL;
    uint32_t repeat = 1, out_type = WASI_NN_TYPE_F32;
    int do_print = 0, do_time = 0;

    const char **models = xmalloc((size_t)argc * sizeof(char *));
    struct input_spec *inputs = xmalloc((size_t)argc * sizeof(struct input_spec));
    struct output_spec *outputs = xmalloc(((size_t)argc + 1) * sizeof(struct output_spec));
    uint32_t n_models = 0, n_inputs = 0, n_outputs = 0;

    if (argc < 2)
        usage_error("%s", "no arguments");

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = NULL;
        char optbuf[32];
        /* --opt=value form */
        const char *eq = strncmp(opt, "--", 2) == 0 ? strchr(opt, '=') : NULL;
        if (eq && (size_t)(eq - opt) < sizeof optbuf) {
            memcpy(optbuf, opt, (size_t)(eq - opt));
            optbuf[eq - opt] = '\0';
            opt = optbuf;
            val = eq + 1;
        }
#define NEED_VALUE()                                                   \
    do {                                                               \
        if (!val) {                                                    \
            if (i + 1 >= argc)                                         \
                usage_error("option %s needs a value", opt);           \
            val = argv[++i];                                           \
        }                                                              \
    } while (0)
        if (!strcmp(opt, "-h") || !strcmp(opt, "--help")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(opt, "--encoding")) {
            NEED_VALUE();
            if (!lookup(ENCODINGS, val, strlen(val), &encoding))
                usage_error("unknown encoding '%s'", val);
        } else if (!strcmp(opt, "--target")) {
            NEED_VALUE();
            if (!lookup(TARGETS, val, strlen(val), &target))
                usage_error("unknown target '%s'", val);
        } else if (!strcmp(opt, "--model")) {
            NEED_VALUE();
            models[n_models++] = val;
        } else if (!strcmp(opt, "--name")) {
            NEED_VALUE();
            name = val;
        } else if (!strcmp(opt, "--config")) {
            NEED_VALUE();
            config = val;
        } else if (!strcmp(opt, "--input")) {
            NEED_VALUE();
            parse_input(val, &inputs[n_inputs++]);
        } else if (!strcmp(opt, "--output")) {
            NEED_VALUE();
            parse_output(val, &outputs[n_outputs++]);
        } else if (!strcmp(opt, "--repeat")) {
            NEED_VALUE();
            if (!parse_u32(val, strlen(val), &repeat) || repeat == 0)
                usage_error("bad --repeat '%s'", val);
        } else if (!strcmp(opt, "--stream")) {
            NEED_VALUE();
            stream_path = val;
        } else if (!strcmp(opt, "--print")) {
            if (val)
                usage_error("%s takes no value", opt);
            do_print = 1;
        } else if (!strcmp(opt, "--time")) {
            if (val)
                usage_error("%s takes no value", opt);
            do_time = 1;
        } else if (!strcmp(opt, "--output-type")) {
            NEED_VALUE();
            if (!strcasecmp(val, "text"))
                out_type = OUT_TEXT;
            else if (!lookup(TYPES, val, strlen(val), &out_type) || out_type > WASI_NN_TYPE_I64)
                usage_error("bad --output-type '%s'", val);
        } else {
            usage_error("unknown argument '%s'", argv[i]);
        }
#undef NEED_VALUE
    }

    if (name && n_models)
        usage_error("%s", "--name and --model are mutually exclusive");
    if (!name && !n_models)
        usage_error("%s", "need --model PATH (one or more) or --name NAME");
    if (config && !name)
        usage_error("%s", "--config needs --name");
    if (n_outputs == 0) {
        outputs[0].index = 0;
        outputs[0].path = NULL;
        n_outputs = 1;
    }

    /* ---- read every file first, so a missing file fails before wasi-nn -- */
    wasi_nn_graph_builder_t *builders = xmalloc(n_models * sizeof *builders);
    uint8_t **blobs = xmalloc(n_models * sizeof *blobs);
    for (uint32_t k = 0; k < n_models; k++) {
        uint32_t len;
        blobs[k] = read_file(models[k], &len);
        builders[k].ptr = blobs[k];
        builders[k].len = len;
    }
    for (uint32_t k = 0; k < n_inputs; k++)
        inputs[k].data = read_file(inputs[k].path, &inputs[k].len);
    uint8_t *config_buf = NULL;
    uint32_t config_len = 0;
    if (config) {
        if (config[0] == '@') {
            config_buf = read_file(config + 1, &config_len);
        } else {
            config_len = (uint32_t)strlen(config);
            config_buf = xmalloc(config_len);
            memcpy(config_buf, config, config_len);
        }
    }

    /* ---- load ------------------------------------------------------------ */
    int32_t err;
    if (name) {
        if (config) {
            err = wasi_nn_load_by_name_with_config(name, (uint32_t)strlen(name),
                                                   (const char *)config_buf, config_len, &graph);
            if (err)
                fail_nn("load_by_name_with_config", err);
        } else {
            err = wasi_nn_load_by_name(name, (uint32_t)strlen(name), &graph);
            if (err)
                fail_nn("load_by_name", err);
        }
    } else {
        err = wasi_nn_load(builders, n_models, encoding, target, &graph);
        if (err)
            fail_nn("load", err);
    }
    have_graph = 1;
    for (uint32_t k = 0; k < n_models; k++)
        free(blobs[k]);
    free(blobs);
    free(builders);
    free(config_buf);

    err = wasi_nn_init_execution_context(graph, &ctx);
    if (err)
        fail_nn("init_execution_context", err);
    have_ctx = 1;

    /* ---- run --------------------------------------------------------------- */
    uint8_t **out_bufs = xmalloc(n_outputs * sizeof *out_bufs);
    uint32_t *out_lens = xmalloc(n_outputs * sizeof *out_lens);
    memset(out_lens, 0, n_outputs * sizeof *out_lens); /* 0: size not known yet */
    for (uint32_t r = 0; r < repeat; r++) {
        int last = (r + 1 == repeat);
        struct timespec t0, t1;
        if (do_time)
            clock_gettime(CLOCK_MONOTONIC, &t0);
        for (uint32_t k = 0; k < n_inputs; k++) {
            wasi_nn_tensor_t t = {
                .dims = inputs[k].dims,
                .dims_len = inputs[k].ndims,
                .type = inputs[k].type,
                .data = inputs[k].data,
                .data_len = inputs[k].len,
            };
            err = wasi_nn_set_input(ctx, inputs[k].index, &t);
            if (err)
                fail_nn("set_input", err);
        }

        if (stream_path) {
            uint8_t *text = xmalloc(0);
            size_t text_len = 0;
            uint32_t tokens = 0;
            for (;;) {
                err = wasi_nn_compute_single(ctx);
                if (err == WASI_NN_ERRNO_END_OF_SEQUENCE)
                    break;
                if (err) {
                    free(text);
                    fail_nn("compute_single", err);
                }
                uint32_t n;
                uint8_t *tok = fetch_output(1, 0, &n);
                text = xrealloc(text, text_len + n);
                memcpy(text + text_len, tok, n);
                text_len += n;
                tokens++;
                free(tok);
            }
            err = wasi_nn_fini_single(ctx);
            if (err) {
                free(text);
                fail_nn("fini_single", err);
            }
            if (last) {
                write_file(stream_path, text, (uint32_t)text_len);
                printf("stream: %u tokens, %zu bytes", (unsigned)tokens, text_len);
                if (do_print) {
                    fputs(", text: ", stdout);
                    print_text(text, text_len);
                }
                putchar('\n');
            }
            free(text);
        } else {
            err = wasi_nn_compute(ctx);
            if (err)
                fail_nn("compute", err);
        }

        for (uint32_t k = 0; k < n_outputs; k++)
            out_bufs[k] = fetch_output(0, outputs[k].index, &out_lens[k]);
        if (do_time) {
            /* Stopped before any file is written or line printed. */
            clock_gettime(CLOCK_MONOTONIC, &t1);
            long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
            printf("time_ns %lld\n", ns);
        }
        for (uint32_t k = 0; k < n_outputs; k++) {
            if (last) {
                if (outputs[k].path)
                    write_file(outputs[k].path, out_bufs[k], out_lens[k]);
                printf("output %u: %u bytes", (unsigned)outputs[k].index, (unsigned)out_lens[k]);
                if (do_print)
                    print_values(out_bufs[k], out_lens[k], out_type);
                putchar('\n');
            }
            free(out_bufs[k]);
        }
    }
    free(out_bufs);
    free(out_lens);
    fflush(stdout);

    /* ---- release ------------------------------------------------------------- */
    have_ctx = 0;
    err = wasi_nn_finalize_execution_context(ctx);
    if (err)
        fail_nn("finalize_execution_context", err);
    have_graph = 0;
    err = wasi_nn_unload(graph);
    if (err)
        fail_nn("unload", err);

    for (uint32_t k = 0; k < n_inputs; k++) {
        free(inputs[k].dims);
        free(inputs[k].data);
    }
    free(inputs);
    free(outputs);
    free(models);
    return 0;
}

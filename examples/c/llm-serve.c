/*
 * llm-serve - the GGML guest behind wasinn serve's OpenAI-compatible routes (wasm32-wasi).
 *
 *   llm-serve [--config JSON] [--meta JSON] [--max-tokens N] [--stop TEXT]... NAME
 *   llm-serve --embedding [--config JSON] NAME
 *
 * Reads stdin whole as the prompt (UTF-8 bytes). Loads the preloaded model NAME
 * (load_by_name, or load_by_name_with_config with --config), sets --meta as the metadata
 * (set_input index 1: temp, top-p, seed, ...) and the prompt (set_input index 0, U8).
 *
 * Generation runs compute_single / get_output_single token by token, and every token's text
 * goes to stdout at once as one line (flushed), so a server can forward it as it comes:
 *
 *   text <hex bytes>\n          zero or more; their concatenation is the completion
 *   done <stop|length> <prompt tokens> <completion tokens>\n
 *
 * It stops at the end-of-generation token (whose text is not part of the completion), after
 * --max-tokens tokens, when the context is full (101; that token is kept), or where the text
 * first contains a --stop string (the completion ends before it, as OpenAI's `stop`; only a
 * tail that could begin a stop string is held back, until the next token says).
 *
 * With --embedding it runs compute once and writes the backend's embedding JSON:
 *
 *   embedding {"n_embedding": N, "embedding": [...]}\n
 *   done stop <prompt tokens> 0\n
 *
 * Exit status (sysexits where there is one, so a server can tell whose fault it was):
 *   0 ok; 64 bad arguments; 65 the prompt is empty or longer than the context allows (102);
 *   66 stdin unreadable; 71 out of memory; 74 stdout unwritable (the client went away);
 *   otherwise the wasi-nn errno of the failing call.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wasi_nn.h"

#define EXIT_USAGE 64
#define EXIT_DATAERR 65
#define EXIT_NOINPUT 66
#define EXIT_NOMEM 71
#define EXIT_IOERR 74
#define MAX_STOPS 8
#define PIECE_BYTES 4096
#define METADATA_BYTES 1024

static const char USAGE[] = "usage: llm-serve [--embedding] [--config JSON] [--meta JSON] [--max-tokens N]\n"
                            "                 [--stop TEXT]... NAME   (the prompt is stdin)\n";

static _Noreturn void fail(int code, const char *what, const char *detail) {
    fprintf(stderr, "llm-serve: %s%s%s\n", what, detail[0] ? ": " : "", detail);
    exit(code);
}

static _Noreturn void fail_nn(const char *call, int32_t err) {
    if (err == WASI_NN_ERRNO_PROMPT_TOO_LONG) {
        fprintf(stderr, "llm-serve: the prompt is longer than the model's context allows (%s: errno 102)\n", call);
        exit(EXIT_DATAERR);
    }
    fprintf(stderr, "llm-serve: %s failed: %s (errno %d)\n", call, wasi_nn_errno_name(err), (int)err);
    exit((int)err);
}

static void *xrealloc(void *old, size_t n) {
    void *p = realloc(old, n ? n : 1);
    if (!p)
        fail(EXIT_NOMEM, "out of memory", "");
    return p;
}

static uint8_t *read_stdin(uint32_t *len_out) {
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = xrealloc(NULL, cap);
    for (;;) {
        if (len == cap) {
            if (cap >= UINT32_MAX / 2)
                fail(EXIT_DATAERR, "the prompt is larger than 2 GiB", "");
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

static void flush_or_exit(void) {
    if (fflush(stdout) != 0 || ferror(stdout))
        exit(EXIT_IOERR); /* the server stopped listening: nobody is left to tell */
}

static void write_hex_line(const uint8_t *data, size_t len) {
    static const char digits[] = "0123456789abcdef";
    fputs("text ", stdout);
    for (size_t i = 0; i < len; i++) {
        putchar(digits[data[i] >> 4]);
        putchar(digits[data[i] & 15]);
    }
    putchar('\n');
    flush_or_exit();
}

static int32_t set_bytes(wasi_nn_context_t ctx, uint32_t index, const uint8_t *data, uint32_t len) {
    uint32_t dims[1] = {len};
    wasi_nn_tensor_t tensor = {dims, 1, WASI_NN_TYPE_U8, data, len};
    return wasi_nn_set_input(ctx, index, &tensor);
}

/* "input_tokens": N from the metadata output (index 1). */
static long prompt_tokens(wasi_nn_context_t ctx) {
    static char metadata[METADATA_BYTES + 1];
    uint32_t written = 0;
    int32_t err = wasi_nn_get_output(ctx, 1, (uint8_t *)metadata, METADATA_BYTES, &written);
    if (err)
        fail_nn("get_output(1)", err);
    metadata[written] = 0;
    const char *found = strstr(metadata, "\"input_tokens\":");
    return found ? strtol(found + strlen("\"input_tokens\":"), NULL, 10) : -1;
}

/* Where the first stop string starts in text[from..len), or -1. */
static long find_stop(const uint8_t *text, size_t from, size_t len, const char **stops, int stop_count) {
    long first = -1;
    for (int s = 0; s < stop_count; s++) {
        size_t n = strlen(stops[s]);
        for (size_t at = from; n && at + n <= len && (first < 0 || (long)at < first); at++) {
            if (memcmp(text + at, stops[s], n) == 0) {
                first = (long)at;
                break;
            }
        }
    }
    return first;
}

/* How many of the last bytes of text[from..len) are the start of a stop string: those wait for
 * the next token, the rest can go (as llama-server holds back only a partial stop). */
static size_t partial_stop(const uint8_t *text, size_t from, size_t len, const char **stops, int stop_count) {
    size_t longest = 0;
    for (int s = 0; s < stop_count; s++) {
        size_t n = strlen(stops[s]);
        size_t k = n ? n - 1 : 0;
        if (k > len - from)
            k = len - from;
        for (; k > longest; k--) {
            if (memcmp(text + len - k, stops[s], k) == 0) {
                longest = k;
                break;
            }
        }
    }
    return longest;
}

static int embed(wasi_nn_context_t ctx) {
    int32_t err = wasi_nn_compute(ctx);
    if (err)
        fail_nn("compute", err);
    uint32_t needed = 0, written = 0;
    err = wasi_nn_get_output(ctx, 0, NULL, 0, &needed);
    if (err && err != WASI_NN_ERRNO_TOO_LARGE)
        fail_nn("get_output", err);
    uint8_t *json = xrealloc(NULL, needed);
    if ((err = wasi_nn_get_output(ctx, 0, json, needed, &written)))
        fail_nn("get_output", err);
    fputs("embedding ", stdout);
    fwrite(json, 1, written, stdout);
    printf("\ndone stop %ld 0\n", prompt_tokens(ctx));
    flush_or_exit();
    return 0;
}

static int generate(wasi_nn_context_t ctx, long max_tokens, const char **stops, int stop_count) {
    static uint8_t piece[PIECE_BYTES];
    uint8_t *text = NULL;
    size_t len = 0, cap = 0, sent = 0;
    long tokens = 0;
    const char *reason = "length";
    while (max_tokens < 0 || tokens < max_tokens) {
        int32_t err = wasi_nn_compute_single(ctx);
        if (err == WASI_NN_ERRNO_END_OF_SEQUENCE) {
            reason = "stop";
            break;
        }
        if (err && err != WASI_NN_ERRNO_CONTEXT_FULL)
            fail_nn("compute_single", err);
        uint32_t written = 0;
        int32_t got = wasi_nn_get_output_single(ctx, 0, piece, PIECE_BYTES, &written);
        if (got)
            fail_nn("get_output_single", got);
        tokens++;
        if (len + written > cap) {
            cap = (len + written) * 2;
            text = xrealloc(text, cap);
        }
        memcpy(text + len, piece, written);
        len += written;
        long stop_at = find_stop(text, sent, len, stops, stop_count);
        if (stop_at >= 0) {
            if ((size_t)stop_at > sent)
                write_hex_line(text + sent, (size_t)stop_at - sent);
            sent = len;
            reason = "stop";
            break;
        }
        size_t held = partial_stop(text, sent, len, stops, stop_count);
        if (len - held > sent) {
            write_hex_line(text + sent, len - held - sent);
            sent = len - held;
        }
        if (err == WASI_NN_ERRNO_CONTEXT_FULL)
            break;
    }
    if (len > sent)
        write_hex_line(text + sent, len - sent);
    printf("done %s %ld %ld\n", reason, prompt_tokens(ctx), tokens);
    flush_or_exit();
    wasi_nn_fini_single(ctx);
    free(text);
    return 0;
}

int main(int argc, char **argv) {
    const char *name = NULL, *config = NULL, *meta = NULL;
    const char *stops[MAX_STOPS];
    int stop_count = 0, embedding = 0;
    long max_tokens = -1;
    for (int i = 1; i < argc; i++) {
        const char *option = argv[i];
        if (strcmp(option, "--embedding") == 0) {
            embedding = 1;
            continue;
        }
        if (strncmp(option, "--", 2) != 0) {
            if (name)
                fail(EXIT_USAGE, "more than one model name", option);
            name = option;
            continue;
        }
        if (i + 1 >= argc) {
            fputs(USAGE, stderr);
            fail(EXIT_USAGE, "missing value for", option);
        }
        const char *value = argv[++i];
        if (strcmp(option, "--config") == 0)
            config = value;
        else if (strcmp(option, "--meta") == 0)
            meta = value;
        else if (strcmp(option, "--max-tokens") == 0)
            max_tokens = strtol(value, NULL, 10);
        else if (strcmp(option, "--stop") == 0) {
            if (stop_count == MAX_STOPS)
                fail(EXIT_USAGE, "too many --stop strings", value);
            stops[stop_count++] = value;
        } else {
            fputs(USAGE, stderr);
            fail(EXIT_USAGE, "unknown option", option);
        }
    }
    if (!name) {
        fputs(USAGE, stderr);
        fail(EXIT_USAGE, "the model NAME is required", "");
    }
    uint32_t prompt_len;
    uint8_t *prompt = read_stdin(&prompt_len);
    if (prompt_len == 0)
        fail(EXIT_DATAERR, "the prompt is empty", "");

    wasi_nn_graph_t graph;
    int32_t err = config ? wasi_nn_load_by_name_with_config(name, strlen(name), config, strlen(config), &graph)
                         : wasi_nn_load_by_name(name, strlen(name), &graph);
    if (err)
        fail_nn("load_by_name", err);
    wasi_nn_context_t ctx;
    if ((err = wasi_nn_init_execution_context(graph, &ctx)))
        fail_nn("init_execution_context", err);
    if (meta && (err = set_bytes(ctx, 1, (const uint8_t *)meta, (uint32_t)strlen(meta))))
        fail_nn("set_input(1, metadata)", err);
    if ((err = set_bytes(ctx, 0, prompt, prompt_len)))
        fail_nn("set_input(0, prompt)", err);
    free(prompt);
    return embedding ? embed(ctx) : generate(ctx, max_tokens, stops, stop_count);
}

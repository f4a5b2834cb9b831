/*
 * wasi_nn.h - C declarations of the WasmEdge `wasi_ephemeral_nn` host ABI
 * for guests compiled with clang --target=wasm32-wasi.
 *
 * Contract: /work/shared/spec/wasi-nn-abi.md (sections 1-4). Every import
 * takes i32 parameters and returns one i32 errno (0 = success). Handles are
 * u32; every out-pointer targets a 4-byte little-endian u32. Only functions a
 * guest actually calls end up in its import section.
 */
#ifndef WASI_NN_H
#define WASI_NN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WASI_NN_IMPORT(name) \
    __attribute__((import_module("wasi_ephemeral_nn"), import_name(name)))

/* ---- Errno (spec 3.1, WasmEdge HEAD numbering) -------------------------- */
typedef int32_t wasi_nn_errno_t;
enum {
    WASI_NN_ERRNO_SUCCESS = 0,
    WASI_NN_ERRNO_INVALID_ARGUMENT = 1,
    WASI_NN_ERRNO_INVALID_ENCODING = 2,
    WASI_NN_ERRNO_MISSING_MEMORY = 3,
    WASI_NN_ERRNO_BUSY = 4,
    WASI_NN_ERRNO_RUNTIME_ERROR = 5,
    WASI_NN_ERRNO_UNSUPPORTED_OPERATION = 6,
    WASI_NN_ERRNO_TOO_LARGE = 7,
    WASI_NN_ERRNO_NOT_FOUND = 8,
    WASI_NN_ERRNO_END_OF_SEQUENCE = 100,
    WASI_NN_ERRNO_CONTEXT_FULL = 101,
    WASI_NN_ERRNO_PROMPT_TOO_LONG = 102,
    WASI_NN_ERRNO_MODEL_NOT_FOUND = 103,
};

/* ---- Graph encoding (spec 3.2, WasmEdge numbering, not WIT) ------------- */
typedef uint32_t wasi_nn_encoding_t;
enum {
    WASI_NN_ENCODING_OPENVINO = 0,
    WASI_NN_ENCODING_ONNX = 1,
    WASI_NN_ENCODING_TENSORFLOW = 2,
    WASI_NN_ENCODING_PYTORCH = 3,
    WASI_NN_ENCODING_TENSORFLOWLITE = 4,
    WASI_NN_ENCODING_AUTODETECT = 5, /* not implemented by WasmEdge: errno 2 */
    WASI_NN_ENCODING_GGML = 6,
    WASI_NN_ENCODING_NEURALSPEED = 7,
    /* 8 is unassigned */
    WASI_NN_ENCODING_WHISPER = 9,
    WASI_NN_ENCODING_MLX = 10,
    WASI_NN_ENCODING_PIPER = 11,
    WASI_NN_ENCODING_CHATTTS = 12,
    WASI_NN_ENCODING_OPENVINO_GENAI = 13,
    WASI_NN_ENCODING_BITNET = 14,
};

/* ---- Execution target (spec 3.3) ---------------------------------------- */
typedef uint32_t wasi_nn_target_t;
enum {
    WASI_NN_TARGET_CPU = 0,
    WASI_NN_TARGET_GPU = 1,
    WASI_NN_TARGET_TPU = 2,
    WASI_NN_TARGET_AUTO = 3, /* rejected by load() with errno 1; preload only */
};

/* ---- Tensor type (spec 3.4, current numbering) -------------------------- */
typedef uint32_t wasi_nn_tensor_type_t;
enum {
    WASI_NN_TYPE_F16 = 0,
    WASI_NN_TYPE_F32 = 1,
    WASI_NN_TYPE_F64 = 2, /* rejected by WasmEdge set_input */
    WASI_NN_TYPE_U8 = 3,
    WASI_NN_TYPE_I32 = 4,
    WASI_NN_TYPE_I64 = 5, /* rejected by WasmEdge set_input */
};

/* ---- Guest memory layouts (spec 2.2, 2.3) ------------------------------- */

/* One entry of the graph-builder array passed to load(): 8 bytes. */
typedef struct wasi_nn_graph_builder {
    const uint8_t *ptr; /* u32 on wasm32 */
    uint32_t len;       /* blob length in bytes */
} wasi_nn_graph_builder_t;

/* The tensor record passed to set_input(): 20 bytes, 4-byte aligned. */
typedef struct wasi_nn_tensor {
    const uint32_t *dims;       /* offset 0: pointer to u32 dimensions */
    uint32_t dims_len;          /* offset 4: number of dimensions */
    wasi_nn_tensor_type_t type; /* offset 8: type code (low byte counts) */
    const uint8_t *data;        /* offset 12: raw tensor bytes */
    uint32_t data_len;          /* offset 16: data length in bytes */
} wasi_nn_tensor_t;

#if defined(__wasm32__)
_Static_assert(sizeof(wasi_nn_graph_builder_t) == 8, "builder entry must be 8 bytes");
_Static_assert(sizeof(wasi_nn_tensor_t) == 20, "tensor record must be 20 bytes");
_Static_assert(offsetof(wasi_nn_tensor_t, type) == 8, "tensor type at offset 8");
_Static_assert(offsetof(wasi_nn_tensor_t, data) == 12, "tensor data at offset 12");
_Static_assert(offsetof(wasi_nn_tensor_t, data_len) == 16, "tensor data_len at offset 16");
#endif

typedef uint32_t wasi_nn_graph_t;
typedef uint32_t wasi_nn_context_t;

/* ---- Imports (spec 1.2); all parameters and results are wasm i32 ------- */

WASI_NN_IMPORT("load")
int32_t wasi_nn_load(const wasi_nn_graph_builder_t *builders, uint32_t builder_count,
                     wasi_nn_encoding_t encoding, wasi_nn_target_t target,
                     wasi_nn_graph_t *graph_out);

WASI_NN_IMPORT("load_by_name")
int32_t wasi_nn_load_by_name(const char *name, uint32_t name_len, wasi_nn_graph_t *graph_out);

WASI_NN_IMPORT("load_by_name_with_config")
int32_t wasi_nn_load_by_name_with_config(const char *name, uint32_t name_len,
                                         const char *config, uint32_t config_len,
                                         wasi_nn_graph_t *graph_out);

WASI_NN_IMPORT("init_execution_context")
int32_t wasi_nn_init_execution_context(wasi_nn_graph_t graph, wasi_nn_context_t *ctx_out);

WASI_NN_IMPORT("set_input")
int32_t wasi_nn_set_input(wasi_nn_context_t ctx, uint32_t index, const wasi_nn_tensor_t *tensor);

WASI_NN_IMPORT("compute")
int32_t wasi_nn_compute(wasi_nn_context_t ctx);

WASI_NN_IMPORT("get_output")
int32_t wasi_nn_get_output(wasi_nn_context_t ctx, uint32_t index, uint8_t *out_buf,
                           uint32_t out_buf_max_len, uint32_t *bytes_written);

WASI_NN_IMPORT("compute_single")
int32_t wasi_nn_compute_single(wasi_nn_context_t ctx);

WASI_NN_IMPORT("get_output_single")
int32_t wasi_nn_get_output_single(wasi_nn_context_t ctx, uint32_t index, uint8_t *out_buf,
                                  uint32_t out_buf_max_len, uint32_t *bytes_written);

WASI_NN_IMPORT("fini_single")
int32_t wasi_nn_fini_single(wasi_nn_context_t ctx);

WASI_NN_IMPORT("unload")
int32_t wasi_nn_unload(wasi_nn_graph_t graph);

WASI_NN_IMPORT("finalize_execution_context")
int32_t wasi_nn_finalize_execution_context(wasi_nn_context_t ctx);

#undef WASI_NN_IMPORT

/* Name of an errno value ("invalid_argument", ...), "unknown" otherwise. */
static inline const char *wasi_nn_errno_name(int32_t err) {
    switch (err) {
    case WASI_NN_ERRNO_SUCCESS: return "success";
    case WASI_NN_ERRNO_INVALID_ARGUMENT: return "invalid_argument";
    case WASI_NN_ERRNO_INVALID_ENCODING: return "invalid_encoding";
    case WASI_NN_ERRNO_MISSING_MEMORY: return "missing_memory";
    case WASI_NN_ERRNO_BUSY: return "busy";
    case WASI_NN_ERRNO_RUNTIME_ERROR: return "runtime_error";
    case WASI_NN_ERRNO_UNSUPPORTED_OPERATION: return "unsupported_operation";
    case WASI_NN_ERRNO_TOO_LARGE: return "too_large";
    case WASI_NN_ERRNO_NOT_FOUND: return "not_found";
    case WASI_NN_ERRNO_END_OF_SEQUENCE: return "end_of_sequence";
    case WASI_NN_ERRNO_CONTEXT_FULL: return "context_full";
    case WASI_NN_ERRNO_PROMPT_TOO_LONG: return "prompt_too_long";
    case WASI_NN_ERRNO_MODEL_NOT_FOUND: return "model_not_found";
    default: return "unknown";
    }
}

#ifdef __cplusplus
}
#endif

#endif /* WASI_NN_H */

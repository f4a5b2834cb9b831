/*
 * A guest of WasmEdge's TensorFlow plug-ins (wasmedge_tensorflow, wasmedge_tensorflowlite,
 * wasmedge_image), calling the imports as the Rust crate wasmedge_tensorflow_interface 0.3.0
 * does. One action per run, chosen by argv[1]:
 *
 *   mobilenet MODEL.pb IMAGE        the mobilenet_v2 example's sequence; writes image.bin, out.bin
 *   mtcnn MODEL.pb PIXELS.f32 H W   the mtcnn example's sequence on raw BGR f32 pixels; writes box.bin
 *   saved DIR INPUT.f32 N           a SavedModel: x f32[1,N] in, y out; writes saved.bin
 *   birds MODEL.tflite IMAGE        TFLite classifier; writes birds.bin
 *   image TYPE W H IMAGE OUT        load_image to OUT (raw pixels)
 *   bench MODEL.pb INPUT.f32 OUTPUT --repeat N --time
 *                                   N rounds of append_input("input", f32 NHWC from the file's
 *                                   [1,H,W,3] with H=W) + run + get_output; prints time_ns per round
 *   conformance                     the spec's error-path cases over the files the test made;
 *                                   prints NAME=VALUE lines
 *
 * Like the crate's unwrap(), the example actions trap on a non-zero errno.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TF(name) __attribute__((import_module("wasmedge_tensorflow"), import_name(#name)))
#define TFL(name) __attribute__((import_module("wasmedge_tensorflowlite"), import_name(#name)))
#define IMG(name) __attribute__((import_module("wasmedge_image"), import_name(#name)))
typedef uint32_t u32;

TF(create_session) int32_t tf_create_session(u32 model, u32 len, u32 out);
TF(create_session_saved_model) int32_t tf_create_saved(u32 path, u32 len, u32 tags, u32 count, u32 out);
TF(delete_session) int32_t tf_delete_session(u32 session);
TF(run_session) int32_t tf_run_session(u32 session);
TF(get_output_tensor) int32_t tf_get_output_tensor(u32 session, u32 name, u32 len, u32 out);
TF(get_tensor_len) int32_t tf_get_tensor_len(u32 session, u32 id, u32 out);
TF(get_tensor_data) int32_t tf_get_tensor_data(u32 session, u32 id, u32 buf, u32 len, u32 out);
TF(append_input) int32_t tf_append_input(u32 session, u32 name, u32 name_len, u32 dims, u32 dims_count,
                                         u32 dtype, u32 data, u32 data_len);
TF(append_output) int32_t tf_append_output(u32 session, u32 name, u32 len);
TF(clear_input) int32_t tf_clear_input(u32 session);
TF(clear_output) int32_t tf_clear_output(u32 session);

TFL(create_session) int32_t tfl_create_session(u32 model, u32 len, u32 out);
TFL(delete_session) int32_t tfl_delete_session(u32 session);
TFL(run_session) int32_t tfl_run_session(u32 session);
TFL(get_output_tensor) int32_t tfl_get_output_tensor(u32 session, u32 name, u32 len, u32 out);
TFL(get_tensor_len) int32_t tfl_get_tensor_len(u32 session, u32 id, u32 out);
TFL(get_tensor_data) int32_t tfl_get_tensor_data(u32 session, u32 id, u32 buf, u32 len, u32 out);
TFL(append_input) int32_t tfl_append_input(u32 session, u32 name, u32 name_len, u32 data, u32 data_len);

IMG(load_jpg) int32_t load_jpg(u32 img, u32 len, u32 w, u32 h, u32 type, u32 out, u32 out_len);
IMG(load_png) int32_t load_png(u32 img, u32 len, u32 w, u32 h, u32 type, u32 out, u32 out_len);
IMG(load_image) int32_t load_image(u32 img, u32 len, u32 w, u32 h, u32 type, u32 out, u32 out_len);

#define P(x) ((u32)(uintptr_t)(x))
#define S(text) P(text), (u32)strlen(text)

static u32 mem_size(void) { return (u32)__builtin_wasm_memory_size(0) * 65536u; }

static void check(int32_t errno_, const char *what) {
    if (errno_ != 0) {
        fprintf(stderr, "%s failed with errno %d\n", what, errno_);
        __builtin_trap(); /* the crate's unwrap() */
    }
}

static unsigned char *read_file(const char *path, u32 *len) {
    FILE *file = fopen(path, "rb");
    if (!file) {
        perror(path);
        exit(66);
    }
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    unsigned char *data = malloc(size ? (size_t)size : 1);
    if (fread(data, 1, (size_t)size, file) != (size_t)size) exit(66);
    fclose(file);
    *len = (u32)size;
    return data;
}

static void write_file(const char *path, const void *data, u32 len) {
    FILE *file = fopen(path, "wb");
    if (!file || fwrite(data, 1, len, file) != len || fclose(file) != 0) {
        perror(path);
        exit(73);
    }
}

/* The crate's get_output: id, length, then an exact-size buffer. */
static void *tf_output(u32 session, const char *name, u32 *len) {
    u32 id = 0, written = 0;
    check(tf_get_output_tensor(session, S(name), P(&id)), "get_output_tensor");
    check(tf_get_tensor_len(session, id, P(len)), "get_tensor_len");
    void *data = malloc(*len ? *len : 1);
    if (*len) check(tf_get_tensor_data(session, id, P(data), *len, P(&written)), "get_tensor_data");
    return data;
}

static int mobilenet(const char *model_path, const char *image_path) {
    u32 image_len, model_len, session, out_len;
    unsigned char *image = read_file(image_path, &image_len);
    static float pixels[224 * 224 * 3];
    check(load_jpg(P(image), image_len, 224, 224, 2, P(pixels), sizeof pixels), "load_jpg");
    write_file("image.bin", pixels, sizeof pixels);
    unsigned char *model = read_file(model_path, &model_len);
    check(tf_create_session(P(model), model_len, P(&session)), "create_session");
    uint64_t dims[4] = {1, 224, 224, 3};
    check(tf_append_input(session, S("input"), P(dims), 4, 1, P(pixels), sizeof pixels), "append_input");
    check(tf_append_output(session, S("MobilenetV2/Predictions/Softmax")), "append_output");
    check(tf_run_session(session), "run_session");
    float *scores = tf_output(session, "MobilenetV2/Predictions/Softmax", &out_len);
    write_file("out.bin", scores, out_len);
    u32 best = 0;
    for (u32 i = 1; i < out_len / 4; i++)
        if (scores[i] > scores[best]) best = i;
    printf("%u : %.17g\n", best, (double)scores[best]);
    tf_delete_session(session);
    return 0;
}

static int mtcnn(const char *model_path, const char *pixels_path, u32 height, u32 width) {
    u32 model_len, pixels_len, session, box_len;
    unsigned char *model = read_file(model_path, &model_len);
    float *pixels = (float *)read_file(pixels_path, &pixels_len);
    check(tf_create_session(P(model), model_len, P(&session)), "create_session");
    float min_size = 20.0f, thresholds[3] = {0.6f, 0.7f, 0.7f}, factor = 0.709f;
    uint64_t dims3[1] = {3}, dims_image[3] = {height, width, 3};
    check(tf_append_input(session, S("min_size"), P(dims3), 0, 1, P(&min_size), 4), "append_input");
    check(tf_append_input(session, S("thresholds"), P(dims3), 1, 1, P(thresholds), 12), "append_input");
    check(tf_append_input(session, S("factor"), P(dims3), 0, 1, P(&factor), 4), "append_input");
    check(tf_append_input(session, S("input"), P(dims_image), 3, 1, P(pixels), pixels_len), "append_input");
    check(tf_append_output(session, S("box")), "append_output");
    check(tf_append_output(session, S("prob")), "append_output");
    check(tf_run_session(session), "run_session");
    float *box = tf_output(session, "box", &box_len);
    write_file("box.bin", box, box_len);
    printf("Drawing box: %u results ...\n", box_len / 16);
    tf_delete_session(session);
    return 0;
}

static int saved(const char *dir, const char *input_path, u32 n) {
    u32 input_len, session, out_len;
    float *input = (float *)read_file(input_path, &input_len);
    const char *tag = "serve";
    u32 tags[2] = {P(tag), 5};
    check(tf_create_saved(S(dir), P(tags), 1, P(&session)), "create_session_saved_model");
    uint64_t dims[2] = {1, n};
    check(tf_append_input(session, S("serving_default_x:0"), P(dims), 2, 1, P(input), input_len), "append_input");
    check(tf_append_output(session, S("StatefulPartitionedCall:0")), "append_output");
    check(tf_run_session(session), "run_session");
    void *out = tf_output(session, "StatefulPartitionedCall:0", &out_len);
    write_file("saved.bin", out, out_len);
    tf_delete_session(session);
    return 0;
}

static int birds(const char *model_path, const char *image_path) {
    u32 image_len, model_len, session, id, len, written = 7;
    unsigned char *image = read_file(image_path, &image_len);
    static unsigned char pixels[224 * 224 * 3];
    check(load_jpg(P(image), image_len, 224, 224, 0, P(pixels), sizeof pixels), "load_jpg");
    unsigned char *model = read_file(model_path, &model_len);
    check(tfl_create_session(P(model), model_len, P(&session)), "create_session");
    free(model); /* as the crate does: the host must have copied it */
    check(tfl_append_input(session, S("module/hub_input/images_uint8"), P(pixels), sizeof pixels), "append_input");
    check(tfl_run_session(session), "run_session");
    check(tfl_get_output_tensor(session, S("module/prediction"), P(&id)), "get_output_tensor");
    check(tfl_get_tensor_len(session, id, P(&len)), "get_tensor_len");
    unsigned char *scores = malloc(len);
    check(tfl_get_tensor_data(session, id, P(scores), len, P(&written)), "get_tensor_data");
    write_file("birds.bin", scores, len);
    u32 best = 0;
    for (u32 i = 1; i < len; i++)
        if (scores[i] > scores[best]) best = i;
    printf("%u : %u (written %u)\n", best, scores[best], written);
    tfl_delete_session(session);
    return 0;
}

static int image(u32 type, u32 w, u32 h, const char *path, const char *out_path) {
    u32 len;
    unsigned char *data = read_file(path, &len);
    u32 out_len = w * h * (type >= 2 ? 12 : 3);
    unsigned char *out = malloc(out_len);
    check(load_image(P(data), len, w, h, type, P(out), out_len), "load_image");
    write_file(out_path, out, out_len);
    return 0;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int bench(const char *model_path, const char *input_path, const char *output, int repeat) {
    u32 model_len, input_len, session, id, len = 0, written;
    unsigned char *model = read_file(model_path, &model_len);
    float *input = (float *)read_file(input_path, &input_len);
    u32 side = 1;
    while (side * side * 3 * 4 < input_len) side++;
    uint64_t dims[4] = {1, side, side, 3};
    check(tf_create_session(P(model), model_len, P(&session)), "create_session");
    check(tf_append_output(session, S(output)), "append_output");
    check(tf_get_output_tensor(session, S(output), P(&id)), "get_output_tensor");
    static unsigned char out[1 << 20];
    for (int round = 0; round < repeat; round++) {
        int64_t start = now_ns();
        check(tf_append_input(session, S("input"), P(dims), 4, 1, P(input), input_len), "append_input");
        check(tf_run_session(session), "run_session");
        check(tf_get_tensor_len(session, id, P(&len)), "get_tensor_len");
        if (len > sizeof out) return 71;
        check(tf_get_tensor_data(session, id, P(out), len, P(&written)), "get_tensor_data");
        printf("time_ns %lld\n", (long long)(now_ns() - start));
    }
    tf_delete_session(session);
    return 0;
}

/* ---- conformance: NAME=VALUE lines for the test to compare ---------------- */

#define R(name, value) printf("%s=%d\n", name, (int)(value))
#define U(name, value) printf("%s=%u\n", name, (unsigned)(value))

static u32 tf_new(const unsigned char *model, u32 len) {
    u32 session = 0xdead;
    check(tf_create_session(P(model), len, P(&session)), "create_session");
    return session;
}

static void feed_mtcnn(u32 session, float scale) {
    static float pixels[2 * 2 * 3] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    float min_size = 20.0f * scale, thresholds[3] = {0.6f, 0.7f, 0.8f}, factor = 0.5f;
    uint64_t dims[3] = {2, 2, 3}, three = 3;
    tf_append_input(session, S("min_size"), 0, 0, 1, P(&min_size), 4);
    tf_append_input(session, S("thresholds"), P(&three), 1, 1, P(thresholds), 12);
    tf_append_input(session, S("factor"), 0, 0, 1, P(&factor), 4);
    tf_append_input(session, S("input"), P(dims), 3, 1, P(pixels), sizeof pixels);
}

/* The whole output `id`, as many floats as the host wrote (0 for an empty slot). */
typedef struct {
    float value[64];
    u32 count;
} floats;

static floats output_floats(u32 session, u32 id) {
    floats out = {{0}, 0};
    u32 written = 0;
    tf_get_tensor_data(session, id, P(out.value), sizeof out.value, P(&written));
    out.count = written / 4;
    return out;
}

static int same_floats(const floats *a, const floats *b) {
    return a->count == b->count && !memcmp(a->value, b->value, a->count * 4);
}

static void print_floats(const char *name, const floats *f) {
    printf("%s=", name);
    for (u32 i = 0; i < f->count; i++) printf(i ? ",%.9g" : "%.9g", (double)f->value[i]);
    printf("\n");
}

static void tf_cases(void) {
    u32 mtcnn_len, mobile_len, strings_len, outside_len;
    unsigned char *mtcnn = read_file("mtcnn_tiny.pb", &mtcnn_len);
    unsigned char *mobile = read_file("mobilenet_tiny.pb", &mobile_len);
    unsigned char *strings = read_file("strings_tiny.pb", &strings_len);
    /* the host path of a SavedModel outside the --dir mapping */
    unsigned char *outside = read_file("outside.txt", &outside_len);
    u32 top = mem_size(); /* after the reads: malloc grows the memory */
    u32 a = 77, b = 77, c = 77, id = 77, len = 77, written = 77;

    /* 2, 3, 6: ids */
    R("c3.garbage", tf_create_session(S("\xff\xff\xff"), P(&a)));
    U("c3.untouched", a);
    R("c2.first", tf_create_session(P(mtcnn), mtcnn_len, P(&a)));
    U("c2.first_id", a);
    R("c2.second", tf_create_session(P(mtcnn), mtcnn_len, P(&b)));
    U("c2.second_id", b);
    R("c6.delete", tf_delete_session(a));
    R("c6.create", tf_create_session(P(mtcnn), mtcnn_len, P(&c)));
    U("c6.reused_id", c);
    /* 4: empty GraphDef */
    u32 empty = 77;
    R("c4.empty", tf_create_session(0xfffffff0u, 0, P(&empty)));
    R("c4.append_output", tf_append_output(empty, S("x")));
    /* 5: ranges */
    R("c5.model_oob", tf_create_session(top - 4, 8, P(&len)));
    R("c5.out_oob", tf_create_session(P(mtcnn), mtcnn_len, top - 2));
    u32 next = 77; /* ids 0, 1, 2 are live: a session made by a failed call would hold 3 */
    tf_create_session(P(mtcnn), mtcnn_len, P(&next));
    U("c5.next_id", next);
    tf_delete_session(next);
    /* 7: delete */
    R("c7.delete_999", tf_delete_session(999));
    R("c7.delete_once", tf_delete_session(empty));
    R("c7.delete_twice", tf_delete_session(empty));
    R("c7.run", tf_run_session(empty));
    R("c7.clear_input", tf_clear_input(empty));
    R("c7.clear_output", tf_clear_output(empty));
    /* 8, 9: names and sessions */
    float one = 1;
    R("c8.input_missing_op", tf_append_input(c, S("nope"), 0, 0, 1, P(&one), 4));
    R("c8.output_missing_op", tf_append_output(c, S("nope")));
    R("c9.append_output", tf_append_output(4242, top + 16, 4));
    R("c9.append_input", tf_append_input(4242, top + 16, 4, 0, 0, 1, P(&one), 4));
    R("c9.get_output_tensor", tf_get_output_tensor(4242, top + 16, 4, P(&id)));
    /* 10: keys */
    R("c10.box", tf_append_output(c, S("box")));
    R("c10.prob", tf_append_output(c, S("prob")));
    R("c10.box_again", tf_append_output(c, S("box")));
    R("c10.get_prob", tf_get_output_tensor(c, S("prob"), P(&id)));
    U("c10.prob_id", id);
    R("c10.get_box0", tf_get_output_tensor(c, S("box:0"), P(&id)));
    /* 12, 13: before runs */
    len = 77;
    R("c12.len", tf_get_tensor_len(c, 0, P(&len)));
    U("c12.len_value", len);
    R("c13.len_past", tf_get_tensor_len(c, 2, P(&len)));
    R("c13.data_past", tf_get_tensor_data(c, 2, P(&one), 4, P(&written)));
    written = 77;
    R("c12.data_empty", tf_get_tensor_data(c, 0, P(&one), 4, P(&written)));
    U("c12.data_empty_written", written);
    /* 19: missing feed, then feeds; 20: persistence; 17: replacement */
    R("c19.missing_feed", tf_run_session(c));
    feed_mtcnn(c, 1.0f);
    R("c20.run1", tf_run_session(c));
    floats first = output_floats(c, 0), second;
    R("c20.run2", tf_run_session(c));
    second = output_floats(c, 0);
    R("c20.same", same_floats(&first, &second));
    print_floats("c20.box", &first);
    float min_size2 = 40.0f;
    R("c17.replace", tf_append_input(c, S("min_size"), 0, 0, 1, P(&min_size2), 4));
    R("c17.run", tf_run_session(c));
    second = output_floats(c, 0);
    print_floats("c17.box", &second);
    /* 11: op:N */
    R("c11.top1", tf_append_output(c, S("top:1")));
    R("c11.top1_run", tf_run_session(c));
    R("c11.top1_id", tf_get_output_tensor(c, S("top:1"), P(&id)));
    U("c11.top1_index", id);
    int32_t indices[2] = {-1, -1};
    tf_get_tensor_data(c, id, P(indices), 8, P(&written));
    printf("c11.top1_values=%d,%d\n", indices[0], indices[1]);
    R("c11.min7", tf_append_output(c, S("min_size:7")));
    R("c11.min7_run", tf_run_session(c));
    R("c11.len_after_fail", tf_get_tensor_len(c, 0, P(&len)));
    U("c11.len_after_fail_value", len);
    /* 19: clear_output / clear_input */
    R("c19.clear_output", tf_clear_output(c));
    R("c19.old_name", tf_get_output_tensor(c, S("box"), P(&id)));
    R("c19.clear_input", tf_clear_input(c));
    R("c19.prob_again", tf_append_output(c, S("prob")));
    R("c19.run_unfed", tf_run_session(c));
    feed_mtcnn(c, 2.0f);
    R("c19.run_refed", tf_run_session(c));
    second = output_floats(c, 0);
    print_floats("c19.prob", &second);
    /* 18: wrong dtype */
    int32_t as_int = 20;
    R("c18.append_i32", tf_append_input(c, S("min_size"), 0, 0, 3, P(&as_int), 4));
    R("c18.run", tf_run_session(c));
    len = 77;
    tf_get_tensor_len(c, 0, P(&len));
    U("c18.len", len);
    /* 15, 16: data sizes, scalar dims pointer */
    float data[5] = {1, 2, 3, 4, 5};
    uint64_t dims22[2] = {2, 2};
    R("c15.short", tf_append_input(c, S("thresholds"), P(dims22), 2, 1, P(data), 12));
    R("c15.long", tf_append_input(c, S("thresholds"), P(dims22), 2, 1, P(data), 20));
    R("c16.scalar", tf_append_input(c, S("factor"), top + 64, 0, 1, P(data), 4));
    int64_t negative[1] = {-1};
    R("x.negative_dim", tf_append_input(c, S("thresholds"), P(negative), 1, 1, P(data), 4));
    R("x.string_dtype", tf_append_input(c, S("factor"), 0, 0, 7, P(data), 4));
    /* f32 bytes for a string placeholder: accepted at append, refused by the run (4) */
    u32 s = tf_new(strings, strings_len);
    R("x.string_feed_append", tf_append_input(s, S("text"), 0, 0, 1, P(data), 4));
    R("x.string_feed_output", tf_append_output(s, S("length")));
    R("x.string_feed_run", tf_run_session(s));
    tf_delete_session(s);
    /* 14: output sizes */
    u32 m = tf_new(mobile, mobile_len);
    static float zeros[224 * 224 * 3];
    uint64_t dims[4] = {1, 224, 224, 3};
    tf_append_input(m, S("input"), P(dims), 4, 1, P(zeros), sizeof zeros);
    tf_append_output(m, S("MobilenetV2/Predictions/Softmax"));
    R("c14.run", tf_run_session(m));
    R("c14.len", tf_get_tensor_len(m, 0, P(&len)));
    U("c14.len_value", len);
    static unsigned char buf[5000];
    memset(buf, 0xab, sizeof buf);
    R("c14.data8", tf_get_tensor_data(m, 0, P(buf), 8, P(&written)));
    U("c14.written8", written);
    R("c14.data5000", tf_get_tensor_data(m, 0, P(buf), 5000, P(&written)));
    U("c14.written5000", written);
    R("c14.tail_untouched", buf[4004] == 0xab && buf[4999] == 0xab);
    R("c14.data0", tf_get_tensor_data(m, 0, P(buf), 0, P(&written)));
    U("c14.written0", written);
    R("c14.data_oob", tf_get_tensor_data(m, 0, top - 8, 16, P(&written)));
    /* 21: SavedModel through the --dir mappings */
    const char *serve = "serve", *nope = "nope";
    u32 tag_serve[2] = {P(serve), 5}, tag_nope[2] = {P(nope), 4};
    R("c21.serve", tf_create_saved(S("saved_model"), P(tag_serve), 1, P(&a)));
    R("c21.nope", tf_create_saved(S("saved_model"), P(tag_nope), 1, P(&a)));
    R("c21.missing", tf_create_saved(S("no_such_dir"), P(tag_serve), 1, P(&a)));
    R("c21.tags_oob", tf_create_saved(S("saved_model"), top - 4, 1, P(&a)));
    u32 tag_oob[2] = {top - 2, 5};
    R("c21.tag_oob", tf_create_saved(S("saved_model"), P(tag_oob), 1, P(&a)));
    /* the same SavedModel outside the mapping: by .., by its host path, through a symlink */
    R("x.outside_dir", tf_create_saved(S("../outside_model"), P(tag_serve), 1, P(&a)));
    R("x.absolute_host", tf_create_saved(P(outside), outside_len, P(tag_serve), 1, P(&a)));
    R("x.symlink_out", tf_create_saved(S("escape"), P(tag_serve), 1, P(&a)));
    /* >16 live sessions keep working */
    u32 many[20];
    int ok = 1;
    for (int i = 0; i < 20; i++) ok &= tf_create_session(P(mtcnn), mtcnn_len, P(&many[i])) == 0;
    feed_mtcnn(many[0], 1.0f);
    tf_append_output(many[0], S("box"));
    ok &= tf_run_session(many[0]) == 0;
    second = output_floats(many[0], 0);
    ok &= same_floats(&first, &second);
    R("x.twenty_sessions", ok);
}

static void tflite_cases(void) {
    u32 model_len, a = 77, b = 77, id = 77, len = 77, written = 77;
    unsigned char *model = read_file("birds.tflite", &model_len);
    static unsigned char zero16[16], pixels[224 * 224 * 3 + 1], scores[966];
    u32 tf_session;
    unsigned char empty_graph[1];
    R("c30.tf_create", tf_create_session(P(empty_graph), 0, P(&tf_session)));
    R("c29.run", tfl_run_session(5));
    R("c29.delete", tfl_delete_session(5));
    R("c24.zeros", tfl_create_session(P(zero16), 16, P(&a)));
    R("c24.empty", tfl_create_session(P(zero16), 0, P(&a)));
    R("c24.valid", tfl_create_session(P(model), model_len, P(&a)));
    U("c24.first_id", a);
    R("x.model_oob", tfl_create_session(mem_size() - 4, 8, P(&b)));
    const char *input = "module/hub_input/images_uint8", *output = "module/prediction";
    R("c27.len_before_run", tfl_get_tensor_len(a, 0, P(&len)));
    U("c27.len_value", len);
    R("c25.exact", tfl_append_input(a, S(input), P(pixels), 224 * 224 * 3));
    R("c25.plus1", tfl_append_input(a, S(input), P(pixels), 224 * 224 * 3 + 1));
    R("c25.minus1", tfl_append_input(a, S(input), P(pixels), 224 * 224 * 3 - 1));
    R("c25.unknown", tfl_append_input(a, S("nope"), P(pixels), 224 * 224 * 3));
    R("c25.output_name", tfl_append_input(a, S(output), P(pixels), 965));
    R("c26.output", tfl_get_output_tensor(a, S(output), P(&id)));
    U("c26.output_id", id);
    R("c26.input_name", tfl_get_output_tensor(a, S(input), P(&id)));
    R("c28.run", tfl_run_session(a));
    R("c28.wrong_len", tfl_get_tensor_data(a, 0, P(scores), 966, P(&written)));
    written = 77;
    R("c28.exact", tfl_get_tensor_data(a, 0, P(scores), 965, P(&written)));
    U("c28.written", written);
    R("c28.id_past", tfl_get_tensor_data(a, 1, P(scores), 965, P(&written)));
    R("x.delete", tfl_delete_session(a));
    R("x.after_delete", tfl_run_session(a));
    /* a dynamic output (x[x > 0]): its size is the one the last invoke left */
    u32 mask_len, m = 77;
    unsigned char *mask = read_file("mask.tflite", &mask_len);
    float five[8] = {1, -1, 2, 3, -4, 5, 6, -7}, two[8] = {-1, 8, -2, -3, -4, -5, 9, -6};
    static float got[8];
    R("dyn.create", tfl_create_session(P(mask), mask_len, P(&m)));
    R("dyn.input", tfl_append_input(m, S("x"), P(five), sizeof five));
    R("dyn.len_before_run", tfl_get_tensor_len(m, 0, P(&len)));
    U("dyn.len_before_run_value", len);
    R("dyn.run", tfl_run_session(m));
    R("dyn.len", tfl_get_tensor_len(m, 0, P(&len)));
    U("dyn.len_value", len);
    memset(got, 0xab, sizeof got);
    R("dyn.data_creation_size", tfl_get_tensor_data(m, 0, P(got), 4, P(&written)));
    const unsigned char *guard = (const unsigned char *)got;
    int untouched = 1;
    for (u32 i = 0; i < sizeof got; i++) untouched &= guard[i] == 0xab;
    R("dyn.buffer_untouched", untouched);
    R("dyn.data", tfl_get_tensor_data(m, 0, P(got), len, P(&written)));
    printf("dyn.values=");
    for (u32 i = 0; i < len / 4; i++) printf(i ? ",%g" : "%g", (double)got[i]);
    printf("\n");
    R("dyn.input_two", tfl_append_input(m, S("x"), P(two), sizeof two));
    R("dyn.run_two", tfl_run_session(m));
    R("dyn.len_two", tfl_get_tensor_len(m, 0, P(&len)));
    U("dyn.len_two_value", len);
    R("dyn.data_stale_size", tfl_get_tensor_data(m, 0, P(got), 20, P(&written)));
    R("dyn.data_two", tfl_get_tensor_data(m, 0, P(got), len, P(&written)));
    printf("dyn.values_two=%g,%g\n", (double)got[0], (double)got[1]);
    tfl_delete_session(m);
}

static void image_cases(void) {
    u32 jpg_len, png_len, rnd_len;
    unsigned char *jpg = read_file("red.jpg", &jpg_len), *png = read_file("red.png", &png_len);
    unsigned char *rnd = read_file("random.bin", &rnd_len);
    static unsigned char out[50 * 60 * 12 + 16];
    int32_t (*loaders[3])(u32, u32, u32, u32, u32, u32, u32) = {load_jpg, load_png, load_image};
    const char *names[3] = {"load_jpg", "load_png", "load_image"};
    char name[64];
    for (int f = 0; f < 3; f++) {
        for (u32 type = 0; type < 4; type++) {
            for (int src = 0; src < 2; src++) {
                u32 bpp = type >= 2 ? 12 : 3;
                int32_t rc = loaders[f](P(src ? png : jpg), src ? png_len : jpg_len, 50, 60, type, P(out),
                                        50 * 60 * bpp);
                u32 at = (55 * 50 + 45) * bpp;
                snprintf(name, sizeof name, "img.%s.%s.%u", names[f], src ? "png" : "jpg", type);
                if (type < 2)
                    printf("%s=%d:%u,%u,%u\n", name, rc, out[at], out[at + 1], out[at + 2]);
                else {
                    float px[3];
                    memcpy(px, out + at, 12);
                    printf("%s=%d:%.8f,%.8f,%.8f\n", name, rc, (double)px[0], (double)px[1], (double)px[2]);
                }
            }
        }
    }
    u32 top = mem_size();
    R("c34.w0", load_image(P(jpg), jpg_len, 0, 60, 0, P(out), sizeof out));
    R("c34.h0", load_image(P(jpg), jpg_len, 50, 0, 0, P(out), sizeof out));
    R("c34.wide", load_image(P(jpg), jpg_len, 800000000u, 1, 0, P(out), sizeof out));
    R("c34.tall", load_image(P(jpg), jpg_len, 1, 2147483648u, 0, P(out), sizeof out));
    R("c34.one_short", load_image(P(jpg), jpg_len, 50, 60, 0, P(out), 50 * 60 * 3 - 1));
    R("c34.type4", load_image(P(jpg), jpg_len, 50, 60, 4, P(out), sizeof out));
    R("c34.img_len0", load_image(P(jpg), 0, 50, 60, 0, P(out), sizeof out));
    R("c34.random", load_image(P(rnd), rnd_len, 50, 60, 0, P(out), sizeof out));
    R("c34.input_oob", load_image(top - 10, 20, 50, 60, 0, P(out), sizeof out));
    R("c34.output_oob", load_image(P(jpg), jpg_len, 50, 60, 0, top - 10, 9000));
    memset(out, 0xab, sizeof out);
    R("c35.larger", load_image(P(jpg), jpg_len, 50, 60, 0, P(out), sizeof out));
    R("c35.untouched", out[50 * 60 * 3] == 0xab && out[sizeof out - 1] == 0xab);
}

int main(int argc, char **argv) {
    const char *action = argc > 1 ? argv[1] : "";
    if (!strcmp(action, "mobilenet") && argc == 4) return mobilenet(argv[2], argv[3]);
    if (!strcmp(action, "mtcnn") && argc == 6)
        return mtcnn(argv[2], argv[3], (u32)atoi(argv[4]), (u32)atoi(argv[5]));
    if (!strcmp(action, "saved") && argc == 5) return saved(argv[2], argv[3], (u32)atoi(argv[4]));
    if (!strcmp(action, "birds") && argc == 4) return birds(argv[2], argv[3]);
    if (!strcmp(action, "image") && argc == 7)
        return image((u32)atoi(argv[2]), (u32)atoi(argv[3]), (u32)atoi(argv[4]), argv[5], argv[6]);
    if (!strcmp(action, "bench") && argc == 8 && !strcmp(argv[5], "--repeat") && !strcmp(argv[7], "--time"))
        return bench(argv[2], argv[3], argv[4], atoi(argv[6]));
    if (!strcmp(action, "conformance") && argc == 3) {
        if (!strcmp(argv[2], "tf")) tf_cases();
        else if (!strcmp(argv[2], "tflite")) tflite_cases();
        else if (!strcmp(argv[2], "image")) image_cases();
        else return 64;
        return 0;
    }
    fprintf(stderr, "usage: wasmedge-tf mobilenet|mtcnn|saved|birds|image|conformance tf|tflite|image ...\n");
    return 64;
}

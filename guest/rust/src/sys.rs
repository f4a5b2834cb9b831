//! Raw `wasi_ephemeral_nn` imports (spec §1.2) and the records they read from guest memory.
//!
//! Every parameter is a wasm `i32` that the host reads as `u32`: pointers are linear-memory
//! offsets, lengths count bytes or elements, handles are `u32`. Every function returns an
//! errno, 0 meaning success.

/// Declares the imports once. On wasm32 they are real host imports; elsewhere (a `cargo
/// test` on the build machine, say) they become stubs with the same signature that fail
/// with `NO_HOST_ERRNO`, so the pure-Rust parts of the crate build and test natively.
macro_rules! wasi_nn_imports {
    ($( $(#[$attr:meta])* fn $name:ident($($arg:ident: u32),*) -> i32; )*) => {
        #[cfg(target_arch = "wasm32")]
        #[link(wasm_import_module = "wasi_ephemeral_nn")]
        extern "C" {
            $( $(#[$attr])* pub fn $name($($arg: u32),*) -> i32; )*
        }

        $(
            $(#[$attr])*
            #[cfg(not(target_arch = "wasm32"))]
            #[allow(unused_variables)]
            pub unsafe extern "C" fn $name($($arg: u32),*) -> i32 {
                NO_HOST_ERRNO
            }
        )*
    };
}

/// What the native stubs return: `unsupported_operation`, as there is no host to call.
#[cfg(not(target_arch = "wasm32"))]
const NO_HOST_ERRNO: i32 = 6;

wasi_nn_imports! {
    /// Builds a graph from `builder_count` [`GraphBuilder`] records.
    fn load(
        builder_array_ptr: u32,
        builder_count: u32,
        encoding: u32,
        target: u32,
        graph_out_ptr: u32
    ) -> i32;
    /// Looks up (or builds and caches) a model preloaded under a name.
    fn load_by_name(name_ptr: u32, name_len: u32, graph_out_ptr: u32) -> i32;
    /// Like `load_by_name`, with a backend config appended as an extra builder.
    fn load_by_name_with_config(
        name_ptr: u32,
        name_len: u32,
        config_ptr: u32,
        config_len: u32,
        graph_out_ptr: u32
    ) -> i32;
    /// Creates an execution context on a graph.
    fn init_execution_context(graph: u32, context_out_ptr: u32) -> i32;
    /// Binds the [`TensorRecord`] at `tensor_ptr` to input slot `index`.
    fn set_input(context: u32, index: u32, tensor_ptr: u32) -> i32;
    /// Runs inference.
    fn compute(context: u32) -> i32;
    /// Copies output `index` out; on errno 7 the needed size is stored instead.
    fn get_output(
        context: u32,
        index: u32,
        out_buf_ptr: u32,
        out_buf_max_len: u32,
        bytes_written_ptr: u32
    ) -> i32;
    /// Produces one more step of a streamed output (one token for GGML).
    fn compute_single(context: u32) -> i32;
    /// Like `get_output`, for the step produced by the last `compute_single`.
    fn get_output_single(
        context: u32,
        index: u32,
        out_buf_ptr: u32,
        out_buf_max_len: u32,
        bytes_written_ptr: u32
    ) -> i32;
    /// Ends a streamed generation and clears its state.
    fn fini_single(context: u32) -> i32;
    /// Releases a graph handle.
    fn unload(graph: u32) -> i32;
    /// Releases an execution-context handle.
    fn finalize_execution_context(context: u32) -> i32;
}

/// One entry of the builder array that `load` reads (spec §2.2).
#[repr(C)]
pub struct GraphBuilder {
    pub data_ptr: u32,
    pub data_len: u32,
}

/// The tensor record that `set_input` reads (spec §2.3).
///
/// The type code is written as a whole `u32`, as the Rust crates do; the host only reads
/// its low byte.
#[repr(C)]
pub struct TensorRecord {
    pub dims_ptr: u32,
    pub dims_len: u32,
    pub tensor_type: u32,
    pub data_ptr: u32,
    pub data_len: u32,
}

// The host reads these records at fixed offsets; fail the build if the layout ever drifts.
const _: () = assert!(std::mem::size_of::<GraphBuilder>() == 8);
const _: () = assert!(std::mem::size_of::<TensorRecord>() == 20);

/// The linear-memory offset of `ptr`, as the host expects it.
///
/// Lossless on wasm32, where `usize` is 32 bits. On other targets the value only reaches the
/// stubs, which ignore it.
pub fn address<T>(ptr: *const T) -> u32 {
    ptr as usize as u32
}

/// The linear-memory offset of `slot`, for an out-pointer or buffer the host writes.
///
/// Taken from a `*mut` so that the host's write is allowed; lossless on wasm32.
pub fn address_mut<T>(slot: *mut T) -> u32 {
    slot as usize as u32
}

/// The length of `slice` as the host's `u32`.
///
/// Lossless on wasm32, where no slice can be longer than `u32::MAX`.
pub fn length<T>(slice: &[T]) -> u32 {
    slice.len() as u32
}

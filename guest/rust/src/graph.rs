//! Loading models into graphs.

use crate::context::Context;
use crate::error::{check, Result};
use crate::sys;

/// How a model's bytes are encoded, which picks the backend (spec §3.2, WasmEdge numbering).
///
/// WasmEdge keeps the legacy witx order, so `Autodetect` is 5 and `Ggml` is 6; the WIT
/// interface swaps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum GraphEncoding {
    /// OpenVINO IR: two builders, the XML text then the weights.
    Openvino = 0,
    /// ONNX.
    Onnx = 1,
    /// TensorFlow.
    Tensorflow = 2,
    /// PyTorch TorchScript.
    Pytorch = 3,
    /// TensorFlow Lite flatbuffer.
    TensorflowLite = 4,
    /// Let the host guess; WasmEdge does not implement it and returns errno 2.
    Autodetect = 5,
    /// GGUF model for llama.cpp.
    Ggml = 6,
}

/// Where the backend should run the model (spec §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ExecutionTarget {
    /// The CPU.
    Cpu = 0,
    /// A GPU.
    Gpu = 1,
    /// A TPU.
    Tpu = 2,
    /// Let the backend choose. WasmEdge's `load` rejects it with errno 1; it is meant for
    /// models preloaded with `--nn-preload`.
    Auto = 3,
}

/// A model loaded by the host, identified by a graph handle.
///
/// Dropping a `Graph` unloads it. Contexts created from it stay valid for reading outputs,
/// but the host refuses to compute on them once the graph is gone.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Graph {
    handle: u32,
}

impl Graph {
    /// Loads a model from its builder blobs, such as the XML and weights of an OpenVINO model.
    pub fn load(
        builders: &[&[u8]],
        encoding: GraphEncoding,
        target: ExecutionTarget,
    ) -> Result<Graph> {
        let builder_records: Vec<sys::GraphBuilder> = builders
            .iter()
            .map(|blob| sys::GraphBuilder {
                data_ptr: sys::address(blob.as_ptr()),
                data_len: sys::length(blob),
            })
            .collect();
        let mut handle = 0u32;
        // SAFETY: the builder records and the blobs they point to are borrowed for the whole
        // call, and `handle` is a live u32 the host may write.
        let errno = unsafe {
            sys::load(
                sys::address(builder_records.as_ptr()),
                sys::length(&builder_records),
                encoding as u32,
                target as u32,
                sys::address_mut(&mut handle),
            )
        };
        check(errno).map(|()| Graph { handle })
    }

    /// Gets the model preloaded on the host under `name` (`--nn-preload NAME:...`).
    ///
    /// Loading the same name again returns the same, cached graph handle, and dropping any
    /// `Graph` that holds it unloads the model for all of them: keep one `Graph` per name.
    pub fn load_by_name(name: &str) -> Result<Graph> {
        let mut handle = 0u32;
        // SAFETY: `name` is borrowed for the whole call and the host reads exactly
        // `name.len()` bytes of it; `handle` is a live u32 the host may write.
        let errno = unsafe {
            sys::load_by_name(
                sys::address(name.as_ptr()),
                sys::length(name.as_bytes()),
                sys::address_mut(&mut handle),
            )
        };
        check(errno).map(|()| Graph { handle })
    }

    /// Like [`Graph::load_by_name`], passing `config` (JSON metadata for GGML) to the backend.
    ///
    /// The host ignores `config` when the name is already loaded.
    pub fn load_by_name_with_config(name: &str, config: &str) -> Result<Graph> {
        let mut handle = 0u32;
        // SAFETY: `name` and `config` are borrowed for the whole call and the host reads only
        // their stated lengths; `handle` is a live u32 the host may write.
        let errno = unsafe {
            sys::load_by_name_with_config(
                sys::address(name.as_ptr()),
                sys::length(name.as_bytes()),
                sys::address(config.as_ptr()),
                sys::length(config.as_bytes()),
                sys::address_mut(&mut handle),
            )
        };
        check(errno).map(|()| Graph { handle })
    }

    /// The host's handle for this graph.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Creates an execution context on this graph.
    pub fn init_execution_context(&self) -> Result<Context> {
        let mut context_handle = 0u32;
        // SAFETY: `context_handle` is a live u32 the host may write.
        let errno = unsafe {
            sys::init_execution_context(self.handle, sys::address_mut(&mut context_handle))
        };
        check(errno).map(|()| Context::from_handle(context_handle))
    }

    /// Unloads the graph now, reporting the host's answer that dropping would ignore.
    pub fn unload(self) -> Result<()> {
        let handle = self.handle;
        // The handle is released below; skip `Drop` so it is not released twice.
        std::mem::forget(self);
        // SAFETY: `unload` takes no pointers.
        check(unsafe { sys::unload(handle) })
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: `unload` takes no pointers. A failure cannot be reported from `drop`, and
        // the handle is unusable afterwards either way.
        unsafe {
            sys::unload(self.handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_codes_match_wasmedge() {
        let codes = [
            (GraphEncoding::Openvino, 0),
            (GraphEncoding::Onnx, 1),
            (GraphEncoding::Tensorflow, 2),
            (GraphEncoding::Pytorch, 3),
            (GraphEncoding::TensorflowLite, 4),
            (GraphEncoding::Autodetect, 5),
            (GraphEncoding::Ggml, 6),
        ];
        for (encoding, code) in codes {
            assert_eq!(encoding as u32, code, "{encoding:?}");
        }
    }

    #[test]
    fn target_codes_match_wasmedge() {
        let codes = [
            (ExecutionTarget::Cpu, 0),
            (ExecutionTarget::Gpu, 1),
            (ExecutionTarget::Tpu, 2),
            (ExecutionTarget::Auto, 3),
        ];
        for (target, code) in codes {
            assert_eq!(target as u32, code, "{target:?}");
        }
    }
}

//! Execution contexts: binding inputs, running inference and reading outputs.

use crate::error::{check, Error, Result};
use crate::sys;
use crate::tensor::Tensor;

/// The signature shared by `get_output` and `get_output_single`.
type GetOutputImport = unsafe extern "C" fn(u32, u32, u32, u32, u32) -> i32;

/// An inference session on a [`Graph`](crate::Graph), identified by a context handle.
///
/// Dropping a `Context` finalizes it on the host.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Context {
    handle: u32,
}

impl Context {
    pub(crate) fn from_handle(handle: u32) -> Context {
        Context { handle }
    }

    /// The host's handle for this context.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Binds `tensor` to input slot `index`. The host copies the data during the call.
    pub fn set_input(&mut self, index: u32, tensor: &Tensor<'_>) -> Result<()> {
        let record = sys::TensorRecord {
            dims_ptr: sys::address(tensor.dims().as_ptr()),
            dims_len: sys::length(tensor.dims()),
            tensor_type: tensor.tensor_type() as u32,
            data_ptr: sys::address(tensor.data().as_ptr()),
            data_len: sys::length(tensor.data()),
        };
        // SAFETY: the record and the dims and data it points to are borrowed for the whole
        // call; the host only reads them.
        check(unsafe { sys::set_input(self.handle, index, sys::address(&record)) })
    }

    /// Runs inference on the bound inputs.
    pub fn compute(&mut self) -> Result<()> {
        // SAFETY: `compute` takes no pointers.
        check(unsafe { sys::compute(self.handle) })
    }

    /// Output `index`, in a buffer sized to fit it exactly.
    pub fn get_output(&mut self, index: u32) -> Result<Vec<u8>> {
        self.read_sized(sys::get_output, index)
    }

    /// Copies output `index` into `buf` and returns its length in bytes.
    ///
    /// Fails with [`Error::TooLarge`], leaving `buf` untouched, when the output does not fit.
    pub fn get_output_into(&mut self, index: u32, buf: &mut [u8]) -> Result<usize> {
        let (errno, bytes_written) = self.read_raw(sys::get_output, index, buf);
        check(errno).map(|()| bytes_written as usize)
    }

    /// Output `index` decoded as little-endian `f32` values.
    pub fn get_output_f32(&mut self, index: u32) -> Result<Vec<f32>> {
        let bytes = self.get_output(index)?;
        if bytes.len() % 4 != 0 {
            return Err(Error::InvalidTensor(format!(
                "output {index} has {} bytes, not a whole number of f32 values",
                bytes.len()
            )));
        }
        let values = bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        Ok(values)
    }

    /// Produces the next step of a streamed output, such as one token for GGML.
    ///
    /// Returns [`Error::EndOfSequence`] once generation is over.
    pub fn compute_single(&mut self) -> Result<()> {
        // SAFETY: `compute_single` takes no pointers.
        check(unsafe { sys::compute_single(self.handle) })
    }

    /// Output `index` of the last [`Context::compute_single`] step, such as one token's text.
    pub fn get_output_single(&mut self, index: u32) -> Result<Vec<u8>> {
        self.read_sized(sys::get_output_single, index)
    }

    /// Ends a streamed generation; the next `compute_single` starts again from the prompt.
    pub fn fini_single(&mut self) -> Result<()> {
        // SAFETY: `fini_single` takes no pointers.
        check(unsafe { sys::fini_single(self.handle) })
    }

    /// Finalizes the context now, reporting the host's answer that dropping would ignore.
    pub fn finalize(self) -> Result<()> {
        let handle = self.handle;
        // The handle is released below; skip `Drop` so it is not released twice.
        std::mem::forget(self);
        // SAFETY: `finalize_execution_context` takes no pointers.
        check(unsafe { sys::finalize_execution_context(handle) })
    }

    /// Reads an output whose size is not known in advance.
    ///
    /// A first call with an empty buffer either succeeds (the output is empty) or fails with
    /// `too_large` after storing the size it needs; a second call fills a buffer of exactly
    /// that size.
    fn read_sized(&mut self, import: GetOutputImport, index: u32) -> Result<Vec<u8>> {
        let (errno, needed) = self.read_raw(import, index, &mut []);
        if errno == 0 {
            return Ok(Vec::new());
        }
        let error = Error::from_errno(errno);
        if error != Error::TooLarge {
            return Err(error);
        }
        let mut buf = vec![0u8; needed as usize];
        let (errno, bytes_written) = self.read_raw(import, index, &mut buf);
        check(errno)?;
        buf.truncate(bytes_written as usize);
        Ok(buf)
    }

    /// Calls a `get_output`-style import with `buf` and returns its errno and byte count.
    fn read_raw(&mut self, import: GetOutputImport, index: u32, buf: &mut [u8]) -> (i32, u32) {
        let mut bytes_written = 0u32;
        // SAFETY: `buf` is exclusively borrowed for the whole call and the host writes at most
        // `buf.len()` bytes into it; `bytes_written` is a live u32 the host may write. An
        // empty `buf` has a dangling but non-null address, which the host accepts for a
        // zero-length region and never writes through.
        let errno = unsafe {
            import(
                self.handle,
                index,
                sys::address_mut(buf.as_mut_ptr()),
                sys::length(buf),
                sys::address_mut(&mut bytes_written),
            )
        };
        (errno, bytes_written)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: `finalize_execution_context` takes no pointers. A failure cannot be
        // reported from `drop`, and the handle is unusable afterwards either way.
        unsafe {
            sys::finalize_execution_context(self.handle);
        }
    }
}

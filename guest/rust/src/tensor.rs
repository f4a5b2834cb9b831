//! Tensors handed to [`Context::set_input`](crate::Context::set_input).

use std::borrow::Cow;

use crate::error::{Error, Result};

/// The element type of a tensor (spec §3.4, WasmEdge numbering).
///
/// WasmEdge accepts only `F16`, `F32`, `U8` and `I32` in `set_input`; `F64` and `I64` exist
/// in the enumeration but the host rejects them with errno 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum TensorType {
    /// IEEE 754 half precision.
    F16 = 0,
    /// IEEE 754 single precision.
    F32 = 1,
    /// IEEE 754 double precision.
    F64 = 2,
    /// Unsigned 8-bit integer.
    U8 = 3,
    /// Signed 32-bit integer.
    I32 = 4,
    /// Signed 64-bit integer.
    I64 = 5,
}

impl TensorType {
    /// The size of one element in bytes.
    pub fn byte_size(self) -> usize {
        match self {
            TensorType::U8 => 1,
            TensorType::F16 => 2,
            TensorType::F32 | TensorType::I32 => 4,
            TensorType::F64 | TensorType::I64 => 8,
        }
    }
}

/// A tensor whose data length has been checked against its dimensions.
///
/// The data is row-major and little-endian. [`Tensor::new`] borrows the caller's bytes;
/// [`Tensor::from_f32`] owns the bytes it encodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<'a> {
    dims: Vec<u32>,
    tensor_type: TensorType,
    data: Cow<'a, [u8]>,
}

impl Tensor<'static> {
    /// An `F32` tensor of `values`, encoded as little-endian bytes.
    ///
    /// Fails like [`Tensor::new`] when `values` does not fill `dims` exactly.
    pub fn from_f32(dims: &[u32], values: &[f32]) -> Result<Tensor<'static>> {
        let bytes = values
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect();
        Tensor::checked(dims, TensorType::F32, Cow::Owned(bytes))
    }
}

impl<'a> Tensor<'a> {
    /// A tensor over `data`, which must hold exactly `product(dims) * ty.byte_size()` bytes.
    ///
    /// Fails with [`Error::InvalidTensor`], before any host call, when `dims` is empty,
    /// when the element count overflows `u32`, or when the data length does not match.
    pub fn new(dims: &[u32], ty: TensorType, data: &'a [u8]) -> Result<Tensor<'a>> {
        Tensor::checked(dims, ty, Cow::Borrowed(data))
    }

    fn checked(dims: &[u32], tensor_type: TensorType, data: Cow<'a, [u8]>) -> Result<Tensor<'a>> {
        if dims.is_empty() {
            return Err(Error::InvalidTensor(
                "a tensor needs at least one dimension".into(),
            ));
        }
        let element_count = dims
            .iter()
            .try_fold(1u32, |count, &dim| count.checked_mul(dim))
            .ok_or_else(|| {
                Error::InvalidTensor(format!("dims {dims:?} hold more than u32::MAX elements"))
            })?;
        // Computed in u64 so that a large element count times the element size cannot wrap.
        let expected_len = u64::from(element_count) * tensor_type.byte_size() as u64;
        if data.len() as u64 != expected_len {
            return Err(Error::InvalidTensor(format!(
                "dims {dims:?} of {tensor_type:?} need {expected_len} bytes of data, got {}",
                data.len()
            )));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(Error::InvalidTensor(format!(
                "{} bytes of data do not fit the host's u32 length",
                data.len()
            )));
        }
        Ok(Tensor {
            dims: dims.to_vec(),
            tensor_type,
            data,
        })
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[u32] {
        &self.dims
    }

    /// The element type.
    pub fn tensor_type(&self) -> TensorType {
        self.tensor_type
    }

    /// The raw element bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(result: Result<Tensor<'_>>) -> String {
        match result {
            Err(Error::InvalidTensor(reason)) => reason,
            other => panic!("expected InvalidTensor, got {other:?}"),
        }
    }

    #[test]
    fn byte_sizes_follow_the_type() {
        let sizes = [
            (TensorType::F16, 2),
            (TensorType::F32, 4),
            (TensorType::F64, 8),
            (TensorType::U8, 1),
            (TensorType::I32, 4),
            (TensorType::I64, 8),
        ];
        for (ty, size) in sizes {
            assert_eq!(ty.byte_size(), size, "{ty:?}");
        }
    }

    #[test]
    fn type_codes_match_wasmedge() {
        let codes = [
            (TensorType::F16, 0),
            (TensorType::F32, 1),
            (TensorType::F64, 2),
            (TensorType::U8, 3),
            (TensorType::I32, 4),
            (TensorType::I64, 5),
        ];
        for (ty, code) in codes {
            assert_eq!(ty as u32, code, "{ty:?}");
        }
    }

    #[test]
    fn accepts_matching_data() {
        let data = [0u8; 24];
        let tensor = Tensor::new(&[2, 3], TensorType::F32, &data[..]).unwrap();
        assert_eq!(tensor.dims(), &[2, 3]);
        assert_eq!(tensor.tensor_type(), TensorType::F32);
        assert_eq!(tensor.data().len(), 24);
    }

    #[test]
    fn rejects_empty_dims() {
        assert!(rejection(Tensor::new(&[], TensorType::U8, &[])).contains("dimension"));
    }

    #[test]
    fn rejects_wrong_data_length() {
        let reason = rejection(Tensor::new(&[2, 3], TensorType::F32, &[0u8; 23][..]));
        assert!(reason.contains("need 24 bytes"), "{reason}");
    }

    #[test]
    fn rejects_element_count_overflow() {
        let reason = rejection(Tensor::new(&[65536, 65536], TensorType::U8, &[]));
        assert!(reason.contains("u32::MAX"), "{reason}");
    }

    #[test]
    fn zero_sized_dimension_means_no_data() {
        assert!(Tensor::new(&[1, 0, 3], TensorType::F32, &[]).is_ok());
    }

    #[test]
    fn from_f32_encodes_little_endian() {
        let tensor = Tensor::from_f32(&[2], &[1.0, -2.5]).unwrap();
        assert_eq!(tensor.tensor_type(), TensorType::F32);
        assert_eq!(tensor.data(), &[0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0]);
    }

    #[test]
    fn from_f32_checks_dims() {
        rejection(Tensor::from_f32(&[3], &[1.0, 2.0]));
    }
}

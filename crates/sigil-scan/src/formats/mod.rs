//! One scanner per model format. Each takes a [`crate::source::Slice`] and pushes findings into
//! the scan context; none holds a whole file in memory.

pub(crate) mod compress;
pub mod gguf;
pub(crate) mod keras;
pub(crate) mod legacy_tar;
pub(crate) mod npy;
pub(crate) mod onnx;
pub mod proto;
pub mod safetensors;
pub(crate) mod savedmodel;
pub(crate) mod sevenz;
pub(crate) mod tar;
pub(crate) mod torchscript;
pub(crate) mod zip;

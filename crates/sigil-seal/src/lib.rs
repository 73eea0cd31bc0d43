//! Sigil's encryption at rest: streaming envelope encryption of files, directories and pipes.
//!
//! Each file gets a fresh random AES-256 data key, wrapped by the asset's key through a
//! [`DataKeySource`] (a local key file today, the identity-bound key service later). The body is
//! cut into segments sealed with AES-256-GCM in the STREAM construction ([`stream`]); the header
//! ([`format`]) names the asset, the relative path and the key version and is bound into every
//! segment as associated data. Segments are processed in parallel with a bounded window
//! ([`pipeline`]) and can be read at random ([`range`]).
//!
//! Layers: `format` and `stream` are pure (bytes in, bytes out); `envelope`, `pipeline` and
//! `range` work on any `Read`/`Write`/`Seek`; `files` is the file-system edge.

pub mod envelope;
pub mod error;
pub mod files;
pub mod format;
pub mod key;
pub mod pipeline;
pub mod range;
pub mod stream;

pub use envelope::{Expect, SealOptions, Summary, read_header, seal, unseal};
pub use error::{BindingError, HeaderError, KeyError, SealError, SegmentError};
pub use files::{load_key_file, seal_dir, seal_file, unseal_dir, unseal_file};
pub use format::{Header, KeyRef, Layout};
pub use key::{DataKey, DataKeySource, LocalKey, NewDataKey, WrapContext};
pub use range::SealedReader;

//! The manifest-directory source.

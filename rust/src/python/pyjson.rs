//! JSON bytes → Python objects (in progress).

//! INTERFACE STUB: I fill this in.

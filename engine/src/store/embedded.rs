//! INTERFACE STUB: the store helper fills this in.

//! INTERFACE STUB: the wire helper fills this in.

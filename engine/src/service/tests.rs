//! Service tests (filled in below).

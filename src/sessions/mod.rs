//! Session correlation.

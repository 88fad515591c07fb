//! Lossless follower of a rotating log file.

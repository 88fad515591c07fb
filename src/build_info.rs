//! What this binary was built from, for `--version`, the status page and `build_info`
//! (set by `build.rs`).

/// The package's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision built, or `unknown` (a build from a tarball).
pub const REVISION: &str = env!("PIA_STE_REVISION");
/// `rustc --version` of the compiler that built it.
pub const RUSTC_VERSION: &str = env!("PIA_STE_RUSTC_VERSION");
/// `--version`: `0.1.0 (revision 0123456789ab, rustc 1.88.0 (...))`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("PIA_STE_REVISION"),
    ", ",
    env!("PIA_STE_RUSTC_VERSION"),
    ")"
);

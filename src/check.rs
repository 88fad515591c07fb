//! Checks every config section uses, on the ground floor so each stage's section can: a
//! numeric key's range, and whether two configured paths name one file.

/// Every numeric key has a range: a value past it is an error naming the key, the range and
/// the default, never a panic later (a duration that overflows a clock, a table that cannot
/// fit in memory).
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    default: &str,
) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{key} = {value}: use {}..={} (default {default})",
            range.start(),
            range.end()
        ))
    }
}

/// Same file (by name, or by identity when both exist).
pub fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

//! Build facts for `--version` and `build_info`: the git revision and the compiler's version.
//! Hand-written (two commands) rather than a crate that would bring a tree of dependencies
//! for two strings. A build from a tarball without `.git` says `unknown`, unless the packager
//! sets `PIA_STE_GIT_REVISION`.

use std::path::Path;
use std::process::Command;

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PIA_STE_GIT_REVISION");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(&manifest).args(args));
    // Only this package's own repository: not one that a vendored copy happens to sit in.
    let own = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| Path::new(&top) == Path::new(&manifest));
    let revision = std::env::var("PIA_STE_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| {
            own.then(|| git(&["rev-parse", "--short=12", "HEAD"]))
                .flatten()
        })
        .unwrap_or_else(|| "unknown".into());
    if own {
        // A new commit or checkout changes HEAD or the ref it names (possibly packed).
        for (dir, file) in [("--git-dir", "HEAD"), ("--git-common-dir", "packed-refs")] {
            if let Some(d) = git(&["rev-parse", dir]) {
                println!(
                    "cargo:rerun-if-changed={}",
                    Path::new(&manifest).join(d).join(file).display()
                );
            }
        }
        if let (Some(common), Some(head_ref)) = (
            git(&["rev-parse", "--git-common-dir"]),
            git(&["symbolic-ref", "-q", "HEAD"]),
        ) {
            println!(
                "cargo:rerun-if-changed={}",
                Path::new(&manifest).join(common).join(head_ref).display()
            );
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version =
        output(Command::new(rustc).arg("--version")).unwrap_or_else(|| "rustc unknown".into());
    println!("cargo:rustc-env=PIA_STE_REVISION={revision}");
    println!("cargo:rustc-env=PIA_STE_RUSTC_VERSION={rustc_version}");
}

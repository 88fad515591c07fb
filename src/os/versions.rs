//! Which macOS, which PIA and which CPU the agent runs on: pure parsers of `sw_vers`, of PIA's
//! app bundle `Info.plist` (`CFBundleShortVersionString`) and of `uname -m`, tested on real
//! output under `tests/fixtures/macos/`, and [`read`], what the `Os` seam's `platform` runs.
//! Each value becomes a metric label and a line of a bug report, so each is checked to be a
//! short token: what does not read is `None` with the reason, never a guess.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::command::run;

/// `sw_vers`'s program (the same path on every macOS).
pub const SW_VERS: &str = "/usr/bin/sw_vers";
/// `uname` (macOS and the usual Linux distributions both have it here).
pub const UNAME: &str = "/usr/bin/uname";
/// PIA's app bundle, as PIA's installer puts it (pia-foss/desktop, common/src/builtin/path.cpp:
/// `InstallationDir = "/Applications/" PIA_PRODUCT_NAME ".app"`).
pub const PIA_INFO_PLIST: &str = "/Applications/Private Internet Access.app/Contents/Info.plist";
/// An Info.plist larger than this is not PIA's (its own is about 2 KiB).
const PLIST_MAX: u64 = 1 << 20;
/// Longest value kept: versions, builds and architectures are a few characters.
const TOKEN_MAX: usize = 40;

/// macOS's version as `sw_vers` prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MacosVersion {
    /// `ProductVersion`, e.g. `14.4.1`.
    pub version: String,
    /// `BuildVersion`, e.g. `23E224`: changes with every update, even a security response.
    pub build: String,
}

/// The platform's versions; `None` where unknown (not a Mac, PIA not installed, a tool failed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub macos: Option<MacosVersion>,
    /// PIA's `CFBundleShortVersionString`, e.g. `3.7.0` (no build number: PIA writes
    /// MAJOR.MINOR.PATCH there).
    pub pia_version: Option<String>,
    /// `uname -m`: `arm64` (Apple Silicon), `x86_64`, `aarch64`.
    pub arch: Option<String>,
    /// Why a value is missing, one reason each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
}

/// A value fit for a label and a report line: short, letters, digits and `.+-_()`.
fn token(value: &str) -> Option<String> {
    let v = value.trim();
    let fits = !v.is_empty()
        && v.len() <= TOKEN_MAX
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-_()".contains(c));
    fits.then(|| v.to_owned())
}

/// `sw_vers` with no options: `Name:<tabs>value` lines; `ProductVersion` and `BuildVersion`
/// are needed, the rest (`ProductName`, `ProductVersionExtra`, `ReleaseType`) are not.
pub fn parse_sw_vers(text: &str) -> Result<MacosVersion, String> {
    let field = |name: &str| {
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v)
    };
    let get = |name: &str| match field(name) {
        Some(v) => token(v).ok_or_else(|| format!("sw_vers: {name} {:?} not understood", v.trim())),
        None => Err(format!("sw_vers: no {name}")),
    };
    Ok(MacosVersion {
        version: get("ProductVersion")?,
        build: get("BuildVersion")?,
    })
}

/// `CFBundleShortVersionString` of an XML property list: the `<string>` after its `<key>`.
/// A binary plist is an error (PIA's build writes XML).
pub fn parse_info_plist_version(text: &str) -> Result<String, String> {
    const KEY: &str = "<key>CFBundleShortVersionString</key>";
    if text.starts_with("bplist") {
        return Err("Info.plist: a binary property list, not read".into());
    }
    let after = text
        .split_once(KEY)
        .ok_or("Info.plist: no CFBundleShortVersionString")?
        .1
        .trim_start();
    let value = after
        .strip_prefix("<string>")
        .and_then(|s| s.split_once("</string>"))
        .ok_or("Info.plist: CFBundleShortVersionString is not followed by a <string>")?
        .0;
    token(value).ok_or_else(|| format!("Info.plist: version {value:?} not understood"))
}

/// A saved version line (`pia-version.txt`): one short token.
pub fn parse_version_line(text: &str) -> Result<String, String> {
    token(text).ok_or_else(|| format!("version {:?} not understood", text.trim()))
}

/// `uname -m`: one word.
pub fn parse_uname_m(text: &str) -> Result<String, String> {
    token(text).ok_or_else(|| format!("uname -m: {:?} not understood", text.trim()))
}

/// A tool's stdout, or why not.
fn output(program: &str, args: &[&str], timeout: Duration) -> Result<String, String> {
    run(Path::new(program), args, None, timeout)
        .map(|o| o.stdout)
        .map_err(|e| e.to_string())
}

/// At most [`PLIST_MAX`] bytes of a file, or why not.
fn read_capped(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(PLIST_MAX).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

/// Raw material of [`Platform`], as read from the system or from saved files; `Err` with why
/// it could not be read.
#[derive(Clone, Debug)]
pub struct Sources {
    pub sw_vers: Option<Result<String, String>>,
    pub info_plist: Option<Result<String, String>>,
    pub uname_m: Result<String, String>,
}

impl Sources {
    /// What this machine says: `sw_vers` and PIA's plist on macOS only, `uname -m` everywhere.
    pub fn read(timeout: Duration) -> Sources {
        let mac = cfg!(target_os = "macos");
        Sources {
            sw_vers: mac.then(|| output(SW_VERS, &[], timeout)),
            info_plist: mac.then(|| read_capped(Path::new(PIA_INFO_PLIST))),
            uname_m: output(UNAME, &["-m"], timeout),
        }
    }

    /// The versions these sources say; each failure kept in `unavailable`.
    pub fn judge(&self) -> Platform {
        let mut unavailable = Vec::new();
        let sw_vers = self
            .sw_vers
            .clone()
            .map(|r| r.and_then(|t| parse_sw_vers(&t)));
        let plist = (self.info_plist.clone()).map(|r| r.and_then(|t| parse_info_plist_version(&t)));
        let uname = self.uname_m.clone().and_then(|t| parse_uname_m(&t));
        Platform {
            macos: sw_vers.and_then(|r| keep(&mut unavailable, r)),
            pia_version: plist.and_then(|r| keep(&mut unavailable, r)),
            arch: keep(&mut unavailable, uname),
            unavailable,
        }
    }
}

/// The value, or `None` with the reason kept.
fn keep<T>(unavailable: &mut Vec<String>, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| unavailable.push(e)).ok()
}

/// This machine's platform, as the `Os` seam's `platform` answers.
pub fn read(timeout: Duration) -> Platform {
    Sources::read(timeout).judge()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::fixture;

    #[test]
    fn sw_vers_reads_the_posted_outputs() {
        let catalina = parse_sw_vers(&fixture("macos", "sw_vers-catalina.txt")).unwrap();
        assert_eq!(
            catalina,
            MacosVersion {
                version: "10.15.5".into(),
                build: "19F101".into()
            }
        );
        let man = parse_sw_vers(&fixture("macos", "sw_vers-manpage.txt")).unwrap();
        assert_eq!(
            (man.version.as_str(), man.build.as_str()),
            ("10.3", "7A100")
        );
        // The tab layout of macOS 11+, with a Rapid Security Response's extra line.
        let rsr = "ProductName:\t\tmacOS\nProductVersion:\t\t13.4.1\nProductVersionExtra:\t(a)\nBuildVersion:\t\t22F770820d\n";
        assert_eq!(parse_sw_vers(rsr).unwrap().build, "22F770820d");
    }

    #[test]
    fn sw_vers_without_a_field_or_with_junk_is_an_error() {
        assert_eq!(
            parse_sw_vers("ProductName:\tmacOS\nProductVersion:\t14.4\n").unwrap_err(),
            "sw_vers: no BuildVersion"
        );
        let junk = parse_sw_vers("ProductVersion: 14 <script>\nBuildVersion: 23E224\n");
        assert!(junk.unwrap_err().contains("not understood"));
        assert!(parse_sw_vers("").is_err());
    }

    #[test]
    fn info_plist_gives_pias_short_version() {
        let plist = fixture("macos", "pia-Info.plist");
        assert_eq!(parse_info_plist_version(&plist).unwrap(), "3.5.7");
        // Not CFBundleVersion nor any other key's string.
        let moved = plist.replace("<key>CFBundleShortVersionString</key>", "<key>Other</key>");
        assert_eq!(
            parse_info_plist_version(&moved).unwrap_err(),
            "Info.plist: no CFBundleShortVersionString"
        );
        assert!(parse_info_plist_version("bplist00\u{1}").is_err());
        let long = plist.replace(
            "3.5.7</string>\n\t<key>CFBundleVersion",
            &format!("{}</string>\n\t<key>CFBundleVersion", "9".repeat(500)),
        );
        assert!(parse_info_plist_version(&long).is_err());
    }

    #[test]
    fn uname_m_is_one_word() {
        assert_eq!(parse_uname_m("arm64\n").unwrap(), "arm64");
        assert_eq!(parse_uname_m("x86_64\n").unwrap(), "x86_64");
        assert!(parse_uname_m("arm64 x\n").is_err());
        assert!(parse_uname_m("").is_err());
    }

    #[test]
    fn judging_keeps_every_value_and_every_reason() {
        let sources = Sources {
            sw_vers: Some(Ok(fixture("macos", "sw_vers-catalina.txt"))),
            info_plist: Some(Err("Info.plist: No such file or directory".into())),
            uname_m: Ok("arm64\n".into()),
        };
        let p = sources.judge();
        assert_eq!(p.macos.unwrap().version, "10.15.5");
        assert_eq!((p.pia_version, p.arch.as_deref()), (None, Some("arm64")));
        assert_eq!(p.unavailable, ["Info.plist: No such file or directory"]);
        let linux = Sources {
            sw_vers: None,
            info_plist: None,
            uname_m: Err("uname: could not run".into()),
        }
        .judge();
        assert_eq!((linux.macos, linux.arch), (None, None));
        assert_eq!(linux.unavailable, ["uname: could not run"]);
    }

    #[test]
    fn this_machine_answers_its_architecture() {
        let p = read(Duration::from_secs(5));
        // uname says arm64 where Rust says aarch64 on a Mac.
        let arch = match std::env::consts::ARCH {
            "aarch64" if cfg!(target_os = "macos") => "arm64",
            other => other,
        };
        assert_eq!(p.arch.as_deref(), Some(arch), "{p:?}");
        assert_eq!(p.macos.is_some(), cfg!(target_os = "macos"), "{p:?}");
    }
}

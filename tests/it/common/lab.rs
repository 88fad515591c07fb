//! The split-tunnel lab (`lab/lab.sh`): namespaces with a "Mac", its router, a VPN server and
//! an internet with a what-is-my-IP server, removed on drop. Needs root, iproute2, nftables and
//! python3; without them the tests using it fail and say why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::BIN;

pub fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lab/lab.sh")
}

pub fn require_prerequisites() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the lab needs root to create network namespaces: run the tests as root (CI does)"
    );
    for tool in ["ip", "nft", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "the lab needs `{tool}`: sudo bash .ci/setup (installs iproute2, nftables, python3)"
        );
    }
}

/// The lab's namespaces, removed on drop even when the test fails.
pub struct Lab {
    pub prefix: String,
}

impl Lab {
    pub fn up(tag: &str) -> Lab {
        require_prerequisites();
        let prefix = format!("{tag}{}", std::process::id() % 100_000);
        let lab = Lab { prefix };
        lab.script(&["up"]);
        lab
    }

    pub fn script(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(lab_script())
            .arg(args[0])
            .arg(&self.prefix)
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lab.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn mac(&self) -> String {
        format!("{}mac", self.prefix)
    }

    /// The agent binary inside the `mac` namespace.
    pub fn agent(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.mac(), BIN])
            .args(args)
            .output()
            .unwrap()
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.mac()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// GET inside the `mac` namespace, where the agent listens.
    pub fn get(&self, url: &str) -> (u16, String) {
        http_in(&self.mac(), "GET", url, None)
    }
}

/// An HTTP request from inside namespace `ns` (python3's urllib): the status (0 when no answer)
/// and the body. `bearer`: an `Authorization: Bearer` token.
pub fn http_in(ns: &str, method: &str, url: &str, bearer: Option<&str>) -> (u16, String) {
    let script = "import sys, urllib.request, urllib.error\n\
req = urllib.request.Request(sys.argv[2], method=sys.argv[1])\n\
if len(sys.argv) > 3: req.add_header('Authorization', 'Bearer ' + sys.argv[3])\n\
try:\n    r = urllib.request.urlopen(req, timeout=5); print(r.status); print(r.read().decode())\n\
except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n\
except Exception as e:\n    print(0); print(e)\n";
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", script, method, url])
        .args(bearer)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, body) = text.split_once('\n').unwrap_or(("0", ""));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(lab_script())
            .arg("down")
            .arg(&self.prefix)
            .output();
    }
}

//! App identities: interned code-signing ids, capped because they come from an untrusted file.
//!
//! Anyone who can write a line the agent reads (the error log sits in `/tmp`) chooses these
//! strings, so what becomes a label is bounded here: at most `cap` distinct apps, each at
//! most [`MAX_APP_BYTES`] of `[A-Za-z0-9._-]` (the shape of a code-signing id), never one of
//! the agent's own values `unknown` and `other`. Anything else is counted
//! ([`Apps::invalid`]) and folds into `other`: it costs a counter, never a series or memory.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::proxy_log::Text;

/// Index of an app in [`Apps`]. Cheap to copy and store per session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AppId(pub u32);

impl AppId {
    /// The session's creation line was never seen and no later line named the app.
    pub const UNKNOWN: AppId = AppId(0);
    /// Apps beyond the cap.
    pub const OTHER: AppId = AppId(1);
}

/// Longest app id kept as a label. Real ids are short (`com.plexapp.plexmediaserver`: 27).
pub const MAX_APP_BYTES: usize = 128;

/// Labels PIA's own bypass list may take beyond the cap.
pub const MAX_RESERVED: usize = 64;

/// The id could be a code-signing identifier, and is not a value the agent itself uses.
pub fn valid_app_id(b: &[u8]) -> bool {
    !b.is_empty()
        && b.len() <= MAX_APP_BYTES
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
        && b != b"unknown"
        && b != b"other"
}

/// Interner with a cap on distinct apps; the rest fold into `other`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "AppsRepr", into = "AppsRepr")]
pub struct Apps {
    /// Shared with the closed sessions handed on (see [`Apps::shared_name`]).
    names: Vec<Arc<str>>,
    index: FxHashMap<Box<[u8]>, AppId>,
    cap: usize,
    folded: u64,
    invalid: u64,
}

#[derive(Serialize, Deserialize)]
struct AppsRepr {
    names: Vec<String>,
    cap: usize,
    folded: u64,
    #[serde(default)]
    invalid: u64,
}

impl From<AppsRepr> for Apps {
    fn from(r: AppsRepr) -> Self {
        let index = r
            .names
            .iter()
            .enumerate()
            .skip(2)
            .map(|(i, n)| (n.as_bytes().into(), AppId(i as u32)))
            .collect();
        Apps {
            names: r.names.into_iter().map(Arc::from).collect(),
            index,
            cap: r.cap,
            folded: r.folded,
            invalid: r.invalid,
        }
    }
}

impl From<Apps> for AppsRepr {
    fn from(a: Apps) -> Self {
        AppsRepr {
            names: a.names.iter().map(|n| n.to_string()).collect(),
            cap: a.cap,
            folded: a.folded,
            invalid: a.invalid,
        }
    }
}

impl Apps {
    pub fn new(cap: usize) -> Apps {
        Apps {
            names: vec!["unknown".into(), "other".into()],
            index: FxHashMap::default(),
            cap,
            folded: 0,
            invalid: 0,
        }
    }

    /// The id of `name`; [`AppId::OTHER`] once `cap` distinct apps are known, or when `name`
    /// is not a valid app id ([`valid_app_id`], counted in [`Apps::invalid`]).
    pub fn intern(&mut self, name: Text<'_>) -> AppId {
        if let Some(&id) = self.index.get(name.bytes()) {
            return id;
        }
        if !valid_app_id(name.bytes()) {
            self.invalid += 1;
            return AppId::OTHER;
        }
        if self.names.len() - 2 >= self.cap {
            self.folded += 1;
            return AppId::OTHER;
        }
        let id = AppId(self.names.len() as u32);
        self.index.insert(name.bytes().into(), id);
        self.names.push(Arc::from(name.lossy()));
        id
    }

    /// Interns `name` past the cap, for apps PIA itself lists as bypass apps; at most
    /// [`MAX_RESERVED`] of them beyond the cap, and only valid ids.
    pub fn reserve(&mut self, name: Text<'_>) {
        if self.index.contains_key(name.bytes()) {
            return;
        }
        if !valid_app_id(name.bytes()) {
            self.invalid += 1;
            return;
        }
        if self.names.len() - 2 >= self.cap + MAX_RESERVED {
            return;
        }
        self.index
            .insert(name.bytes().into(), AppId(self.names.len() as u32));
        self.names.push(Arc::from(name.lossy()));
    }

    /// The config's cap, on every start: apps already known keep their label, new ones fold
    /// once there are `cap` of them.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    /// Restored names under today's rules for live input (a checkpoint may come from a
    /// version that checked less): a name that is not a valid id folds into `other` (counted
    /// in [`Apps::invalid`]), and names past the cap plus PIA's reserved ones fold too
    /// (counted in [`Apps::folded`]). Returns where each old id went, indexed by old id.
    pub fn refold(&mut self) -> Vec<AppId> {
        let old = std::mem::replace(&mut self.names, vec!["unknown".into(), "other".into()]);
        self.index.clear();
        let mut remap = vec![AppId::UNKNOWN, AppId::OTHER];
        for name in old.into_iter().skip(2) {
            let to = if !valid_app_id(name.as_bytes()) {
                self.invalid += 1;
                AppId::OTHER
            } else if self.names.len() - 2 >= self.cap + MAX_RESERVED
                || self.index.contains_key(name.as_bytes())
            {
                self.folded += 1;
                AppId::OTHER
            } else {
                let id = AppId(self.names.len() as u32);
                self.index.insert(name.as_bytes().into(), id);
                self.names.push(name);
                id
            };
            remap.push(to);
        }
        remap
    }

    /// The two labels of the agent's own come first, and names are distinct.
    pub fn check(&self) -> Result<(), String> {
        if self
            .names
            .get(..2)
            .is_none_or(|n| *n[0] != *"unknown" || *n[1] != *"other")
        {
            return Err("app table does not start with unknown, other".into());
        }
        if self.index.len() != self.names.len() - 2 {
            return Err("app table has duplicate names".into());
        }
        Ok(())
    }

    /// Names that were not valid app ids (too long, other characters, `other`/`unknown`).
    pub fn invalid(&self) -> u64 {
        self.invalid
    }

    pub fn name(&self, id: AppId) -> &str {
        &self.names[id.0 as usize]
    }

    /// [`Apps::name`], shared: what a closed session carries out of `sessions/`.
    pub fn shared_name(&self, id: AppId) -> Arc<str> {
        self.names[id.0 as usize].clone()
    }

    /// Lookups that folded an app into `other` because the cap was reached.
    pub fn folded(&self) -> u64 {
        self.folded
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_folds_into_other_and_survives_serde() {
        let mut apps = Apps::new(2);
        let a = apps.intern("com.a".into());
        assert_eq!(apps.intern("com.b".into()), AppId(3));
        assert_eq!(apps.intern("com.c".into()), AppId::OTHER);
        assert_eq!(apps.intern("com.a".into()), a);
        assert_eq!(apps.folded(), 1);
        // Values that collide when joined without a separator stay apart.
        let mut apps2 = Apps::new(8);
        assert_ne!(apps2.intern("ab".into()), apps2.intern("a".into()));
        // Invalid UTF-8, over-long ids and the agent's own labels fold into other, counted.
        let long = "a".repeat(MAX_APP_BYTES + 1);
        for bad in [
            Text(b"com.\xff"),
            Text(long.as_bytes()),
            "other".into(),
            "unknown".into(),
            "com.a b".into(),
            "".into(),
        ] {
            assert_eq!(apps2.intern(bad), AppId::OTHER);
        }
        assert_eq!((apps2.invalid(), apps2.folded(), apps2.len()), (6, 0, 4));
        assert_eq!(
            apps2.intern("a".repeat(MAX_APP_BYTES).as_str().into()),
            AppId(4)
        );
        let mut back: Apps = serde_json::from_str(&serde_json::to_string(&apps).unwrap()).unwrap();
        assert_eq!(back.intern("com.b".into()), AppId(3));
        assert_eq!(back.name(a), "com.a");
    }

    /// A table an earlier version saved, with names today's intern refuses.
    #[test]
    fn refold_applies_todays_rules_to_restored_names() {
        let long = "x".repeat(100 * 1024);
        let mut names: Vec<String> = ["unknown", "other", "com.a", &long, "b c", "com.b"]
            .map(String::from)
            .to_vec();
        names.extend((0..MAX_RESERVED + 3).map(|i| format!("com.r{i}")));
        let saved = serde_json::json!({"names": names, "cap": 1, "folded": 0});
        let mut apps: Apps = serde_json::from_value(saved).unwrap();
        let remap = apps.refold();
        assert_eq!(
            remap[..6],
            [
                AppId::UNKNOWN,
                AppId::OTHER,
                AppId(2),
                AppId::OTHER,
                AppId::OTHER,
                AppId(3)
            ]
        );
        // Two refused as ids; past the cap plus the reserved room, the rest fold.
        assert_eq!(apps.invalid(), 2);
        assert_eq!(apps.len(), 2 + 1 + MAX_RESERVED);
        assert_eq!(apps.folded(), 4);
        assert!(apps.check().is_ok());
        assert_eq!(apps.intern("com.b".into()), AppId(3));
        assert_eq!(apps.intern("com.new".into()), AppId::OTHER);
    }
}

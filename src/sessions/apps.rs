//! App identities: interned code-signing ids, capped because they come from an untrusted file.

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

/// Interner with a cap on distinct apps; the rest fold into `other`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "AppsRepr", into = "AppsRepr")]
pub struct Apps {
    names: Vec<String>,
    index: FxHashMap<Box<[u8]>, AppId>,
    cap: usize,
    folded: u64,
}

#[derive(Serialize, Deserialize)]
struct AppsRepr {
    names: Vec<String>,
    cap: usize,
    folded: u64,
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
            names: r.names,
            index,
            cap: r.cap,
            folded: r.folded,
        }
    }
}

impl From<Apps> for AppsRepr {
    fn from(a: Apps) -> Self {
        AppsRepr {
            names: a.names,
            cap: a.cap,
            folded: a.folded,
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
        }
    }

    /// The id of `name`; [`AppId::OTHER`] once `cap` distinct apps are known. Invalid UTF-8 is
    /// replaced (U+FFFD) in the label, and both spellings map to one id.
    pub fn intern(&mut self, name: Text<'_>) -> AppId {
        if let Some(&id) = self.index.get(name.bytes()) {
            return id;
        }
        let label = name.lossy();
        if let Some(&id) = self.index.get(label.as_bytes()) {
            self.index.insert(name.bytes().into(), id);
            return id;
        }
        if self.index.len() >= self.cap {
            self.folded += 1;
            return AppId::OTHER;
        }
        let id = AppId(self.names.len() as u32);
        self.index.insert(label.as_bytes().into(), id);
        self.index.insert(name.bytes().into(), id);
        self.names.push(label.into_owned());
        id
    }

    pub fn name(&self, id: AppId) -> &str {
        &self.names[id.0 as usize]
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
        // Invalid UTF-8 and its replacement are one app.
        let bad = apps2.intern(Text(b"com.\xff"));
        assert_eq!(
            (apps2.intern("com.\u{fffd}".into()), apps2.name(bad)),
            (bad, "com.\u{fffd}")
        );
        let mut back: Apps = serde_json::from_str(&serde_json::to_string(&apps).unwrap()).unwrap();
        assert_eq!(back.intern("com.b".into()), AppId(3));
        assert_eq!(back.name(a), "com.a");
    }
}

//! Fixed label sets: the enums whose variants are every value a metric label (and the same
//! field in JSON) may take. Each is declared as a plain enum under `#[apply(label_set!)]`,
//! which gives all of them the same derives, so every set iterates, counts and prints the same
//! way, with one spelling per variant in `/metrics` and in JSON (snake_case, by both strum and
//! serde).
//!
//! An attribute alias (macro_rules_attribute) rather than a `macro_rules!` wrapping the enum:
//! the enums stay ordinary items that rustfmt formats, with their doc comments, per-variant
//! attributes and extra derives (`Ord`, `Deserialize`, `Default`) written as usual after it.
//! At the bottom of the layering: the stages that own a label set, the lowest included, import
//! it.

macro_rules_attribute::attribute_alias! {
    // The derives alone, for a set spelled another way (`BackendKind`: kebab-case, as its
    // configuration value).
    #[apply(label_derives!)] =
        #[derive(
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
            Hash,
            ::serde::Serialize,
            ::strum::EnumIter,
            ::strum::EnumCount,
            ::strum::IntoStaticStr,
            ::strum::Display,
        )];

    #[apply(label_set!)] =
        #[::macro_rules_attribute::apply(crate::labels::label_derives!)]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")];
}

#[cfg(test)]
mod tests {
    use macro_rules_attribute::apply;
    use strum::{EnumCount, IntoEnumIterator};

    /// A set as the stages write one: a doc comment, extra derives, a per-variant attribute.
    #[apply(label_set!)]
    #[derive(Default, PartialOrd, Ord, serde::Deserialize)]
    enum Light {
        /// Off until told otherwise.
        #[default]
        Off,
        SlowBlink,
        On,
    }

    #[apply(label_derives!)]
    #[serde(rename_all = "kebab-case")]
    #[strum(serialize_all = "kebab-case")]
    enum Backend {
        Pf,
        PolicyRouting,
    }

    #[test]
    fn one_spelling_in_metrics_and_json() {
        let labels: Vec<&'static str> = Light::iter().map(<&'static str>::from).collect();
        assert_eq!(labels, ["off", "slow_blink", "on"]);
        assert_eq!(Light::COUNT, 3);
        assert_eq!(Light::SlowBlink.to_string(), "slow_blink");
        assert_eq!(
            serde_json::to_string(&Light::SlowBlink).unwrap(),
            "\"slow_blink\""
        );
        let back: Light = serde_json::from_str("\"slow_blink\"").unwrap();
        assert_eq!(back, Light::SlowBlink);
        assert!(serde_json::from_str::<Light>("\"SlowBlink\"").is_err());
        assert_eq!(Light::default(), Light::Off);
        assert!(Light::Off < Light::On);
    }

    #[test]
    fn derives_alone_take_another_spelling() {
        let labels: Vec<&'static str> = Backend::iter().map(<&'static str>::from).collect();
        assert_eq!(labels, ["pf", "policy-routing"]);
        assert_eq!(
            serde_json::to_string(&Backend::PolicyRouting).unwrap(),
            "\"policy-routing\""
        );
    }
}

//! Names a document read back (the history store's) gives where the live model holds
//! `&'static str`: each distinct one is kept once for the life of the process, at most
//! [`MAX`] of them and none longer than [`LONGEST`] (they come from small fixed sets:
//! states, hooks, HBase roles).
//!
//! Owns: the table of kept names. Must not: keep names without bound.

use std::{collections::HashSet, sync::Mutex};

use serde::Deserialize as _;

/// A name of the model's fixed sets, read back through [`de`]. (Spelt as an alias so serde
/// does not take a `&'static str` field for one borrowed from the input.)
pub type Name = &'static str;

/// Distinct names kept at most; past it a name reads as `?`.
const MAX: usize = 1024;
/// The longest name kept (the longest real one is a few words); a longer one reads as `?`.
const LONGEST: usize = 64;

/// Kept names, at most `max`.
struct Table {
    kept: HashSet<&'static str>,
    max: usize,
}

impl Table {
    fn intern(&mut self, name: &str) -> &'static str {
        if let Some(k) = self.kept.get(name) {
            return k;
        }
        if self.kept.len() >= self.max || name.len() > LONGEST {
            return "?";
        }
        let k: &'static str = Box::leak(name.to_owned().into_boxed_str());
        self.kept.insert(k);
        k
    }
}

static KEPT: Mutex<Option<Table>> = Mutex::new(None);

/// `name` as a `&'static str`: the one kept before, else kept now.
pub fn intern(name: &str) -> &'static str {
    let Ok(mut table) = KEPT.lock() else {
        return "?";
    };
    table
        .get_or_insert_with(|| Table {
            kept: HashSet::new(),
            max: MAX,
        })
        .intern(name)
}

pub fn de<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    String::deserialize(d).map(|s| intern(&s))
}

pub fn de_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'static str>, D::Error> {
    Option::<String>::deserialize(d).map(|s| s.map(|s| intern(&s)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_name_is_kept_once_and_the_table_is_bounded() {
        let a = super::intern("ring-buffer");
        let b = super::intern(&String::from("ring-buffer"));
        assert!(std::ptr::eq(a, b));
        let mut t = super::Table {
            kept: Default::default(),
            max: 3,
        };
        for i in 0..5 {
            t.intern(&format!("n{i}"));
        }
        assert_eq!(t.kept.len(), 3);
        assert_eq!(t.intern("one past the bound"), "?");
        assert_eq!(t.intern("n1"), "n1");
        assert_eq!(super::intern(&"x".repeat(super::LONGEST + 1)), "?");
    }
}

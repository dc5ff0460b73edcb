//! What a type or field requires of its caller (Federation's `@authenticated` and
//! `@requiresScopes`) and whether a caller meets it: one rule for the router, which enforces
//! it, and for the registry's check, which compares it between two supergraphs (a change that
//! refuses a caller the old rule let through is breaking).

use std::collections::BTreeSet;

/// What one field or type requires of its caller: a signed-in caller (a user or a partner),
/// and, when there are alternatives, all the scopes of one of them. `@requiresScopes` always
/// requires a signed-in caller: only those hold scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    pub authenticated: bool,
    /// Alternatives, each a set of scopes that must all be held; empty means no scope needed.
    pub scopes: Vec<BTreeSet<String>>,
}

impl Requirement {
    /// Nothing required: anyone, signed in or not.
    pub fn is_empty(&self) -> bool {
        !self.authenticated && self.scopes.is_empty()
    }

    /// Both requirements at once (scopes: every alternative of one combined with every
    /// alternative of the other, without the alternatives another makes needless).
    pub fn and(&self, other: &Requirement) -> Requirement {
        let scopes = match (self.scopes.is_empty(), other.scopes.is_empty()) {
            (true, _) => other.scopes.clone(),
            (_, true) => self.scopes.clone(),
            _ => fewest(
                self.scopes
                    .iter()
                    .flat_map(|a| other.scopes.iter().map(move |b| a | b))
                    .collect(),
            ),
        };
        Requirement {
            authenticated: self.authenticated || other.authenticated,
            scopes,
        }
    }

    /// Whether a caller, signed in or not, holding `scopes`, meets the requirement.
    pub fn lets_through(&self, signed_in: bool, scopes: &BTreeSet<String>) -> bool {
        if self.is_empty() {
            return true;
        }
        signed_in && (self.scopes.is_empty() || self.scopes.iter().any(|set| set.is_subset(scopes)))
    }

    /// Whether some caller this requirement lets through is refused by `new`. Meeting a
    /// requirement only gets easier with more scopes and being signed in, so the callers with
    /// the least that `self` lets through are the ones to try.
    pub fn refuses_more(&self, new: &Requirement) -> bool {
        let none = BTreeSet::new();
        if self.is_empty() {
            return !new.lets_through(false, &none);
        }
        if self.scopes.is_empty() {
            return !new.lets_through(true, &none);
        }
        self.scopes.iter().any(|set| !new.lets_through(true, set))
    }
}

/// `alternatives` without repeats and without any that holds another whole (whoever holds the
/// smaller one is let through already), in order: the same callers are let through, and
/// requirements combined again and again (one per implementation of an interface) stay as
/// small as what they mean.
fn fewest(mut alternatives: Vec<BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    alternatives.sort();
    alternatives.dedup();
    let needed: Vec<bool> = alternatives
        .iter()
        .map(|set| {
            !alternatives
                .iter()
                .any(|other| other != set && other.is_subset(set))
        })
        .collect();
    alternatives
        .into_iter()
        .zip(needed)
        .filter_map(|(set, needed)| needed.then_some(set))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Requirement = Requirement {
        authenticated: false,
        scopes: Vec::new(),
    };
    const SIGNED_IN: Requirement = Requirement {
        authenticated: true,
        scopes: Vec::new(),
    };

    /// `@requiresScopes(scopes: sets)`: signed in, with one of the sets.
    fn scoped(sets: &[&[&str]]) -> Requirement {
        Requirement {
            authenticated: true,
            scopes: sets
                .iter()
                .map(|set| set.iter().map(|s| (*s).to_owned()).collect())
                .collect(),
        }
    }

    fn same(a: &Requirement, b: &Requirement) -> bool {
        !a.refuses_more(b) && !b.refuses_more(a)
    }

    #[test]
    fn a_requirement_refuses_more_when_some_caller_it_let_through_is_refused() {
        let ai = scoped(&[&["ai"]]);
        let ai_or_explorer = scoped(&[&["ai"], &["explorer"]]);
        let ai_and_explorer = scoped(&[&["ai", "explorer"]]);
        assert!(OPEN.refuses_more(&SIGNED_IN));
        assert!(OPEN.refuses_more(&ai));
        assert!(SIGNED_IN.refuses_more(&ai));
        assert!(ai_or_explorer.refuses_more(&ai));
        assert!(ai.refuses_more(&ai_and_explorer));
        // `[[]]`: any signed-in caller, whom an open field let through signed out too.
        assert!(OPEN.refuses_more(&scoped(&[&[]])));
        assert!(scoped(&[]).refuses_more(&ai));
        // Only more callers let through.
        assert!(!SIGNED_IN.refuses_more(&OPEN));
        assert!(!ai.refuses_more(&ai_or_explorer));
        assert!(!ai_and_explorer.refuses_more(&ai));
        assert!(!ai.refuses_more(&SIGNED_IN));
    }

    #[test]
    fn requirements_written_differently_that_let_the_same_callers_through_are_the_same() {
        assert!(same(&SIGNED_IN, &scoped(&[])));
        assert!(same(&SIGNED_IN, &scoped(&[&[]])));
        assert!(same(&scoped(&[&["a"], &["b"]]), &scoped(&[&["b"], &["a"]])));
        assert!(same(
            &scoped(&[&["ai"]]),
            &SIGNED_IN.and(&scoped(&[&["ai"]]))
        ));
    }

    #[test]
    fn requirements_combined_again_and_again_stay_as_small_as_what_they_mean() {
        let either = scoped(&[&["a"], &["b"]]);
        let mut combined = either.clone();
        for _ in 0..20 {
            combined = combined.and(&either);
        }
        assert_eq!(combined, either);
        assert_eq!(
            scoped(&[&["a"]]).and(&scoped(&[&["a"], &["b"]])),
            scoped(&[&["a"]])
        );
    }
}

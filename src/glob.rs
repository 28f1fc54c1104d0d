//! Redis-style glob patterns over bytes, for `SCAN … MATCH`, `PSUBSCRIBE` and
//! `PUBSUB CHANNELS`.
//!
//! Why our own: the pattern language is Redis's (`stringmatchlen`), not a file-path glob —
//! `*` and `?` match any byte including `/`, `[abc]`, `[^a]` and `[a-z]` are classes over bytes,
//! and `\x` matches `x` literally. Clients send patterns they already use against Redis, so the
//! same pattern must match the same keys and channels here.
//!
//! Promises: [`glob_match`] runs in O(pattern × text) time and constant space whatever the
//! pattern (a hostile `*a*a*a*…b` cannot make it exponential, unlike naive backtracking); it
//! never panics on malformed patterns (an unclosed `[` is taken as a class running to the end of
//! the pattern, a trailing `\` as a literal `\`, as Redis does).

/// Whether `text` matches the Redis glob `pattern`.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern just past it, and the text position
    // the star currently stops at.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    // Collapse runs of stars; the star first matches nothing.
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    resume = Some((p, t));
                    continue;
                }
                _ => {
                    if let Some(next) = match_one(pattern, p, text[t]) {
                        p = next;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: let the last star swallow one more byte, or fail.
        match resume {
            Some((star_p, star_t)) => {
                p = star_p;
                t = star_t + 1;
                resume = Some((star_p, star_t + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte `c` against the pattern element at `p` (not a `*`): the position after
/// that element when it matches.
fn match_one(pattern: &[u8], p: usize, c: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == c).then_some(p + 2),
        b'[' => {
            let (matched, next) = match_class(pattern, p + 1, c);
            matched.then_some(next)
        }
        literal => (literal == c).then_some(p + 1),
    }
}

/// Matches `c` against the class starting at `p` (just past `[`): whether it matched, and the
/// position just past the closing `]` (or the pattern's end when it has none).
fn match_class(pattern: &[u8], mut p: usize, c: u8) -> (bool, usize) {
    let negate = pattern.get(p) == Some(&b'^');
    if negate {
        p += 1;
    }
    let mut matched = false;
    while p < pattern.len() && pattern[p] != b']' {
        if pattern[p] == b'\\' && p + 1 < pattern.len() {
            matched |= pattern[p + 1] == c;
            p += 2;
        } else if p + 2 < pattern.len() && pattern[p + 1] == b'-' && pattern[p + 2] != b']' {
            let (lo, hi) = (
                pattern[p].min(pattern[p + 2]),
                pattern[p].max(pattern[p + 2]),
            );
            matched |= (lo..=hi).contains(&c);
            p += 3;
        } else {
            matched |= pattern[p] == c;
            p += 1;
        }
    }
    // Past the `]`, if there is one.
    let next = (p + 1).min(pattern.len());
    (matched != negate, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        glob_match(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*", ""));
        assert!(m("*", "anything/at all"));
        assert!(m("user:*", "user:42"));
        assert!(!m("user:*", "session:42"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("*a*b", "xxaxxb"));
        assert!(!m("*a*b", "xxaxxbc"));
        assert!(m("a**b", "ab"));
        assert!(!m("", "a"));
        assert!(m("", ""));
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(m("h[b-a]llo", "hallo"), "a reversed range is still a range");
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("[\\]]", "]"));
        // Malformed patterns do not panic.
        assert!(m("[abc", "b"));
        assert!(m("ab\\", "ab\\"));
        assert!(!m("[", "x"));
    }

    #[test]
    fn a_hostile_pattern_stays_linear() {
        let pattern = "*a".repeat(200) + "b";
        let text = "a".repeat(5_000);
        // Naive backtracking would never finish; this returns at once.
        assert!(!glob_match(pattern.as_bytes(), text.as_bytes()));
    }

    /// A naive recursive matcher (exponential, fine on tiny inputs) as the reference.
    fn reference(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') => (0..=t.len()).any(|i| reference(&p[1..], &t[i..])),
            Some(_) => {
                let Some(&c) = t.first() else { return false };
                match match_one(p, 0, c) {
                    Some(next) => reference(&p[next..], &t[1..]),
                    None => false,
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_a_naive_matcher(
            p in proptest::collection::vec(proptest::sample::select(b"ab*?[]^-\\".to_vec()), 0..8),
            t in proptest::collection::vec(proptest::sample::select(b"ab]-".to_vec()), 0..8),
        ) {
            proptest::prop_assert_eq!(glob_match(&p, &t), reference(&p, &t));
        }
    }
}

//! Redis-style glob patterns (`SCAN … MATCH`, `CONFIG GET`, `COMMAND`-style filters):
//! `*` any run of bytes, `?` one byte, `[abc]`, `[^a]`, `[a-z]` one byte of a class, `\x` the
//! byte `x` itself. Byte-wise, like Redis's `stringmatchlen`, so binary keys match too.
//!
//! Kept behind one function, [`glob_match`], so the crate-wide glob of the pub/sub hub can
//! replace it without touching its callers.

/// Whether `text` matches `pattern` (the whole of it). Bounded work: a pattern of `p` bytes
/// on a text of `t` bytes takes O(p·t) steps (backtracking only to the last `*`).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: its pattern position and the text position it tried.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(pattern, p, text[t]) {
                        if matched {
                            p = next;
                            t += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// The class `[...]` at `pattern[at]`: whether `c` is in it, and the position after it.
/// An unclosed class runs to the pattern's end (as in Redis).
fn class(pattern: &[u8], at: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    Some((matched != negate, (i + 1).min(pattern.len())))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn redis_glob_cases() {
        let yes: &[(&str, &str)] = &[
            ("*", ""),
            ("*", "anything"),
            ("user:*", "user:42"),
            ("h?llo", "hello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-c]llo", "hbllo"),
            ("a*b*c", "aXXbYYc"),
            ("\\*", "*"),
            ("*:*:end", "a:b:c:end"),
        ];
        for (p, t) in yes {
            assert!(
                glob_match(p.as_bytes(), t.as_bytes()),
                "{p} should match {t}"
            );
        }
        let no: &[(&str, &str)] = &[
            ("user:*", "users"),
            ("h?llo", "hllo"),
            ("h[^e]llo", "hello"),
            ("h[a-c]llo", "hello"),
            ("a*b*c", "aXXbYY"),
            ("\\*", "a"),
            ("", "a"),
        ];
        for (p, t) in no {
            assert!(
                !glob_match(p.as_bytes(), t.as_bytes()),
                "{p} should not match {t}"
            );
        }
    }

    #[test]
    fn many_stars_stay_fast() {
        let pattern = "*a".repeat(20) + "b";
        let text = "a".repeat(2000);
        assert!(!glob_match(pattern.as_bytes(), text.as_bytes()));
    }
}

//! Glob matching for `MATCHES`: `*` is any run of characters (including none), `?` exactly one.
//! Written here rather than pulled in because policies match identifiers and URLs, not paths:
//! `*` must cross `/`, and nothing else is special. ASCII letters match regardless of case: the
//! values policies match are mail addresses, host names and URLs, whose domains are
//! case-insensitive, and a deny-list must not be dodged by writing `EVIL.example`.

/// Whether `text` matches `pattern`. Linear-time greedy matching with one backtrack point.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || t.get(ti).is_some_and(|t| c.eq_ignore_ascii_case(t)) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(
            "spiffe://acme.example/agent/*",
            "spiffe://acme.example/agent/recon"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match(
            "https://*.acme.example/*",
            "https://evil.example/acme.example"
        ));
        assert!(glob_match(
            "https://*.acme.example/*",
            "https://api.acme.example/v1"
        ));
        assert!(!glob_match("abc", "abcd"));
    }

    #[test]
    fn ascii_letters_match_regardless_of_case() {
        assert!(glob_match("*@acme.example", "Boss@ACME.EXAMPLE"));
        assert!(glob_match(
            "HTTPS://*.Acme.Example/*",
            "https://api.acme.example/v1"
        ));
        assert!(!glob_match("*@acme.example", "boss@acme.example.evil"));
        // Only ASCII letters fold: other characters compare exactly.
        assert!(!glob_match("é*", "É"));
    }
}

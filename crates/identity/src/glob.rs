/// Matches an OIDC `sub` claim against a trust rule's subject pattern.
///
/// `*` matches any run of characters, including none and including `:`, and `?` matches
/// exactly one character. Every other character, `[` and `\` included, matches itself.
/// So `organization:acme:pipeline:app:*` admits every ref, commit and step of one pipeline.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let subject: Vec<char> = subject.chars().collect();

    let mut p = 0;
    let mut s = 0;
    // Position of the last `*` seen and the subject position it was tried against. On a
    // mismatch the star absorbs one more character and matching resumes after it, which
    // keeps the worst case at O(pattern * subject) without recursion.
    let mut backtrack: Option<(usize, usize)> = None;

    while s < subject.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, s));
                p += 1;
            }
            Some('?') => {
                p += 1;
                s += 1;
            }
            Some(&c) if c == subject[s] => {
                p += 1;
                s += 1;
            }
            _ => match backtrack {
                Some((star, star_s)) => {
                    p = star + 1;
                    s = star_s + 1;
                    backtrack = Some((star, star_s + 1));
                }
                None => return false,
            },
        }
    }

    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    const BUILDKITE_SUB: &str =
        "organization:acme:pipeline:app:ref:refs/heads/main:commit:abc123:step:build";

    #[test]
    fn literal_pattern_matches_only_itself() {
        assert!(subject_matches(BUILDKITE_SUB, BUILDKITE_SUB));
        assert!(!subject_matches(BUILDKITE_SUB, "organization:acme"));
        assert!(!subject_matches("organization:acme", BUILDKITE_SUB));
        assert!(subject_matches("", ""));
        assert!(!subject_matches("", "a"));
    }

    #[test]
    fn star_spans_colons() {
        assert!(subject_matches("organization:acme:*", BUILDKITE_SUB));
        assert!(subject_matches(
            "organization:acme:pipeline:app:*",
            BUILDKITE_SUB
        ));
        assert!(subject_matches("*:ref:refs/heads/main:*", BUILDKITE_SUB));
        assert!(subject_matches("*", BUILDKITE_SUB));
        assert!(subject_matches("*", ""));
    }

    #[test]
    fn star_does_not_cross_into_other_organizations() {
        assert!(!subject_matches(
            "organization:acme:*",
            "organization:acme2:pipeline:app"
        ));
        assert!(!subject_matches(
            "organization:acme:pipeline:app:*",
            BUILDKITE_SUB.replace("app", "web").as_str()
        ));
        assert!(!subject_matches(
            "*:ref:refs/heads/main:*",
            "organization:acme:ref:refs/heads/dev:x"
        ));
    }

    #[test]
    fn star_matches_empty_run() {
        assert!(subject_matches("a*b", "ab"));
        assert!(subject_matches("a**b", "ab"));
        assert!(subject_matches("ab*", "ab"));
    }

    #[test]
    fn star_backtracks_past_partial_matches() {
        assert!(subject_matches("*:step:build", "x:step:b:step:build"));
        assert!(subject_matches("a*aab", "aaaaab"));
        assert!(!subject_matches("a*aab", "aaaaba"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(subject_matches("step:?", "step:a"));
        assert!(!subject_matches("step:?", "step:"));
        assert!(!subject_matches("step:?", "step:ab"));
        assert!(subject_matches("step:??", "step:ab"));
        assert!(subject_matches("?", "é"));
    }

    #[test]
    fn other_glob_syntax_is_literal() {
        assert!(subject_matches("ref:[main]", "ref:[main]"));
        assert!(!subject_matches("ref:[main]", "ref:m"));
        assert!(subject_matches("a\\*b", "a\\xyzb"));
        assert!(!subject_matches("a\\*b", "a*b"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "axb"));
    }

    #[test]
    fn matching_is_case_sensitive() {
        assert!(!subject_matches("organization:Acme:*", BUILDKITE_SUB));
    }
}

//! Environment expansion of config text (spec §2.1.4) and the `STUNNER_PORT` fallback
//! (spec §1.3), and the exemption of credentials from expansion (spec §2.1.5).

use serde_norway::Value;

use super::decode::{untag, untag_mut};

/// Expand `$NAME` and `${NAME}` the way Go's `os.Expand` does, because the operator and
/// hand-written configs rely on upstream's exact behaviour:
///
/// * names are `[A-Za-z0-9_]+`; the shell specials `*#$@!?-` and digits are one-char names
///   (`$$` and `$1` look up variables named `$` and `1`, normally unset, i.e. empty);
/// * unset variables expand to the empty string;
/// * a `$` followed by a non-name character (or at the end) is kept as is;
/// * bad brace syntax is eaten: `${}` and an unterminated `${` disappear.
pub fn expand_env(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    // Start of the not-yet-copied literal run; every split point below is at an ASCII byte
    // (`$`, `{`, `}` or a name character), so slicing `text` there is on a char boundary.
    let mut copied = 0;
    let mut j = 0;
    while j < bytes.len() {
        if bytes[j] == b'$' && j + 1 < bytes.len() {
            out.push_str(&text[copied..j]);
            let (name, width) = shell_name(&text[j + 1..]);
            match name {
                Some(name) => out.push_str(&lookup(name).unwrap_or_default()),
                // Valid syntax but no name: keep the dollar.
                None if width == 0 => out.push('$'),
                // Invalid syntax: eat the characters.
                None => {}
            }
            j += 1 + width;
            copied = j;
        } else {
            j += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

fn is_shell_special(c: u8) -> bool {
    matches!(
        c,
        b'*' | b'#' | b'$' | b'@' | b'!' | b'?' | b'-' | b'0'..=b'9'
    )
}

fn is_name_char(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// Go's `getShellName`: the name after a `$` and how many bytes it spans.
fn shell_name(s: &str) -> (Option<&str>, usize) {
    let b = s.as_bytes();
    if b[0] == b'{' {
        if b.len() > 2 && is_shell_special(b[1]) && b[2] == b'}' {
            return (Some(&s[1..2]), 3);
        }
        return match b.iter().skip(1).position(|&c| c == b'}') {
            Some(0) => (None, 2), // "${}": bad syntax, eaten
            Some(n) => (Some(&s[1..=n]), n + 2),
            None => (None, 1), // "${" without "}": eat "{"
        };
    }
    if is_shell_special(b[0]) {
        return (Some(&s[..1]), 1);
    }
    let n = b.iter().take_while(|&&c| is_name_char(c)).count();
    if n == 0 {
        (None, 0)
    } else {
        (Some(&s[..n]), n)
    }
}

/// Look `name` up in `env`, applying the `STUNNER_PORT` fallback of spec §1.3: upstream
/// *sets* `STUNNER_PORT` to `STUNNER_PUBLIC_PORT` (if numeric) or `3478` when it is unset,
/// empty or not numeric. We do the same at lookup time instead of mutating the process
/// environment, which other threads may be reading.
pub fn stunner_env(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if name != "STUNNER_PORT" {
        return env(name);
    }
    // Go's strconv.Atoi accepts an optional sign, as does i64's FromStr.
    let numeric = |v: &Option<String>| v.as_deref().is_some_and(|s| s.parse::<i64>().is_ok());
    let port = env("STUNNER_PORT");
    if numeric(&port) {
        return port;
    }
    let public = env("STUNNER_PUBLIC_PORT");
    if numeric(&public) {
        return public;
    }
    Some(super::DEFAULT_PORT.to_string())
}

/// Replace `auth.credentials` in `expanded` by the one in `raw` (the tree of the text before
/// env expansion), so that secrets containing `$` survive expansion (spec §2.1.5).
pub(super) fn transplant_credentials(raw: &Value, expanded: &mut Value) {
    let raw_creds = field_of(raw, "auth").and_then(|auth| field_of(auth, "credentials"));
    let Some(Value::Mapping(auth)) = field_of_mut(expanded, "auth") else {
        return;
    };
    // Every key that the decoder could take as `credentials` gets the raw value, or goes if
    // the raw text had none: credentials never come from expanded text.
    let keys: Vec<Value> = auth
        .keys()
        .filter(|k| {
            k.as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case("credentials"))
        })
        .cloned()
        .collect();
    for k in keys {
        match raw_creds {
            Some(creds) => {
                auth.insert(k, creds.clone());
            }
            None => {
                auth.remove(&k);
            }
        }
    }
}

/// The value of the last key matching `name` case-insensitively, as the decoder sees it.
fn field_of<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    let Value::Mapping(m) = untag(v) else {
        return None;
    };
    m.iter()
        .filter(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v)
        .last()
}

fn field_of_mut<'a>(v: &'a mut Value, name: &str) -> Option<&'a mut Value> {
    let Value::Mapping(m) = untag_mut(v) else {
        return None;
    };
    m.iter_mut()
        .filter(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(name)))
        .map(|(_, v)| v)
        .last()
        .map(untag_mut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "B_2" => Some("beta".into()),
            _ => None,
        }
    }

    #[test]
    fn expansion_matches_go_os_expand() {
        let cases = [
            ("$A", "alpha"),
            ("${A}", "alpha"),
            ("x$A-y", "xalpha-y"),
            ("$B_2.", "beta."),
            ("$UNSET", ""),
            ("cost: 5$", "cost: 5$"),
            ("a $ b", "a $ b"),
            ("pa$$word", "paword"),
            ("$1x", "x"),
            ("${}", ""),
            ("${A", "A"),
            ("${A:-def}", ""),
            ("ünï$A©", "ünïalpha©"),
            ("$ü", "$ü"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand_env(input, &env), want, "input {input:?}");
        }
    }

    #[test]
    fn stunner_port_fallback() {
        let none = |_: &str| None;
        assert_eq!(stunner_env("STUNNER_PORT", &none).as_deref(), Some("3478"));
        let public = |n: &str| (n == "STUNNER_PUBLIC_PORT").then(|| "30000".to_string());
        assert_eq!(
            stunner_env("STUNNER_PORT", &public).as_deref(),
            Some("30000")
        );
        let both = |n: &str| match n {
            "STUNNER_PORT" => Some("abc".to_string()),
            "STUNNER_PUBLIC_PORT" => Some("".to_string()),
            _ => None,
        };
        assert_eq!(stunner_env("STUNNER_PORT", &both).as_deref(), Some("3478"));
        let set = |n: &str| (n == "STUNNER_PORT").then(|| "5000".to_string());
        assert_eq!(stunner_env("STUNNER_PORT", &set).as_deref(), Some("5000"));
        assert_eq!(stunner_env("OTHER", &set), None);
    }
}

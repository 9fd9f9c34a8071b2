//! The OpenAPI document's `pattern`s of free text (names, emails, display names, descriptions, impersonation reasons), each written once from the same parts as the database's rule (`tenantry.invisible_text`, `clean_name`, migration 0062), and filled in where a field names one by its marker.
//!
//! utoipa takes a pattern as a string literal only, so a field says
//! `pattern = "{name}"` and [`expand`] gives the document the real one.
//! The patterns are ECMA-262, written to read the same in the engines
//! clients use: every class of white space is spelt out (`\s` differs
//! between JavaScript, Python and Java, and PostgreSQL's follows the
//! database's locale), and the end of the text is `(?![\s\S])`, since `$`
//! in Python and Java also matches before a final line break. What the
//! database refuses beyond the Basic Multilingual Plane (tag characters
//! outside a flag, ideographic variation selectors outside an ideograph,
//! musical and shorthand format controls) no pattern can say in a form
//! that reads the same with and without JavaScript's `u` flag: the server
//! answers 422 for those.

/// Controls refused in one-line text (names, emails).
const CONTROLS: &str = r"\u0000-\u001f\u007f-\u009f";

/// Controls refused in text of several lines (tab, line feed and carriage
/// return allowed).
const CONTROLS_BUT_LINES: &str = r"\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f";

/// Invisible characters refused in names, emails and reasons
/// (`tenantry.invisible_text`).
const INVISIBLE: &str = r"\u00ad\u200b\u200e\u200f\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\uffa0\ufff0-\ufffb\u2028\u2029\u202a-\u202e\u2060-\u206f\ufeff";

/// Invisible characters refused in key and role descriptions (their
/// constraints, migrations 0046 and 0062).
const INVISIBLE_IN_DESCRIPTIONS: &str =
    r"\u00ad\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2060-\u206f\ufeff";

/// White space, spelt out: Unicode's White_Space property.
const SPACE: &str =
    r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// What a zero-width joiner or non-joiner may not stand beside: ASCII,
/// white space, and letters of scripts whose letters never join (Latin,
/// Greek, Cyrillic, Armenian, Hebrew, Georgian, kana, CJK, Hangul).
const JOINER_NEIGHBOURS: &str = r"\u0000-\u007f\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u00c0-\u02af\u0370-\u058f\u0591-\u05f4\u10a0-\u10ff\u1e00-\u1fff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af";

/// The end of the text in every engine.
const END: &str = r"(?![\s\S])";

/// Text without a joiner where it shapes nothing: at an end, or beside
/// [`JOINER_NEIGHBOURS`] or another joiner.
fn joiners() -> String {
    format!(
        r"(?![\s\S]*(?:(?:^|[{JOINER_NEIGHBOURS}\u200c\u200d])[\u200c\u200d]|[\u200c\u200d](?:{END}|[{JOINER_NEIGHBOURS}])))"
    )
}

/// Text without a Latin letter directly next to a Cyrillic or Greek one
/// (combining accents between them count as next).
const LOOK_ALIKES: &str = r"(?![\s\S]*(?:[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff][\u0300-\u036f]*[\u0370-\u03ff\u0400-\u052f\u1f00-\u1fff]|[\u0370-\u03ff\u0400-\u052f\u1f00-\u1fff][\u0300-\u036f]*[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]))";

/// The pattern a field names by `marker` (`{name}`, `{email}`,
/// `{display_name}`, `{description}`, `{reason}`); `None` for a pattern of
/// its own.
pub fn expand(marker: &str) -> Option<String> {
    let j = joiners();
    Some(match marker {
        // Tenant and role names: not only white space.
        "{name}" => format!(
            "^{j}{LOOK_ALIKES}[^{CONTROLS}{INVISIBLE}]*[^{SPACE}{CONTROLS}{INVISIBLE}][^{CONTROLS}{INVISIBLE}]*{END}"
        ),
        "{email}" => format!(
            "^{j}{LOOK_ALIKES}[^@{SPACE}{CONTROLS}{INVISIBLE}]+@[^@{SPACE}{CONTROLS}{INVISIBLE}]+{END}"
        ),
        "{display_name}" => format!("^{j}{LOOK_ALIKES}[^{CONTROLS}{INVISIBLE}]*{END}"),
        "{description}" => {
            format!("^{j}[^{CONTROLS_BUT_LINES}{INVISIBLE_IN_DESCRIPTIONS}]*{END}")
        }
        "{reason}" => format!("^{j}[^{CONTROLS_BUT_LINES}{INVISIBLE}]*{END}"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::expand;

    #[test]
    fn every_marker_expands_and_an_unknown_one_does_not() {
        for marker in [
            "{name}",
            "{email}",
            "{display_name}",
            "{description}",
            "{reason}",
        ] {
            let pattern = expand(marker).unwrap();
            assert!(pattern.starts_with('^') && pattern.ends_with(r"(?![\s\S])"));
            // White space spelt out: `\s` only in `[\s\S]`, which is anything.
            assert!(!pattern.replace(r"[\s\S]", "").contains(r"\s"), "{pattern}");
        }
        assert_eq!(expand("^[a-z]+$"), None);
    }
}

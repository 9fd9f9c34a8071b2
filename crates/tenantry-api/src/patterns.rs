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

/// Invisible characters refused in names, emails, descriptions and
/// reasons (`tenantry.invisible_text`).
const INVISIBLE: &str = r"\u00ad\u200b\u200e\u200f\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\uffa0\ufff0-\ufffb\u2028\u2029\u202a-\u202e\u2060-\u206f\ufeff";

/// White space, spelt out: Unicode's White_Space property.
const SPACE: &str =
    r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// Letters of scripts whose letters never join, and which take no
/// variation selector: Latin, Greek, Cyrillic, Armenian, Hebrew, Thai, Lao,
/// Georgian, Hangul, Ethiopic, Cherokee, Coptic, full and half width forms.
const PLAIN_LETTERS: &str = r"\u00c0-\u02af\u0370-\u058f\u0591-\u05f4\u0e00-\u0eff\u10a0-\u10ff\u1100-\u11ff\u1200-\u139f\u13a0-\u13ff\u1c80-\u1c8f\u1e00-\u1fff\u2c60-\u2cff\u2de0-\u2dff\u3130-\u318f\ua640-\ua69f\ua720-\ua7ff\uab30-\uab6f\uac00-\ud7af\uff00-\uffef";

/// Letters whose scripts never join but which variation selectors may
/// follow: kana, Bopomofo and CJK ideographs (standardized variation
/// sequences).
const IDEOGRAPHIC: &str =
    r"\u3040-\u30ff\u3100-\u312f\u31a0-\u31bf\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff";

/// The spaces a name or an email may have around it, trimmed when stored
/// (white space that is no control character).
const EDGE_SPACE: &str = r"\u0020\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000";

/// White space other than ASCII's.
const WIDE_SPACE: &str = r"\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The end of the text in every engine.
const END: &str = r"(?![\s\S])";

/// Text without a joiner where it shapes nothing: at an end, or beside
/// ASCII, white space, another joiner or a letter of a script whose letters
/// never join.
fn joiners() -> String {
    let beside = format!(r"\u0000-\u007f{WIDE_SPACE}{PLAIN_LETTERS}{IDEOGRAPHIC}");
    format!(
        r"(?![\s\S]*(?:(?:^|[{beside}\u200c\u200d])[\u200c\u200d]|[\u200c\u200d](?:{END}|[{beside}])))"
    )
}

/// Text without a variation selector (U+FE00 to U+FE0F) that selects
/// nothing: at the start, or after ASCII (but a keycap's digit, `#` or `*`
/// followed by U+20E3), white space, a joiner, another selector, or a
/// letter of [`PLAIN_LETTERS`].
fn variation_selectors() -> String {
    format!(
        r"(?![\s\S]*(?:(?:^|[\u0000-\u0022\u0024-\u0029\u002b-\u002f\u003a-\u007f{WIDE_SPACE}\u200c\u200d\ufe00-\ufe0f{PLAIN_LETTERS}])[\ufe00-\ufe0f]|[0-9#*][\ufe00-\ufe0f](?!\u20e3)))"
    )
}

/// Text without a Latin letter directly next to a Cyrillic or Greek one
/// (combining accents between them count as next).
const LOOK_ALIKES: &str = r"(?![\s\S]*(?:[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff][\u0300-\u036f]*[\u0370-\u03ff\u0400-\u052f\u1f00-\u1fff]|[\u0370-\u03ff\u0400-\u052f\u1f00-\u1fff][\u0300-\u036f]*[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]))";

/// The pattern a field names by `marker` (`{name}`, `{email}`,
/// `{display_name}`, `{description}`, `{reason}`); `None` for a pattern of
/// its own.
pub fn expand(marker: &str) -> Option<String> {
    let j = format!("{}{}", joiners(), variation_selectors());
    Some(match marker {
        // Tenant and role names: not only white space.
        "{name}" => format!(
            "^{j}{LOOK_ALIKES}[^{CONTROLS}{INVISIBLE}]*[^{SPACE}{CONTROLS}{INVISIBLE}][^{CONTROLS}{INVISIBLE}]*{END}"
        ),
        // Spaces around the address are trimmed, as around a name.
        "{email}" => format!(
            "^{j}{LOOK_ALIKES}[{EDGE_SPACE}]*[^@{SPACE}{CONTROLS}{INVISIBLE}]+@[^@{SPACE}{CONTROLS}{INVISIBLE}]+[{EDGE_SPACE}]*{END}"
        ),
        "{display_name}" => format!("^{j}{LOOK_ALIKES}[^{CONTROLS}{INVISIBLE}]*{END}"),
        // Descriptions and reasons: several lines (migration 0064).
        "{description}" | "{reason}" => format!("^{j}[^{CONTROLS_BUT_LINES}{INVISIBLE}]*{END}"),
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

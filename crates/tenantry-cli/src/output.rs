//! Printing results: aligned human tables by default, JSON with `--json`.

use std::io::Write;

use serde::Serialize;

/// `println!` that does not panic when standard output goes away: a reader
/// that stops early (`tenantry tenant list | head`) ends the command
/// quietly; any other failure to write (a full disk) ends it with a message
/// and status 1.
macro_rules! outln {
    () => {
        $crate::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes one line to standard output (see [`outln!`]).
pub fn write_line(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A cell as it may reach a terminal: control characters (line breaks, tab,
/// escape sequences, C1) and the invisible formatting characters names refuse
/// (bidirectional overrides and isolates, zero-width spaces; not the joiners,
/// which the database allows only where they shape letters) written as
/// `\u{..}`, so that text a tenant wrote (a description, a reason) can
/// neither rewrite the operator's screen nor read as something else, nor
/// break a row in two (found by a review of hostile input).
pub fn shown(cell: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{ad}' | '\u{200b}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
    };
    if !cell.chars().any(hidden) {
        return cell.into();
    }
    cell.chars()
        .map(|c| {
            if hidden(c) {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Prints rows under headers, columns padded to their widest cell (cells as
/// [`shown`]).
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| shown(c).into_owned()).collect())
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A time in a table: UTC, to the minute.
pub fn minute(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// `-` for absent values.
pub fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn cells_show_control_and_invisible_characters_escaped_and_leave_the_rest_alone() {
        assert_eq!(
            shown("ticket 7 – café 👩‍💻 می‌خواهم"),
            "ticket 7 – café 👩‍💻 می‌خواهم"
        );
        assert_eq!(
            shown("ticket 7\r\u{1b}[2K\u{1b}]0;owned\u{7}"),
            "ticket 7\\u{d}\\u{1b}[2K\\u{1b}]0;owned\\u{7}"
        );
        assert_eq!(shown("gnp\u{202e}.exe"), "gnp\\u{202e}.exe");
        assert_eq!(
            shown("two\nlines\tand a tab"),
            "two\\u{a}lines\\u{9}and a tab"
        );
    }
}

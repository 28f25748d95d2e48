//! What goes into log lines from strings an agent or a client chose (tool names, call ids,
//! reasons quoting them, comments): at most [`MAX_LOGGED`] bytes of each, so one oversized
//! request cannot copy a megabyte into every log line it causes.

use std::fmt;

/// The most bytes of one attacker-controlled string written to a log line.
pub const MAX_LOGGED: usize = 256;

/// A string as logged: whole if short, else its first [`MAX_LOGGED`] bytes (cut at a character
/// boundary) and how long it was.
#[derive(Debug, Clone, Copy)]
pub struct Clipped<'a>(&'a str);

/// `tracing::warn!(tool = %clip(&call.tool), …)`.
pub fn clip(s: &str) -> Clipped<'_> {
    Clipped(s)
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= MAX_LOGGED {
            return f.write_str(self.0);
        }
        let mut end = MAX_LOGGED;
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        write!(
            f,
            "{}… ({} bytes in all)",
            self.0.get(..end).unwrap_or_default(),
            self.0.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_are_whole_and_long_ones_are_cut_at_a_character() {
        assert_eq!(clip("nmap_scan").to_string(), "nmap_scan");
        let long = "é".repeat(1 << 19);
        let shown = clip(&long).to_string();
        assert!(shown.len() < MAX_LOGGED + 40, "{}", shown.len());
        assert!(shown.ends_with("… (1048576 bytes in all)"), "{shown}");
    }
}

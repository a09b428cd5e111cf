//! The `cairn.*` keys of the kernel command line (docs/design.md, "Kernel command line").

use std::fmt;

pub use cairn_slots::Slot;

/// What ends the system: power off or reboot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
}

impl fmt::Display for PowerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PowerAction::PowerOff => "poweroff",
            PowerAction::Reboot => "reboot",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmdline {
    /// `cairn.slot=`; `None` means "ask the boot partition".
    pub slot: Option<Slot>,
    /// `cairn.stay=1`: on a fatal error, stay instead of rebooting.
    pub stay: bool,
    /// `cairn.cad=`: what Ctrl-Alt-Del (SIGINT) does.
    pub cad: PowerAction,
    /// Values that were present but not understood, for a warning.
    pub invalid: Vec<String>,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            slot: None,
            stay: false,
            cad: PowerAction::Reboot,
            invalid: Vec::new(),
        }
    }
}

/// Splits a command line into words the way the kernel does: whitespace separates words
/// except inside double quotes, and the quotes themselves are dropped.
pub fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

fn parse_bool(value: Option<&str>) -> Option<bool> {
    match value {
        None | Some("1" | "y" | "yes" | "true" | "on") => Some(true),
        Some("0" | "n" | "no" | "false" | "off") => Some(false),
        Some(_) => None,
    }
}

/// Parses the `cairn.*` keys; the last occurrence of a key wins, as for kernel parameters.
pub fn parse(line: &str) -> Cmdline {
    let mut out = Cmdline::default();
    for word in split(line) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        match key {
            "cairn.slot" => match value.and_then(Slot::parse) {
                Some(slot) => out.slot = Some(slot),
                None => out.invalid.push(word.clone()),
            },
            "cairn.stay" => match parse_bool(value) {
                Some(stay) => out.stay = stay,
                None => out.invalid.push(word.clone()),
            },
            "cairn.cad" => match value {
                Some("poweroff") => out.cad = PowerAction::PowerOff,
                Some("reboot") => out.cad = PowerAction::Reboot,
                _ => out.invalid.push(word.clone()),
            },
            _ => {}
        }
    }
    out
}

/// Reads `/proc/cmdline`; defaults when `/proc` is not mounted.
pub fn load() -> Cmdline {
    std::fs::read_to_string("/proc/cmdline")
        .map(|s| parse(&s))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = parse("console=ttyS0 root=/dev/ram0 quiet");
        assert_eq!(c, Cmdline::default());
    }

    #[test]
    fn all_keys() {
        let c = parse("console=ttyAMA0 cairn.slot=b cairn.stay=1 cairn.cad=poweroff\n");
        assert_eq!(c.slot, Some(Slot::B));
        assert!(c.stay);
        assert_eq!(c.cad, PowerAction::PowerOff);
        assert!(c.invalid.is_empty());
    }

    #[test]
    fn last_wins_and_bare_flag() {
        let c = parse("cairn.slot=b cairn.slot=a cairn.stay");
        assert_eq!(c.slot, Some(Slot::A));
        assert!(c.stay);
        assert!(!parse("cairn.stay=0").stay);
    }

    #[test]
    fn invalid_values_are_reported_not_used() {
        let c = parse("cairn.slot=c cairn.cad=halt cairn.stay=maybe");
        assert_eq!(c.slot, None);
        assert_eq!(c.cad, PowerAction::Reboot);
        assert!(!c.stay);
        assert_eq!(
            c.invalid,
            ["cairn.slot=c", "cairn.cad=halt", "cairn.stay=maybe"]
        );
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(split(r#"a  b="x y" "c d" e"#), ["a", "b=x y", "c d", "e"]);
        assert_eq!(split("  \n"), Vec::<String>::new());
        assert_eq!(
            parse(r#"dyndbg="file x +p" cairn.slot="b""#).slot,
            Some(Slot::B)
        );
    }
}

//! Version order for downgrade checks: dot-separated numbers, optionally followed by
//! `-pre` (a pre-release sorts before its release) and `+build` (ignored), as in SemVer;
//! any number of numeric parts (`2026.11.1`, `0.2`), missing parts count as 0.

use std::cmp::Ordering;

pub fn compare(a: &str, b: &str) -> Ordering {
    let (an, ap) = split(a);
    let (bn, bp) = split(b);
    let len = an.len().max(bn.len());
    for i in 0..len {
        let x = an.get(i).copied().unwrap_or(Part::Num(0));
        let y = bn.get(i).copied().unwrap_or(Part::Num(0));
        match x.cmp(&y) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    match (ap, bp) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => compare_pre(x, y),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part<'a> {
    Num(u64),
    Text(&'a str),
}

fn split(v: &str) -> (Vec<Part<'_>>, Option<&str>) {
    let v = v.trim().trim_start_matches('v');
    let v = v.split_once('+').map_or(v, |(x, _)| x);
    let (main, pre) = match v.split_once('-') {
        Some((m, p)) => (m, Some(p)),
        None => (v, None),
    };
    (main.split('.').map(part).collect(), pre)
}

fn part(s: &str) -> Part<'_> {
    match s.parse() {
        Ok(n) => Part::Num(n),
        Err(_) => Part::Text(s),
    }
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    let xs: Vec<Part> = a.split('.').map(part).collect();
    let ys: Vec<Part> = b.split('.').map(part).collect();
    xs.cmp(&ys)
}

#[cfg(test)]
mod tests {
    use super::compare;
    use std::cmp::Ordering::*;

    #[test]
    fn orders_versions() {
        for (a, b, o) in [
            ("0.1.0", "0.2.0", Less),
            ("0.10.0", "0.9.9", Greater),
            ("1.0", "1.0.0", Equal),
            ("1.0.0-rc.1", "1.0.0", Less),
            ("1.0.0-rc.2", "1.0.0-rc.10", Less),
            ("1.0.0+abc", "1.0.0+def", Equal),
            ("2026.11.1", "2026.2.9", Greater),
            ("v2", "1.9", Greater),
        ] {
            assert_eq!(compare(a, b), o, "{a} vs {b}");
            assert_eq!(compare(b, a), o.reverse(), "{b} vs {a}");
        }
    }
}

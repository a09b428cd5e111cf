//! CronJob schedules: the five-field cron format Kubernetes accepts (`*/5 * * * *`, names
//! such as `MON` and `JAN`, the `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly` forms), read
//! in `spec.timeZone` (default UTC, the controller manager's zone on Cairn).
//!
//! Parsing and matching are croner's (a maintained cron library whose day-of-month and
//! day-of-week rule is Vixie cron's "either matches", as Kubernetes'); time zones are jiff's,
//! from the system time zone database, so a node whose image has none knows only UTC and says
//! so. Times are matched on the zone's wall clock: `0 2 * * *` in `Europe/Berlin` runs at
//! 02:00 Berlin time in winter and in summer.

use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    zone: TimeZone,
}

impl Schedule {
    /// Parses `spec.schedule` and `spec.timeZone`; the error is the message kube-apiserver
    /// would give, field included.
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
        let trimmed = schedule.trim();
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(format!(
                "spec.schedule: Invalid value: {schedule:?}: cannot use TZ or CRON_TZ in \
                 schedule, use timeZone field instead"
            ));
        }
        if trimmed.starts_with("@every") {
            return Err(format!(
                "spec.schedule: Invalid value: {schedule:?}: @every is not supported; use a \
                 five-field schedule such as */5 * * * *"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| format!("spec.schedule: Invalid value: {schedule:?}: {e}"))?;
        let zone = match time_zone.filter(|z| !z.is_empty()) {
            None | Some("UTC" | "Etc/UTC") => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|e| {
                format!("spec.timeZone: Invalid value: {name:?}: unknown time zone ({e})")
            })?,
        };
        Ok(Schedule { cron, zone })
    }

    /// The first scheduled time strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        // croner works on chrono times: give it the zone's wall clock as if it were UTC, and
        // read its answer back as a wall-clock time in the zone.
        let wall = self.zone.to_datetime(after);
        let start = to_chrono(wall)?;
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        let wall = from_chrono(next)?;
        self.zone
            .to_ambiguous_timestamp(wall)
            .compatible()
            .ok()
            .filter(|t| *t > after)
            .or_else(|| {
                // A wall time folded back onto `after` (the repeated hour): look past it.
                let later = after
                    .checked_add(jiff::SignedDuration::from_secs(3600))
                    .ok()?;
                self.next_after(later)
            })
    }

    /// The newest scheduled time at or before `at`.
    pub fn latest_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        let start = to_chrono(self.zone.to_datetime(at))?;
        let prev = self.cron.find_previous_occurrence(&start, true).ok()?;
        let t = self
            .zone
            .to_ambiguous_timestamp(from_chrono(prev)?)
            .compatible()
            .ok()?;
        Some(t.min(at))
    }

    /// The newest scheduled time in `(after, until]` and how many there are in all, counted
    /// up to `limit + 1` (so `limit + 1` means "more than `limit`"). Cheap however long ago
    /// `after` was: the newest is found backwards from `until`, the count stops at the cap.
    pub fn due_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> Option<(Timestamp, usize)> {
        let newest = self.latest_at_or_before(until).filter(|t| *t > after)?;
        let mut count = 0;
        let mut t = after;
        while count <= limit {
            match self.next_after(t) {
                Some(next) if next <= newest => {
                    count += 1;
                    t = next;
                }
                _ => break,
            }
        }
        Some((newest, count.max(1)))
    }
}

fn to_chrono(wall: DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::TimeZone as _;
    chrono::Utc
        .with_ymd_and_hms(
            wall.year().into(),
            wall.month() as u32,
            wall.day() as u32,
            wall.hour() as u32,
            wall.minute() as u32,
            wall.second() as u32,
        )
        .single()
}

fn from_chrono(t: chrono::DateTime<chrono::Utc>) -> Option<DateTime> {
    use chrono::{Datelike as _, Timelike as _};
    DateTime::new(
        i16::try_from(t.year()).ok()?,
        t.month() as i8,
        t.day() as i8,
        t.hour() as i8,
        t.minute() as i8,
        t.second() as i8,
        0,
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn five_fields_and_nicknames() {
        let s = Schedule::parse("*/15 * * * *", None).unwrap();
        assert_eq!(
            s.next_after(ts("2026-11-22T07:07:30Z")),
            Some(ts("2026-11-22T07:15:00Z"))
        );
        let daily = Schedule::parse("@daily", None).unwrap();
        assert_eq!(
            daily.next_after(ts("2026-11-22T00:00:00Z")),
            Some(ts("2026-11-23T00:00:00Z"))
        );
        let weekday = Schedule::parse("30 6 * * MON-FRI", Some("UTC")).unwrap();
        // 2026-11-21 is a Saturday.
        assert_eq!(
            weekday.next_after(ts("2026-11-21T12:00:00Z")),
            Some(ts("2026-11-23T06:30:00Z"))
        );
    }

    #[test]
    fn missed_times_are_counted_and_capped() {
        let s = Schedule::parse("* * * * *", None).unwrap();
        let (newest, count) = s
            .due_between(ts("2026-11-22T07:00:00Z"), ts("2026-11-22T07:10:30Z"), 100)
            .unwrap();
        assert_eq!((newest, count), (ts("2026-11-22T07:10:00Z"), 10));
        // Years behind: the newest at once, the count capped.
        let (newest, count) = s
            .due_between(ts("2020-01-01T00:00:00Z"), ts("2026-11-22T07:10:30Z"), 100)
            .unwrap();
        assert_eq!((newest, count), (ts("2026-11-22T07:10:00Z"), 101));
        // An exact hit counts; nothing after `after` is nothing.
        assert_eq!(
            s.due_between(ts("2026-11-22T07:09:00Z"), ts("2026-11-22T07:10:00Z"), 100),
            Some((ts("2026-11-22T07:10:00Z"), 1))
        );
        assert_eq!(
            s.due_between(ts("2026-11-22T07:10:00Z"), ts("2026-11-22T07:10:59Z"), 100),
            None
        );
    }

    #[test]
    fn bad_schedules_say_why() {
        for (bad, why) in [
            ("* * * *", "spec.schedule"),
            ("61 * * * *", "spec.schedule"),
            ("* * * * * *", "spec.schedule"),
            ("CRON_TZ=UTC * * * * *", "timeZone field"),
            ("@every 5m", "@every"),
        ] {
            let e = Schedule::parse(bad, None).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(e.starts_with("spec.timeZone: Invalid value"), "{e}");
    }

    #[test]
    fn time_zones_follow_the_wall_clock() {
        // The host has a time zone database (tzdata, installed by `make deps`).
        let s = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            s.next_after(ts("2026-01-10T12:00:00Z")),
            Some(ts("2026-01-11T01:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-07-10T12:00:00Z")),
            Some(ts("2026-07-11T00:00:00Z"))
        );
    }
}

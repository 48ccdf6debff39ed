//! Business time: a tenant's time zone, working hours and holidays.
//!
//! SLAs ("call back within 15 minutes", "alert after 30 minutes") count only working time, so a
//! call at 21:00 on Friday is due on Monday morning, not at 21:15.

use chrono::{Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Weekday};
use chrono_tz::Tz;

use super::Ts;

/// A tenant's working calendar.
#[derive(Debug, Clone)]
pub struct BusinessCalendar {
    pub(crate) tz: Tz,
    pub(crate) start: NaiveTime,
    pub(crate) end: NaiveTime,
    pub(crate) work_days: Vec<Weekday>,
    pub(crate) holidays: Vec<NaiveDate>,
}

impl BusinessCalendar {
    /// Moscow, 09:00–18:00, Monday to Friday: the default of the sales methodology.
    pub(crate) fn moscow_default() -> Self {
        BusinessCalendar {
            tz: chrono_tz::Europe::Moscow,
            start: NaiveTime::from_hms_opt(9, 0, 0).expect("valid time"),
            end: NaiveTime::from_hms_opt(18, 0, 0).expect("valid time"),
            work_days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            holidays: Vec::new(),
        }
    }

    fn is_work_day(&self, d: NaiveDate) -> bool {
        self.work_days.contains(&d.weekday()) && !self.holidays.contains(&d)
    }

    /// Adds `minutes` of working time to `from`.
    pub(crate) fn add_business_minutes(&self, from: Ts, minutes: i64) -> Ts {
        let mut left = Duration::minutes(minutes.max(0));
        let mut local = from.with_timezone(&self.tz).naive_local();
        // Bounded: a calendar with no working day at all would otherwise never end.
        for _ in 0..800 {
            let day = local.date();
            if self.is_work_day(day) {
                let open = day.and_time(self.start);
                let close = day.and_time(self.end);
                if local < open {
                    local = open;
                }
                if local < close {
                    let room = close - local;
                    if left <= room {
                        return self.to_utc(local + left);
                    }
                    left -= room;
                }
            }
            local = (day + Duration::days(1)).and_time(self.start);
        }
        self.to_utc(local)
    }

    /// The next working day after `from`'s local date, at `start + offset_minutes` local time.
    pub(crate) fn next_business_day(&self, from: Ts, offset_minutes: i64) -> Ts {
        let mut day = from.with_timezone(&self.tz).date_naive() + Duration::days(1);
        for _ in 0..400 {
            if self.is_work_day(day) {
                break;
            }
            day += Duration::days(1);
        }
        self.to_utc(day.and_time(self.start) + Duration::minutes(offset_minutes))
    }

    /// Working minutes between `a` and `b` (0 when `b <= a`).
    pub(crate) fn business_minutes_between(&self, a: Ts, b: Ts) -> i64 {
        if b <= a {
            return 0;
        }
        let (a, b) = (
            a.with_timezone(&self.tz).naive_local(),
            b.with_timezone(&self.tz).naive_local(),
        );
        let mut total = Duration::zero();
        let mut day = a.date();
        while day <= b.date() {
            if self.is_work_day(day) {
                let open = day.and_time(self.start).max(a);
                let close = day.and_time(self.end).min(b);
                if close > open {
                    total += close - open;
                }
            }
            day += Duration::days(1);
        }
        total.num_minutes()
    }

    fn to_utc(&self, local: chrono::NaiveDateTime) -> Ts {
        self.tz
            .from_local_datetime(&local)
            .earliest()
            .unwrap_or_else(|| self.tz.from_utc_datetime(&local))
            .with_timezone(&chrono::Utc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn friday_evening_rolls_to_monday_morning() {
        let cal = BusinessCalendar::moscow_default();
        // 2026-11-20 is a Friday; 21:00 MSK = 18:00 UTC.
        let call = Utc.with_ymd_and_hms(2026, 11, 20, 18, 0, 0).unwrap();
        let due = cal.add_business_minutes(call, 15);
        // Monday 09:15 MSK = 06:15 UTC.
        assert_eq!(due, Utc.with_ymd_and_hms(2026, 11, 23, 6, 15, 0).unwrap());
    }

    #[test]
    fn next_business_day_skips_the_weekend() {
        let cal = BusinessCalendar::moscow_default();
        let fri = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
        // Monday 12:00 MSK = 09:00 UTC.
        assert_eq!(
            cal.next_business_day(fri, 180),
            Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap()
        );
    }

    #[test]
    fn minutes_between_skip_nights_and_weekends() {
        let cal = BusinessCalendar::moscow_default();
        let a = Utc.with_ymd_and_hms(2026, 11, 20, 14, 0, 0).unwrap(); // Fri 17:00 MSK
        let b = Utc.with_ymd_and_hms(2026, 11, 23, 6, 30, 0).unwrap(); // Mon 09:30 MSK
        assert_eq!(cal.business_minutes_between(a, b), 60 + 30);
    }
}

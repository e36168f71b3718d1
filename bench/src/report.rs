//! How the benchmark binaries print a figure against its target.

use std::time::Duration;

/// A duration in seconds to one decimal ("12.3"), or "not reached" when it never happened.
pub fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(
        || "not reached".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64()),
    )
}

/// "met" or "MISSED" (capitals so a missed target stands out in a table).
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_figures() {
        assert_eq!(seconds(Some(Duration::from_millis(12_345))), "12.3");
        assert_eq!(seconds(None), "not reached");
        assert_eq!(verdict(true), "met");
        assert_eq!(verdict(false), "MISSED");
    }
}

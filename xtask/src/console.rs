//! Reading the kernel's serial console: the bring-up summary and the in-kernel test results.
//!
//! Kernel lines may carry a `[cpuN] ` prefix (or other leading text), so every pattern is
//! matched as a substring of the line.

/// The start of the bring-up summary: `cpus online: N sockets: S nodes: K`.
const SUMMARY_MARKER: &str = "cpus online:";

/// The separator in the totals line `N passed, M failed`.
const TOTALS_MARKER: &str = " passed, ";

/// The bring-up summary from the last line that has one, from its marker to the end.
pub fn summary(console: &[String]) -> Option<&str> {
    console.iter().rev().find_map(|line| {
        let start = line.find(SUMMARY_MARKER)?;
        Some(line[start..].trim_end())
    })
}

/// The in-kernel test totals: `N passed, M failed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestTotals {
    pub passed: u32,
    pub failed: u32,
}

/// Parses a totals line, e.g. `[cpu0] 12 passed, 0 failed`.
pub fn parse_totals(line: &str) -> Option<TestTotals> {
    let (before, after) = line.split_once(TOTALS_MARKER)?;
    let passed = before.split_whitespace().last()?.parse().ok()?;
    let mut words = after.split_whitespace();
    let failed = words.next()?.parse().ok()?;
    (words.next()? == "failed").then_some(TestTotals { passed, failed })
}

/// The totals of one named suite, from its line `<suite>: N passed, M failed`
/// (the kernel prints `kernel:`, the root task's user-mode suite `user:`).
pub fn suite_totals(console: &[String], suite: &str) -> Option<TestTotals> {
    let marker = format!("{suite}: ");
    console.iter().rev().find_map(|line| {
        let start = line.find(&marker)?;
        parse_totals(&line[start + marker.len()..])
    })
}

/// Names of the test cases reported as `test <name> ... FAILED[: reason]`.
pub fn failed_tests(console: &[String]) -> Vec<&str> {
    console
        .iter()
        .filter_map(|line| {
            let rest = &line[line.find("test ")? + "test ".len()..];
            let (name, _) = rest.split_once(" ... FAILED")?;
            Some(name.trim())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn suite_totals_are_found_by_name() {
        let console = lines("kernel: 10 passed, 0 failed\nuser: 11 passed, 1 failed\ntest x ... FAILED: why");
        assert_eq!(suite_totals(&console, "kernel"), Some(TestTotals { passed: 10, failed: 0 }));
        assert_eq!(suite_totals(&console, "user"), Some(TestTotals { passed: 11, failed: 1 }));
        assert_eq!(suite_totals(&console, "other"), None);
        assert_eq!(failed_tests(&console), ["x"]);
    }

    #[test]
    fn finds_the_summary_with_or_without_prefix() {
        let console = lines("[cpu0] hello\n[cpu0] cpus online: 4 sockets: 2 nodes: 2  \n");
        assert_eq!(summary(&console), Some("cpus online: 4 sockets: 2 nodes: 2"));
        assert_eq!(
            summary(&lines("cpus online: 1 sockets: 1 nodes: 1")),
            Some("cpus online: 1 sockets: 1 nodes: 1")
        );
        assert_eq!(summary(&lines("[cpu0] booting")), None);
    }

    #[test]
    fn parses_totals() {
        assert_eq!(parse_totals("[cpu0] 12 passed, 0 failed"), Some(TestTotals { passed: 12, failed: 0 }));
        assert_eq!(parse_totals("3 passed, 2 failed"), Some(TestTotals { passed: 3, failed: 2 }));
        assert_eq!(parse_totals("test passed, really"), None);
        assert_eq!(parse_totals("1 passed, 0 skipped"), None);
        let console = lines("1 passed, 1 failed\n[cpu1] 5 passed, 0 failed\n[cpu0] done");
        assert_eq!(
            console.iter().rev().find_map(|l| parse_totals(l)),
            Some(TestTotals { passed: 5, failed: 0 })
        );
    }

    #[test]
    fn lists_failed_cases() {
        let console =
            lines("[cpu0] test cap::derive ... ok\n[cpu0] test ipc::call ... FAILED\ntest x ... FAILED");
        assert_eq!(failed_tests(&console), ["ipc::call", "x"]);
    }
}

use kiln_junit::{Report, Status, merge, parse, parse_str};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn nextest_report() {
    let r = parse(&fixture("nextest.xml")).unwrap();
    assert_eq!((r.tests, r.failures, r.errors, r.skipped), (5, 1, 0, 0));
    // The root's wall-clock time, not the sum of suite times.
    assert_eq!(r.time_seconds, 1.25);
    assert_eq!(r.suites.len(), 2);

    let s = &r.suites[0];
    assert_eq!(s.name, "kiln-pipeline");
    // nextest writes no suite time: summed from the cases.
    assert!((s.time_seconds - 0.233).abs() < 1e-9, "{}", s.time_seconds);
    let failed = &s.cases[1];
    assert_eq!(failed.name, "parse::tests::unknown_key_is_located");
    assert_eq!(failed.classname, "kiln-pipeline");
    assert_eq!(failed.status, Status::Failed);
    assert_eq!(failed.message.as_deref(), Some("test failure"));
    let output = failed.output.as_deref().unwrap();
    assert!(output.starts_with("thread 'parse::tests::unknown_key_is_located' panicked"));
    assert!(output.contains("left: 3\n right: 4"));
    assert!(failed.system_out.as_deref().unwrap().contains("... FAILED"));
    assert!(failed.system_err.as_deref().unwrap().contains("panicked"));
    // A flaky test that passed on retry counts as passed.
    assert_eq!(s.cases[2].status, Status::Passed);
    assert_eq!(s.cases[2].output, None);
    assert_eq!(r.suites[1].name, "kiln-pipeline::schema");
    assert!(r.suites[1].cases.iter().all(|c| c.status == Status::Passed));
}

#[test]
fn pytest_report() {
    let r = parse(&fixture("pytest.xml")).unwrap();
    assert_eq!((r.tests, r.failures, r.errors, r.skipped), (5, 1, 1, 1));
    assert_eq!(r.time_seconds, 0.482);
    let cases = &r.suites[0].cases;
    assert_eq!(r.suites[0].name, "pytest");
    assert_eq!(cases.len(), 5);
    assert_eq!(cases[0].classname, "tests.test_math");
    assert_eq!(
        cases[1].message.as_deref(),
        Some("ZeroDivisionError: division by zero")
    );
    assert!(
        cases[1]
            .output
            .as_deref()
            .unwrap()
            .contains(">       assert 1 / 0 == 0")
    );
    assert_eq!(cases[2].status, Status::Skipped);
    assert_eq!(cases[2].message.as_deref(), Some("requires Windows"));
    assert_eq!(cases[3].status, Status::Error);
    assert_eq!(
        cases[3].message.as_deref(),
        Some("failed on setup with \"fixture 'db' not found\"")
    );
    assert_eq!(cases[4].name, "test_print[utf-8 ünïcødé]");
    assert!(
        cases[4]
            .system_out
            .as_deref()
            .unwrap()
            .contains("hello & goodbye 🚀")
    );
}

#[test]
fn surefire_report() {
    let r = parse(&fixture("surefire.xml")).unwrap();
    assert_eq!((r.tests, r.failures, r.errors, r.skipped), (4, 1, 0, 1));
    let s = &r.suites[0];
    assert_eq!(s.name, "com.example.CalculatorTest");
    assert_eq!(s.time_seconds, 1204.051);
    assert_eq!(r.time_seconds, 1204.051);
    assert_eq!(s.system_out.as_deref(), Some("suite-level output"));
    let failed = &s.cases[1];
    assert_eq!(
        failed.message.as_deref(),
        Some("expected: <1> but was: <2>")
    );
    assert!(
        failed
            .output
            .as_deref()
            .unwrap()
            .contains("\tat com.example.CalculatorTest.dividesByZero(CalculatorTest.java:25)")
    );
    assert_eq!(failed.system_out.as_deref(), Some("computing 1/0...\n"));
    assert_eq!(s.cases[2].status, Status::Skipped);
    assert_eq!(s.cases[2].message.as_deref(), Some("not ready yet"));
    assert_eq!(s.cases[2].output, None);
    assert_eq!(s.cases[3].status, Status::Passed);
}

#[test]
fn merge_adds_up() {
    let reports = ["nextest.xml", "pytest.xml", "surefire.xml"]
        .map(|f| parse(&fixture(f)).unwrap())
        .to_vec();
    let total_time: f64 = reports.iter().map(|r| r.time_seconds).sum();
    let merged = merge(reports);
    assert_eq!(
        (merged.tests, merged.failures, merged.errors, merged.skipped),
        (14, 3, 1, 2)
    );
    assert_eq!(merged.suites.len(), 4);
    assert!((merged.time_seconds - total_time).abs() < 1e-9);
    assert_eq!(merge(Vec::new()), Report::default());
    // An empty suite has zero time, not minus zero.
    let empty = parse_str("<testsuite/>").unwrap();
    assert!(empty.time_seconds.is_sign_positive());
}

#[test]
fn json_shape() {
    let r = parse(&fixture("pytest.xml")).unwrap();
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "tests",
        "failures",
        "errors",
        "skipped",
        "time_seconds",
        "suites",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    let case = &json["suites"][0]["cases"][1];
    assert_eq!(case["status"], "failed");
    assert_eq!(case["classname"], "tests.test_math");
    assert_eq!(json["suites"][0]["cases"][0]["status"], "passed");
    assert_eq!(
        json["suites"][0]["cases"][0]["message"],
        serde_json::Value::Null
    );
    assert_eq!(json["suites"][0]["cases"][2]["status"], "skipped");
    assert_eq!(json["suites"][0]["cases"][3]["status"], "error");
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn attribute_counts_win_over_cases_when_present() {
    // Some tools list only failing cases but report the full count.
    let r = parse_str(
        r#"<testsuite name="s" tests="100" failures="1"><testcase name="f"><failure/></testcase></testsuite>"#,
    )
    .unwrap();
    assert_eq!((r.tests, r.failures, r.errors, r.skipped), (100, 1, 0, 0));
}

#[test]
fn cases_directly_under_testsuites() {
    let r = parse_str(
        r#"<testsuites name="go"><testcase name="a"/><testcase name="b"><error/></testcase></testsuites>"#,
    )
    .unwrap();
    assert_eq!(r.suites.len(), 1);
    assert_eq!(r.suites[0].name, "go");
    assert_eq!((r.tests, r.errors), (2, 1));
}

#[test]
fn malformed_documents_give_messages() {
    for bad in [
        "",
        "not xml at all",
        "<testsuite>",
        "<testsuite></testcase>",
        "<testsuite name='x' tests='1'><testcase></testsuite>",
        "<project><testsuite/></project>",
        "<?xml version='1.0'?>",
    ] {
        let err = parse_str(bad).unwrap_err();
        assert!(!err.to_string().is_empty(), "{bad}");
    }
}

fn fixture_names() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("nextest.xml"),
        Just("pytest.xml"),
        Just("surefire.xml")
    ]
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in ".*") {
        let _ = parse_str(&s);
    }

    #[test]
    fn arbitrary_xmlish_strings_never_panic(
        s in r#"(<|>|/|testsuites?|testcase|failure|error|skipped|system-out|<!\[CDATA\[|\]\]>|&amp;|&#[0-9x]{1,8};|&[a-z]{1,4};| name="[a-z]*"| tests="[0-9-]{0,3}"| time="[0-9.,e-]{0,5}"|[a-z ]){0,60}"#
    ) {
        let _ = parse_str(&s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&b);
    }

    #[test]
    fn damaged_fixtures_never_panic(
        name in fixture_names(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut data = fixture(name);
        for (at, byte) in flips {
            let i = at.index(data.len());
            data[i] = byte;
        }
        let end = cut.index(data.len() + 1);
        let _ = parse(&data[..end]);
    }

    #[test]
    fn generated_reports_count_correctly(
        statuses in proptest::collection::vec(0u8..4, 0..40)
    ) {
        let mut xml = String::from("<testsuite name=\"gen\">");
        for (i, s) in statuses.iter().enumerate() {
            let child = match s {
                0 => "",
                1 => "<failure message=\"m\">out</failure>",
                2 => "<error/>",
                _ => "<skipped/>",
            };
            xml.push_str(&format!("<testcase name=\"t{i}\" time=\"0.5\">{child}</testcase>"));
        }
        xml.push_str("</testsuite>");
        let r = parse_str(&xml).unwrap();
        let count = |k| statuses.iter().filter(|s| **s == k).count() as u64;
        prop_assert_eq!(r.tests, statuses.len() as u64);
        prop_assert_eq!(r.failures, count(1));
        prop_assert_eq!(r.errors, count(2));
        prop_assert_eq!(r.skipped, count(3));
        prop_assert!((r.time_seconds - 0.5 * statuses.len() as f64).abs() < 1e-9);
    }
}

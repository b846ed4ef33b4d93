use super::*;

/// The sample lines (no comments) that start with `name`.
fn samples(text: &str, name: &str) -> Vec<String> {
    text.lines().filter(|l| l.starts_with(name)).map(str::to_string).collect()
}

#[test]
fn a_fresh_registry_says_only_its_version() {
    let metrics = Metrics::new("0.1.0");
    assert_eq!(
        metrics.render(),
        "# HELP chatwoot_ingress_build_info The version of chatwoot-ingress that is running; always 1.\n\
         # TYPE chatwoot_ingress_build_info gauge\n\
         chatwoot_ingress_build_info{version=\"0.1.0\"} 1\n"
    );
}

#[test]
fn messages_are_counted_by_mailbox_folder_and_outcome() {
    let metrics = Metrics::new("0.1.0");
    metrics.message("support", "INBOX", MessageOutcome::Delivered, None);
    metrics.message("support", "INBOX", MessageOutcome::Delivered, None);
    metrics.message("support", "INBOX", MessageOutcome::Deferred, None);
    metrics.message("sales", "INBOX", MessageOutcome::Refused, None);
    let text = metrics.render();
    assert!(text.contains("# TYPE chatwoot_ingress_messages_total counter\n"), "{text}");
    // Sorted by mailbox, then folder; every outcome of a folder is there.
    assert_eq!(
        samples(&text, "chatwoot_ingress_messages_total"),
        [
            "chatwoot_ingress_messages_total{mailbox=\"sales\",folder=\"INBOX\",outcome=\"delivered\"} 0",
            "chatwoot_ingress_messages_total{mailbox=\"sales\",folder=\"INBOX\",outcome=\"refused\"} 1",
            "chatwoot_ingress_messages_total{mailbox=\"sales\",folder=\"INBOX\",outcome=\"deferred\"} 0",
            "chatwoot_ingress_messages_total{mailbox=\"support\",folder=\"INBOX\",outcome=\"delivered\"} 2",
            "chatwoot_ingress_messages_total{mailbox=\"support\",folder=\"INBOX\",outcome=\"refused\"} 0",
            "chatwoot_ingress_messages_total{mailbox=\"support\",folder=\"INBOX\",outcome=\"deferred\"} 1",
        ]
    );
}

#[test]
fn label_values_that_run_together_stay_apart() {
    let metrics = Metrics::new("0.1.0");
    metrics.message("a", "bc", MessageOutcome::Delivered, None);
    metrics.message("ab", "c", MessageOutcome::Delivered, None);
    let text = metrics.render();
    assert!(text.contains("{mailbox=\"a\",folder=\"bc\",outcome=\"delivered\"} 1\n"), "{text}");
    assert!(text.contains("{mailbox=\"ab\",folder=\"c\",outcome=\"delivered\"} 1\n"), "{text}");
}

#[test]
fn a_worker_coming_up_starts_its_counters_at_zero() {
    let metrics = Metrics::new("0.1.0");
    metrics.mailbox_up("support", "Archive", true);
    metrics.mailbox_up("support", "INBOX", false);
    let text = metrics.render();
    assert_eq!(
        samples(&text, "chatwoot_ingress_mailbox_up"),
        [
            "chatwoot_ingress_mailbox_up{mailbox=\"support\",folder=\"Archive\"} 1",
            "chatwoot_ingress_mailbox_up{mailbox=\"support\",folder=\"INBOX\"} 0",
        ]
    );
    assert_eq!(samples(&text, "chatwoot_ingress_messages_total").len(), 6);
    assert!(samples(&text, "chatwoot_ingress_messages_total").iter().all(|l| l.ends_with("} 0")));
}

#[test]
fn durations_fill_cumulative_buckets() {
    let metrics = Metrics::new("0.1.0");
    for ms in [10, 50, 300, 2_000, 61_000] {
        metrics.message("support", "INBOX", MessageOutcome::Delivered, Some(Duration::from_millis(ms)));
    }
    // A message refused before any POST has no duration.
    metrics.message("support", "INBOX", MessageOutcome::Refused, None);
    let text = metrics.render();
    assert!(text.contains("# TYPE chatwoot_ingress_delivery_duration_seconds histogram\n"), "{text}");
    let p = "chatwoot_ingress_delivery_duration_seconds";
    let expected: Vec<String> = [
        ("0.05", 2), // 10 ms and exactly 50 ms: a bound includes its own value
        ("0.1", 2),
        ("0.25", 2),
        ("0.5", 3),
        ("1", 3),
        ("2.5", 4),
        ("5", 4),
        ("10", 4),
        ("30", 4),
        ("60", 4),
        ("+Inf", 5),
    ]
    .iter()
    .map(|(le, n)| format!("{p}_bucket{{mailbox=\"support\",le=\"{le}\"}} {n}"))
    .collect();
    let found = samples(&text, p);
    assert_eq!(found[..11], expected);
    let sum: f64 =
        found[11].strip_prefix(&format!("{p}_sum{{mailbox=\"support\"}} ")).unwrap().parse().unwrap();
    assert!((sum - 63.36).abs() < 1e-9, "{}", found[11]);
    assert_eq!(found[12], format!("{p}_count{{mailbox=\"support\"}} 5"));
    assert_eq!(found.len(), 13);
}

#[test]
fn timestamps_are_unix_seconds() {
    let metrics = Metrics::new("0.1.0");
    let expiry = UNIX_EPOCH + Duration::from_millis(1_767_225_600_250);
    metrics.token_expiry("google", expiry);
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    metrics.message("google", "INBOX", MessageOutcome::Delivered, None);
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let text = metrics.render();
    assert!(
        text.contains(
            "# TYPE chatwoot_ingress_oauth2_token_expiry_timestamp_seconds gauge\n\
             chatwoot_ingress_oauth2_token_expiry_timestamp_seconds{mailbox=\"google\"} 1767225600.25\n"
        ),
        "{text}"
    );
    let line = &samples(&text, "chatwoot_ingress_last_delivery_timestamp_seconds{mailbox=\"google\"} ")[0];
    let at: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(before <= at && at <= after, "{line}");
    // Deferred and refused messages are not deliveries.
    metrics.message("other", "INBOX", MessageOutcome::Deferred, None);
    assert!(!metrics.render().contains("last_delivery_timestamp_seconds{mailbox=\"other\"}"));
}

#[test]
fn the_lease_shows_only_in_cluster_mode() {
    let metrics = Metrics::new("0.1.0");
    metrics.mailbox_up("support", "INBOX", true);
    assert!(!metrics.render().contains("lease_held"));
    metrics.lease_held("support", true);
    metrics.lease_held("sales", false);
    let text = metrics.render();
    assert!(text.contains("# TYPE chatwoot_ingress_lease_held gauge\n"), "{text}");
    assert_eq!(
        samples(&text, "chatwoot_ingress_lease_held"),
        [
            "chatwoot_ingress_lease_held{mailbox=\"sales\"} 0",
            "chatwoot_ingress_lease_held{mailbox=\"support\"} 1"
        ]
    );
}

#[test]
fn a_forgotten_mailbox_leaves_no_series() {
    let metrics = Metrics::new("0.1.0");
    for mailbox in ["gone", "kept"] {
        metrics.message(mailbox, "INBOX", MessageOutcome::Delivered, Some(Duration::from_millis(20)));
        metrics.mailbox_up(mailbox, "INBOX", true);
        metrics.token_expiry(mailbox, SystemTime::now());
        metrics.lease_held(mailbox, true);
    }
    metrics.forget("gone");
    let text = metrics.render();
    assert!(!text.contains("\"gone\""), "{text}");
    assert!(text.contains("lease_held{mailbox=\"kept\"} 1"), "{text}");
}

#[test]
fn label_values_are_escaped_as_the_format_says() {
    let metrics = Metrics::new("1.0 \"beta\"");
    metrics.mailbox_up("C:\\mail", "say \"hi\"\nthere", true);
    metrics.mailbox_up("Posteingang/Entwürfe", "{a=\"b\"}", false);
    let text = metrics.render();
    assert!(text.contains("chatwoot_ingress_build_info{version=\"1.0 \\\"beta\\\"\"} 1\n"), "{text}");
    assert!(
        text.contains(
            "chatwoot_ingress_mailbox_up{mailbox=\"C:\\\\mail\",folder=\"say \\\"hi\\\"\\nthere\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "chatwoot_ingress_mailbox_up{mailbox=\"Posteingang/Entwürfe\",folder=\"{a=\\\"b\\\"}\"} 0\n"
        ),
        "{text}"
    );
    // One line per sample: no raw newline got through.
    assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 1 + 6 + 2);
}

#[test]
fn help_text_is_escaped_too() {
    let mut out = String::new();
    family(&mut out, &Family("x", "gauge", "a \\ b\nc \"d\""));
    assert_eq!(out, "# HELP chatwoot_ingress_x a \\\\ b\\nc \"d\"\n# TYPE chatwoot_ingress_x gauge\n");
}

#[test]
fn updates_from_many_threads_all_count() {
    let metrics = Metrics::new("0.1.0");
    std::thread::scope(|scope| {
        for t in 0..8 {
            let metrics = &metrics;
            scope.spawn(move || {
                for _ in 0..1000 {
                    metrics.message("m", &format!("f{}", t % 2), MessageOutcome::Delivered, None);
                    let _ = metrics.render();
                }
            });
        }
    });
    let text = metrics.render();
    assert!(text.contains("{mailbox=\"m\",folder=\"f0\",outcome=\"delivered\"} 4000\n"), "{text}");
    assert!(text.contains("{mailbox=\"m\",folder=\"f1\",outcome=\"delivered\"} 4000\n"), "{text}");
}

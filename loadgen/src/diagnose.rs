//! What failed connections most likely mean: the report names the cause,
//! not only the error counts. Each rule reads the error keys the workers
//! count (`timeout_tcp`, `connect_refused_econnrefused`, ...) and the most
//! connections open at once.

use crate::report::Summary;

/// At least this share of the attempted connections failing one way
/// earns a hint (a handful of stragglers does not).
const SHARE: f64 = 0.005;

/// Hints, most likely cause first; empty when nothing points anywhere.
pub fn hints(summary: &Summary) -> Vec<String> {
    let errors = &summary.errors;
    let sum = |pred: &dyn Fn(&str) -> bool| -> u64 {
        errors
            .iter()
            .filter(|(key, _)| pred(key))
            .map(|(_, n)| n)
            .sum()
    };
    let attempted = summary.attempted.max(1);
    let notable = |count: u64| count > 0 && count as f64 >= SHARE * attempted as f64;
    // The most connections open at once, as the live line saw it.
    let held = summary
        .timeline
        .iter()
        .map(|p| p.open)
        .max()
        .unwrap_or(summary.connected);
    let mut hints = Vec::new();

    // Connections the target never took up: the SYN unanswered (its accept
    // queue full) or the TCP connection accepted by the kernel but never by
    // the server (no upgrade answer). At a few hundred connections the
    // kernel's queue hides the stall as upgrade timeouts; at tens of
    // thousands the queue overflows and SYNs time out.
    let tcp_timeouts = sum(&|k| k == "timeout_tcp" || k == "connect_refused_etimedout");
    let upgrade_timeouts = sum(&|k| k == "timeout_upgrade");
    let stalled = tcp_timeouts + upgrade_timeouts;
    if notable(stalled) {
        hints.push(format!(
            "{stalled} connections timed out before the WebSocket upgrade ({tcp_timeouts} in \
             the TCP connect, {upgrade_timeouts} waiting for the upgrade answer) while the \
             target held at most {held}: the target refuses or stalls accepting. Most \
             likely a per-process open-files cap on the target (accept failing with \
             EMFILE, \"Too many open files\" in its log: raise its `ulimit -n` / \
             LimitNOFILE); else a listen backlog (net.core.somaxconn) too small for \
             --rate, or a target too busy (CPU) to accept; see docs/tuning.md."
        ));
    }
    let resets = sum(&|k| {
        k == "protocol_close_econnreset"
            || k == "connect_refused_econnreset"
            || k == "protocol_close_eof"
    });
    if notable(resets) {
        hints.push(format!(
            "{resets} connections were reset or closed by the target before the session \
             started, with {held} open at most: it drops connections it cannot serve (a \
             connection cap, an accept queue overflow, or too many open files); check \
             the target's log and limits (docs/tuning.md)."
        ));
    }
    let refused = sum(&|k| k == "connect_refused_econnrefused");
    if notable(refused) {
        hints.push(format!(
            "{refused} connects were refused (ECONNREFUSED): nothing listens on the \
             target address (wrong --target, or the server is down or crashed), or its \
             listen queue overflowed with net.ipv4.tcp_abort_on_overflow=1."
        ));
    }
    let no_ports = sum(&|k| k == "connect_refused_eaddrnotavail");
    if notable(no_ports) {
        hints.push(format!(
            "{no_ports} connects found no free local port (EADDRNOTAVAIL): the load host \
             ran out of ephemeral ports for this (source, target) pair; add source \
             addresses (--source-ips), targets, or widen net.ipv4.ip_local_port_range \
             (tuning/apply)."
        ));
    }
    let own_fds = sum(&|k| k.ends_with("errno_24") || k.ends_with("errno_23"));
    if notable(own_fds) {
        hints.push(format!(
            "{own_fds} sockets could not be opened by the load generator itself (EMFILE/\
             ENFILE): raise its open-files limit or use more --workers."
        ));
    }
    // `handshake_status_publish_*` are the publisher's HTTP API answers,
    // not WebSocket upgrades.
    let handshake = sum(&|k| k.starts_with("handshake_status") && !k.contains("publish"));
    if notable(handshake) {
        hints.push(format!(
            "{handshake} WebSocket upgrades were answered with an HTTP error: check the \
             path in --target, the JWT secret (--secret) and the target's connection \
             limits (the status is in the error key)."
        ));
    }
    let slow = sum(&|k| k == "timeout_connect_msg");
    if notable(slow) {
        hints.push(format!(
            "{slow} connections were upgraded but got no `connect` reply in time \
             (--connect-timeout-s): the target is overloaded (CPU) or slow to \
             authenticate; lower --rate or --connect-rate."
        ));
    }
    hints
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::TimelinePoint;

    fn summary(errors: &[(&str, u64)], attempted: u64, held: u64) -> Summary {
        Summary {
            attempted,
            connected: held,
            errors: errors.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
            timeline: vec![TimelinePoint {
                open: held,
                ..TimelinePoint::default()
            }],
            ..Summary::default()
        }
    }

    #[test]
    fn tcp_timeouts_at_a_plateau_point_at_the_targets_file_cap() {
        let hints = hints(&summary(
            &[("timeout_tcp", 71_824), ("timeout_upgrade", 10)],
            100_000,
            19_982,
        ));
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(
            hints[0].contains("71834 connections timed out before the WebSocket upgrade"),
            "{hints:?}"
        );
        assert!(
            hints[0].contains("71824 in the TCP connect, 10 waiting"),
            "{hints:?}"
        );
        assert!(hints[0].contains("at most 19982"), "{hints:?}");
        assert!(hints[0].contains("open-files cap"), "{hints:?}");
        assert!(hints[0].contains("docs/tuning.md"), "{hints:?}");
    }

    #[test]
    fn upgrade_timeouts_at_a_small_scale_get_the_same_hint() {
        // 600 asked of an engine capped at 300 open files: the kernel
        // accepted the rest, the engine never did.
        let hints = hints(&summary(&[("timeout_upgrade", 318)], 600, 282));
        assert_eq!(hints.len(), 1, "{hints:?}");
        assert!(
            hints[0].contains("0 in the TCP connect, 318 waiting"),
            "{hints:?}"
        );
        assert!(hints[0].contains("open-files cap"), "{hints:?}");
    }

    #[test]
    fn each_cause_has_its_hint_and_stragglers_none() {
        let hints = hints(&summary(
            &[
                ("connect_refused_econnrefused", 10),
                ("connect_refused_eaddrnotavail", 500),
                ("handshake_status_401", 40),
                ("protocol_close_econnreset", 3),
                ("handshake_status_publish_400", 800),
            ],
            1_000,
            450,
        ));
        assert_eq!(hints.len(), 3, "{hints:?}");
        assert!(hints[0].contains("nothing listens"));
        assert!(hints[1].contains("ephemeral ports"));
        assert!(hints[2].contains("HTTP error"));
        assert!(super::hints(&summary(&[], 1_000, 1_000)).is_empty());
    }
}

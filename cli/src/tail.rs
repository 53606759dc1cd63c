//! `bonker tail`: a live stream of bonks, acks and desk status changes across the fleet.
//!
//! Every line is printed through [`terminal::print_line`] and JSON lines are escaped by
//! [`terminal::json`]: what other people published never reaches the terminal as a control
//! character.

use anyhow::Result;
use bonker_protocol::{Ack, Bonk, Route, Status, Topics};
use chrono::Local;

use crate::session::{Received, Session};
use crate::terminal;

/// Streams until the process is stopped.
pub(crate) async fn run(mut session: Session, topics: &Topics, json: bool) -> Result<()> {
    session
        .subscribe(&[
            topics.all_namespace_bonks(),
            topics.all_desk_bonks(),
            topics.all_acks(),
            topics.all_statuses(),
        ])
        .await?;
    eprintln!("following {}/# — ctrl-c to stop", topics.prefix());
    loop {
        tokio::select! {
            message = session.next() => {
                if let Some(line) = render(topics, &message?, json) {
                    terminal::print_line(&line);
                }
            }
            () = bonker_client::shutdown_signal() => break,
        }
    }
    session.disconnect().await;
    Ok(())
}

/// One line for one message, or `None` for messages that are not the fleet's. A JSON line is
/// already safe for a terminal; a text line is made safe when printed.
pub(crate) fn render(topics: &Topics, message: &Received, json: bool) -> Option<String> {
    let route = topics.route(&message.topic)?;
    if json {
        let payload = serde_json::from_slice::<serde_json::Value>(&message.payload)
            .unwrap_or_else(|_| String::from_utf8_lossy(&message.payload).into());
        let kind = match route {
            Route::NamespaceBonk(_) | Route::DeskBonk(_) => "bonk",
            Route::Ack(_) => "ack",
            Route::Status(_) => "status",
            Route::Health(_) => "health",
            Route::LastBonk(_) => "last_bonk",
        };
        let line = serde_json::json!({"kind": kind, "topic": message.topic, "payload": payload});
        return Some(terminal::json(&line.to_string()).into_owned());
    }
    let time = Local::now().format("%H:%M:%S");
    let line = match route {
        Route::NamespaceBonk(_) | Route::DeskBonk(_) => {
            let target = match route {
                Route::NamespaceBonk(namespace) => format!("ns {namespace}"),
                Route::DeskBonk(desk) => format!("desk {desk}"),
                _ => unreachable!("matched above"),
            };
            if Bonk::clears_retained(&message.payload) {
                return Some(format!(
                    "{time} CLEAR {target:<19} a retained bonk was cleared; nobody bonks"
                ));
            }
            let bonk = Bonk::parse_lenient(&message.payload).bonk;
            let what = [
                bonk.pod.as_deref(),
                bonk.container.as_deref(),
                bonk.summary.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
            format!(
                "{time} BONK {target:<20} {:<8} from {:<13} {what} [{}]",
                bonk.severity.as_str(),
                bonk.source.as_str(),
                short(bonk.id.as_str())
            )
        }
        Route::Ack(desk) => match serde_json::from_slice::<Ack>(&message.payload) {
            Ok(ack) => format!(
                "{time} ACK  desk {:<15} {:<8} {} ms [{}]",
                desk.as_str(),
                ack.outcome.as_str(),
                (ack.finished_at - ack.received_at).num_milliseconds(),
                short(ack.bonk_id.as_str())
            ),
            Err(_) => format!("{time} ACK  desk {desk} (unreadable payload)"),
        },
        Route::Status(desk) => {
            let status = Status::parse(&message.payload)
                .map(Status::as_str)
                .unwrap_or("(cleared)");
            format!("{time} DESK {:<20} {status}", desk.as_str())
        }
        Route::Health(_) | Route::LastBonk(_) => return None,
    };
    Some(line)
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &str) -> Received {
        Received {
            topic: topic.to_owned(),
            payload: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn lines_describe_bonks_acks_and_status() {
        let topics = Topics::default();
        let bonk = render(
            &topics,
            &message(
                "bonker/bonk/payments",
                r#"{"severity":"warning","pod":"api-0"}"#,
            ),
            false,
        )
        .expect("a bonk line");
        assert!(
            bonk.contains("BONK ns payments") && bonk.contains("warning") && bonk.contains("api-0"),
            "{bonk}"
        );
        let status = render(
            &topics,
            &message("bonker/desk/alice/status", "offline"),
            false,
        )
        .expect("a status line");
        assert!(
            status.contains("DESK alice") && status.ends_with("offline"),
            "{status}"
        );
        assert!(render(&topics, &message("other/topic", "x"), false).is_none());
        let json = render(&topics, &message("bonker/bonk/payments", "tap"), true).expect("json");
        let value: serde_json::Value = serde_json::from_str(&json).expect("json line");
        assert_eq!(value["kind"], "bonk");
        assert_eq!(value["payload"], "tap");
    }

    /// OSC 52 (write the clipboard), a screen clear, a title, the C1 CSI, DEL, a bidi override
    /// and a line break: nothing a terminal would act on may come out.
    const HOSTILE: &str =
        "\x1b]52;c;aGFja2Vk\x07\x1b[2J\x1b]0;pwned\x07\u{9b}31m\x7f\u{202e}gol\nDESK x";

    fn printed(line: &str) -> String {
        terminal::text(line).into_owned()
    }

    fn assert_safe(printed: &str) {
        assert!(
            printed
                .chars()
                .all(|c| !c.is_control() && !('\u{2028}'..='\u{2069}').contains(&c)),
            "{printed:?}"
        );
    }

    #[test]
    fn lines_never_carry_the_network_s_control_characters() {
        let topics = Topics::default();
        let bonk = serde_json::json!({
            "pod": HOSTILE, "container": HOSTILE, "summary": HOSTILE, "severity": "info"
        });
        let line = render(
            &topics,
            &message("bonker/bonk/payments", &bonk.to_string()),
            false,
        )
        .expect("a bonk line");
        let shown = printed(&line);
        assert_safe(&shown);
        assert!(shown.contains(r"\u{1b}]52;c;aGFja2Vk\u{7}"), "{shown}");
        assert!(shown.contains(r"\u{202e}gol\nDESK x"), "{shown}");

        let ack = serde_json::json!({
            "bonk_id": HOSTILE, "desk": "alice", "outcome": "bonked",
            "received_at": "2026-11-21T10:00:00Z", "finished_at": "2026-11-21T10:00:01Z",
            "pod": HOSTILE, "detail": HOSTILE
        });
        let line = render(
            &topics,
            &message("bonker/desk/alice/ack", &ack.to_string()),
            false,
        )
        .expect("an ack line");
        let shown = printed(&line);
        assert_safe(&shown);
        assert!(shown.contains(r"[\u{1b}]52;c;a]"), "{shown}");

        let line = render(&topics, &message("bonker/desk/alice/bonk", HOSTILE), false)
            .expect("a desk bonk line");
        assert_safe(&printed(&line));

        // JSON lines are made safe as they are rendered, and still carry the exact value.
        let line = render(
            &topics,
            &message("bonker/bonk/payments", &bonk.to_string()),
            true,
        )
        .expect("a JSON line");
        assert_safe(&line);
        assert_eq!(printed(&line), line);
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(value["payload"]["pod"], HOSTILE);
    }
}

//! Patient messages, the IO side: planning them from the outbox's appointment events, and
//! sending what is due by email (SMTP) or SMS (an HTTP provider), each recorded as a FHIR
//! Communication once sent. A message carries its id as an idempotency key (the email's
//! Message-ID, the SMS request's `Idempotency-Key`), so a repeat after a crash between sending
//! and recording is recognisable at the receiving end.

use std::time::Duration;

use lettre::message::{header::ContentType, Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{json, Value};

use super::messages::{self, Context};
use super::metrics::NotifyMetrics;
use super::reminders::{self, Kind};
use super::worker::NotifyConfig;
use crate::fhir::datetime::{format_instant, now_micros};
use crate::fhir::Fhir;
use crate::store::notify::{MessageRow, Pending};
use crate::store::SqlStore;

/// Where messages go out.
#[derive(Debug, Clone, Default)]
pub struct Channels {
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub sms_url: Option<String>,
    pub sms_from: Option<String>,
    pub sms_auth: Option<(String, String)>,
}

/// Plans the messages of not-yet-planned appointment events.
pub async fn plan_pass(sql: &SqlStore, fhir: &Fhir) -> anyhow::Result<usize> {
    let mut planned = 0;
    for p in sql.outbox_unplanned(100).await? {
        let (appointment, messages) = plan_one(fhir, &p).await?;
        if sql
            .messages_plan(p.seq, appointment.as_deref(), &messages)
            .await?
        {
            planned += messages.len();
        }
    }
    Ok(planned)
}

async fn body_at(fhir: &Fhir, focus: &str) -> Option<(Value, i64)> {
    let (rt, id, v) = super::parse_focus(focus)?;
    let stored = fhir.store.vread(rt, id, v).await.ok()??;
    Some((serde_json::from_str(&stored.body).ok()?, v))
}

/// An appointment's start, µs since the epoch.
fn start_of(appt: &Value) -> Option<i64> {
    let text = appt["start"].as_str()?;
    crate::fhir::datetime::parse(text, crate::fhir::datetime::Kind::DateTime).map(|(r, _)| r.lo)
}

fn patient_of(appt: &Value) -> Option<String> {
    appt["participant"]
        .as_array()?
        .iter()
        .filter_map(|p| p["actor"]["reference"].as_str())
        .find(|r| r.starts_with("Patient/"))
        .map(String::from)
}

async fn plan_one(fhir: &Fhir, p: &Pending) -> anyhow::Result<(Option<String>, Vec<MessageRow>)> {
    let kind = match p.row.topic.as_str() {
        "appointment-booked" => Some(Kind::Confirmation),
        "appointment-rescheduled" => Some(Kind::Changed),
        "appointment-cancelled" => Some(Kind::Cancelled),
        _ => None, // no-show: outdated reminders are withdrawn, nothing is sent
    };
    let Some((appt, _)) = body_at(fhir, &p.row.focus).await else {
        return Ok((None, Vec::new()));
    };
    let appointment = format!("Appointment/{}", appt["id"].as_str().unwrap_or_default());
    let (Some(kind), Some(patient)) = (kind, patient_of(&appt)) else {
        return Ok((Some(appointment), Vec::new()));
    };
    let pid = patient.trim_start_matches("Patient/");
    let prefs = match fhir.store.read("Patient", pid).await? {
        Some(s) if !s.deleted => {
            reminders::prefs(&serde_json::from_str(&s.body)?, chrono_tz::Tz::UTC)
        }
        _ => return Ok((Some(appointment), Vec::new())),
    };
    let Some(start) = start_of(&appt) else {
        return Ok((Some(appointment), Vec::new()));
    };
    let rows = reminders::plan(kind, start, now_micros(), &prefs)
        .into_iter()
        .map(|m| MessageRow {
            id: uuid::Uuid::now_v7().to_string(),
            appointment: appointment.clone(),
            patient: patient.clone(),
            kind: m.kind.code().into(),
            channel: m.channel.code().into(),
            due: m.due,
            status: "pending".into(),
            attempts: 0,
            focus: p.row.focus.clone(),
        })
        .collect();
    Ok((Some(appointment), rows))
}

/// Messages the in-process worker sends side by side.
const SEND_AT_ONCE: usize = 16;

/// Sends what is due (the in-process worker). Returns how many were sent.
pub async fn send_pass(
    sql: &SqlStore,
    fhir: &Fhir,
    http: &reqwest::Client,
    config: &NotifyConfig,
    metrics: &NotifyMetrics,
) -> anyhow::Result<usize> {
    // Several at once: each SMTP or SMS exchange is a few round trips of waiting. At most
    // one per appointment and channel (`messages_due`), so they go out in order.
    let due: Vec<MessageRow> = sql.messages_due(now_micros(), 64).await?;
    let mut sent = 0;
    for batch in due.chunks(SEND_AT_ONCE) {
        let outcomes = futures::future::join_all(
            batch
                .iter()
                .map(|m| attempt(sql, fhir, http, config, metrics, m, 0)),
        )
        .await;
        for o in outcomes {
            if let Attempt::Sent = o? {
                sent += 1;
            }
        }
    }
    Ok(sent)
}

/// What became of one attempt at a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Sent,
    /// Not pending any more (sent, withdrawn, given up): a repeat, nothing done.
    Done,
    /// Another worker is sending it, until this time (µs).
    Busy(i64),
    /// Not sent; try again after this long.
    Retry(Duration),
    /// Not sent, and the retry period is over: recorded as failed.
    GaveUp,
}

/// One attempt at message `m`: claimed for this worker (so no two send it at once), sent, and
/// its outcome recorded. A failure is due again after a growing delay (2 s … ~4 min), plus
/// `redrive` µs in RabbitMQ mode, where the retry exchange brings it back first and the relay
/// republishes only what the broker lost.
pub async fn attempt(
    sql: &SqlStore,
    fhir: &Fhir,
    http: &reqwest::Client,
    config: &NotifyConfig,
    metrics: &NotifyMetrics,
    m: &MessageRow,
    redrive: i64,
) -> anyhow::Result<Attempt> {
    let lease = i64::try_from(config.claim_lease.as_micros()).unwrap_or(i64::MAX);
    let now = now_micros();
    // Another worker may have taken it; a crash mid-send frees it after the lease.
    if !sql.message_claim(&m.id, now, lease).await? {
        return Ok(match sql.message_get(&m.id).await? {
            Some((row, until)) if row.status == "pending" => Attempt::Busy(until),
            _ => Attempt::Done,
        });
    }
    match send_one(fhir, http, &config.channels, &config.base_url, m).await {
        Ok(()) => {
            let at = now_micros();
            metrics.count(&m.channel, "delivered");
            metrics.delivered_after(at - m.due);
            sql.message_sent(&m.id, at).await?;
            record(fhir, m).await;
            Ok(Attempt::Sent)
        }
        Err(e) => {
            let give_up =
                now - m.due >= i64::try_from(config.retry_for.as_micros()).unwrap_or(i64::MAX);
            let delay = Duration::from_secs(1 << (m.attempts + 1).clamp(1, 8)); // 2 s … ~4 min
            metrics.count(&m.channel, if give_up { "given_up" } else { "retry" });
            if give_up {
                tracing::error!(message = %m.id, channel = %m.channel, kind = %m.kind,
                    error = %e, "message given up after the retry period");
            } else {
                tracing::warn!(message = %m.id, channel = %m.channel, error = %e,
                    "message not sent; will retry");
            }
            let again = now + i64::try_from(delay.as_micros()).unwrap_or(i64::MAX) + redrive;
            sql.message_failed(&m.id, again, give_up, &e).await?;
            Ok(if give_up {
                Attempt::GaveUp
            } else {
                Attempt::Retry(delay)
            })
        }
    }
}

fn telecom(patient: &Value, systems: &[&str]) -> Option<String> {
    let t = patient["telecom"].as_array()?;
    systems.iter().find_map(|sys| {
        t.iter()
            .find(|c| c["system"] == *sys && c["value"].is_string())
            .and_then(|c| c["value"].as_str())
            .map(String::from)
    })
}

fn human_name(v: &Value) -> String {
    let n = &v["name"][0];
    if let Some(t) = n["text"].as_str() {
        return t.to_string();
    }
    let given: Vec<&str> = n["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let family = n["family"].as_str().unwrap_or_default();
    format!("{} {family}", given.join(" ")).trim().to_string()
}

async fn send_one(
    fhir: &Fhir,
    http: &reqwest::Client,
    ch: &Channels,
    base: &str,
    m: &MessageRow,
) -> Result<(), String> {
    let (appt, version) = body_at(fhir, &m.focus)
        .await
        .ok_or("the appointment version is gone")?;
    let pid = m.patient.trim_start_matches("Patient/");
    let patient: Value = match fhir.store.read("Patient", pid).await {
        Ok(Some(s)) if !s.deleted => serde_json::from_str(&s.body).map_err(|e| e.to_string())?,
        _ => return Err("the patient is gone".into()),
    };
    let prefs = reminders::prefs(&patient, chrono_tz::Tz::UTC);
    let start = start_of(&appt).unwrap_or_default();
    let practitioner = match appt["participant"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["actor"]["reference"].as_str())
        .find(|r| r.starts_with("Practitioner/"))
    {
        Some(r) => match fhir
            .store
            .read("Practitioner", r.trim_start_matches("Practitioner/"))
            .await
        {
            Ok(Some(s)) => serde_json::from_str::<Value>(&s.body)
                .map(|v| human_name(&v))
                .unwrap_or_default(),
            _ => String::new(),
        },
        None => String::new(),
    };
    let ctx = Context {
        name: human_name(&patient),
        practitioner: if practitioner.is_empty() {
            "your clinician".into()
        } else {
            practitioner
        },
        when: reminders::local_text(start, &prefs),
        place: String::new(),
        manage: format!(
            "{base}/Appointment/{}",
            appt["id"].as_str().unwrap_or_default()
        ),
    };
    let (subject, body) =
        messages::render(&m.kind, &prefs.language, &ctx).ok_or("no template for this message")?;
    match m.channel.as_str() {
        "email" => {
            let url = ch
                .smtp_url
                .as_deref()
                .ok_or("no SMTP server is configured")?;
            let to = telecom(&patient, &["email"]).ok_or("the patient has no email address")?;
            let ics = messages::ics(
                &appt,
                version,
                &subject,
                m.kind == "cancelled",
                now_micros(),
            )
            .ok_or("the appointment has no time")?;
            let mail = Message::builder()
                .from(
                    ch.mail_from
                        .parse::<Mailbox>()
                        .map_err(|_| "bad From address")?,
                )
                .to(to
                    .parse::<Mailbox>()
                    .map_err(|_| "the patient's email address is invalid")?)
                .subject(subject)
                .message_id(Some(format!("<{}@fhir-scheduler>", m.id)))
                .multipart(
                    MultiPart::mixed()
                        .singlepart(SinglePart::plain(body))
                        .singlepart(
                            Attachment::new("appointment.ics".into()).body(
                                ics,
                                ContentType::parse("text/calendar; charset=utf-8; method=REQUEST")
                                    .map_err(|_| "content type")?,
                            ),
                        ),
                )
                .map_err(|e| format!("building the email: {e}"))?;
            smtp_send(url, mail, Duration::from_secs(30)).await
        }
        "sms" => {
            let url = ch
                .sms_url
                .as_deref()
                .ok_or("no SMS provider is configured")?;
            let to =
                telecom(&patient, &["sms", "phone"]).ok_or("the patient has no phone number")?;
            let mut req = http
                .post(url)
                .timeout(Duration::from_secs(30))
                .header("Idempotency-Key", &m.id)
                .form(&[
                    ("To", to.as_str()),
                    ("From", ch.sms_from.as_deref().unwrap_or("fhir-scheduler")),
                    ("Body", &format!("{subject}\n{body}")),
                ]);
            if let Some((u, p)) = &ch.sms_auth {
                req = req.basic_auth(u, Some(p));
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("the SMS provider answered {}", r.status().as_u16())),
                Err(_) => Err("the SMS provider could not be reached".into()),
            }
        }
        other => Err(format!("unknown channel {other}")),
    }
}

/// The Communication that records a sent message (conditional on its identifier, so a repeat
/// records nothing twice). A failure here is logged; the message stays sent.
async fn record(fhir: &Fhir, m: &MessageRow) {
    let medium = if m.channel == "sms" {
        "SMSWRIT"
    } else {
        "EMAILWRIT"
    };
    let c = json!({
        "resourceType": "Communication",
        "identifier": [{"system": "https://fhir-scheduler.org/fhir/message-id", "value": m.id}],
        "status": "completed",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category",
                                  "code": if m.kind == "reminder" { "reminder" } else { "notification" }}]}],
        "medium": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
                                "code": medium}]}],
        "subject": {"reference": m.patient},
        "recipient": [{"reference": m.patient}],
        "about": [{"reference": m.appointment}],
        "sent": format_instant(now_micros()),
        "reasonCode": [{"text": m.kind}],
    });
    let cond = format!(
        "identifier=https://fhir-scheduler.org/fhir/message-id|{}",
        m.id
    );
    if let Err(e) = fhir.create("Communication", c, Some(&cond)).await {
        tracing::warn!(message = %m.id, error = %e, "recording the Communication failed");
    }
}

/// Mails a subscription notification (the Bundle's JSON as the body) to `mailto:` `endpoint`.
pub async fn mail_notification(
    ch: &Channels,
    endpoint: &str,
    subject: &str,
    bundle: &str,
    timeout: Duration,
) -> Result<(), String> {
    let url = ch
        .smtp_url
        .as_deref()
        .ok_or("no SMTP server is configured")?;
    let to = endpoint.trim_start_matches("mailto:");
    let mail = Message::builder()
        .from(
            ch.mail_from
                .parse::<Mailbox>()
                .map_err(|_| "bad From address")?,
        )
        .to(to
            .parse::<Mailbox>()
            .map_err(|_| "the endpoint address is invalid")?)
        .subject(subject)
        .singlepart(
            SinglePart::builder()
                .header(
                    ContentType::parse("application/fhir+json; charset=utf-8")
                        .map_err(|_| "content type")?,
                )
                .body(bundle.to_string()),
        )
        .map_err(|e| format!("building the email: {e}"))?;
    smtp_send(url, mail, timeout).await
}

async fn smtp_send(url: &str, mail: Message, timeout: Duration) -> Result<(), String> {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map_err(|_| "the SMTP URL is invalid")?
        .timeout(Some(timeout))
        .build();
    transport
        .send(mail)
        .await
        .map(|_| ())
        .map_err(|e| match e.status() {
            Some(code) => format!("the SMTP server answered {code}"),
            None => "the SMTP server could not be reached".into(),
        })
}

//! A backport Subscription as the worker uses it, read and checked from the resource (pure).
//! What the IG allows but this server does not serve is refused at create/update time, never
//! accepted and ignored.

use serde_json::Value;

use super::topics::{self, Topic};
use super::{FILTER_CRITERIA, HEARTBEAT_PERIOD, MAX_COUNT, PAYLOAD_CONTENT, TIMEOUT};

/// How much of the focus resource a notification carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Empty,
    IdOnly,
    FullResource,
}

impl Content {
    pub fn code(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::IdOnly => "id-only",
            Self::FullResource => "full-resource",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    RestHook,
    /// The notification Bundle mailed (as its JSON) to `mailto:` the endpoint.
    Email,
    /// Sent over a websocket the client opens and binds with a token from
    /// `$get-ws-binding-token` (no endpoint).
    Websocket,
}

impl ChannelKind {
    pub fn code(self) -> &'static str {
        match self {
            Self::RestHook => "rest-hook",
            Self::Email => "email",
            Self::Websocket => "websocket",
        }
    }
}

/// A checked subscription.
#[derive(Debug, Clone)]
pub struct Spec {
    pub topic: &'static Topic,
    /// `(param, accepted values)`: all must match (AND); a value list is an OR.
    pub filters: Vec<(String, Vec<String>)>,
    pub kind: ChannelKind,
    pub endpoint: String,
    /// `Name: value` headers sent with every notification.
    pub headers: Vec<(String, String)>,
    pub content: Content,
    pub heartbeat_secs: Option<u64>,
    pub timeout_secs: u64,
    pub max_count: usize,
}

fn ext<'a>(v: &'a Value, url: &str) -> impl Iterator<Item = &'a Value> + 'a {
    let url = url.to_string();
    v["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(move |e| e["url"].as_str() == Some(url.as_str()))
}

/// Reads and checks `body`; `Err` names what is wrong (→ 400 / 422).
pub fn parse(body: &Value) -> Result<Spec, String> {
    let criteria = body["criteria"]
        .as_str()
        .ok_or("Subscription.criteria must be the canonical URL of a topic")?;
    let topic = topics::by_url(criteria).ok_or_else(|| {
        format!(
            "unknown topic '{criteria}'; this server offers: {}",
            topics::all()
                .iter()
                .map(|t| t.url.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let mut filters = Vec::new();
    for f in ext(&body["_criteria"], FILTER_CRITERIA) {
        let text = f["valueString"]
            .as_str()
            .ok_or("backport-filter-criteria takes a valueString")?;
        let query = match text.split_once('?') {
            Some((rt, q)) if rt == topic.resource => q,
            Some((rt, _)) => {
                return Err(format!(
                    "filter '{text}' is on {rt}; topic {} is about {}",
                    topic.code, topic.resource
                ))
            }
            None => text,
        };
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if !topic.filters.iter().any(|f| *f == name) {
                return Err(format!(
                    "topic {} cannot be filtered by '{name}' (it can by: {})",
                    topic.code,
                    topic.filters.join(", ")
                ));
            }
            let values: Vec<String> = value
                .split(',')
                .filter(|v| !v.is_empty())
                .map(String::from)
                .collect();
            if values.is_empty() {
                return Err(format!("filter '{name}' has no value"));
            }
            filters.push((name.into_owned(), values));
        }
    }
    let channel = &body["channel"];
    let kind = match channel["type"].as_str() {
        Some("rest-hook") => ChannelKind::RestHook,
        Some("email") => ChannelKind::Email,
        Some("websocket") => ChannelKind::Websocket,
        Some(other) => {
            return Err(format!(
                "channel type '{other}' is not supported here (supported: rest-hook, email, \
                 websocket)"
            ))
        }
        None => return Err("Subscription.channel.type is required".into()),
    };
    if ext(
        &channel["_type"],
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-channel-type",
    )
    .next()
    .is_some()
    {
        return Err("custom channel types are not supported".into());
    }
    let endpoint = match (kind, channel["endpoint"].as_str()) {
        (ChannelKind::Websocket, e) => e.unwrap_or_default(),
        (_, Some(e)) => e,
        (_, None) => return Err("the channel needs channel.endpoint".into()),
    };
    match kind {
        ChannelKind::RestHook
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) =>
        {
            return Err("a rest-hook channel.endpoint must be an http(s) URL".into())
        }
        ChannelKind::Email
            if !endpoint
                .strip_prefix("mailto:")
                .is_some_and(|a| a.contains('@') && !a.contains([',', '?', ' '])) =>
        {
            return Err("an email channel.endpoint must be mailto:<one address>".into())
        }
        _ => {}
    }
    match channel["payload"].as_str() {
        Some("application/fhir+json" | "application/json") => {}
        Some(other) => {
            return Err(format!(
                "payload type '{other}' is not supported (application/fhir+json is)"
            ))
        }
        None => return Err("channel.payload (a MIME type) is required".into()),
    }
    let content = match ext(&channel["_payload"], PAYLOAD_CONTENT)
        .next()
        .and_then(|e| e["valueCode"].as_str())
    {
        Some("empty") => Content::Empty,
        Some("id-only") | None => Content::IdOnly,
        Some("full-resource") => Content::FullResource,
        Some(other) => return Err(format!("unknown payload content '{other}'")),
    };
    let mut headers = Vec::new();
    for h in channel["header"].as_array().into_iter().flatten() {
        let h = h.as_str().ok_or("channel.header entries are strings")?;
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("channel.header '{h}' is not 'Name: value'"))?;
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!(
                "channel.header name '{name}' is not a valid header name"
            ));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let uint = |url: &str, key: &str| ext(channel, url).next().and_then(|e| e[key].as_u64());
    Ok(Spec {
        topic,
        filters,
        kind,
        endpoint: endpoint.to_string(),
        headers,
        content,
        heartbeat_secs: uint(HEARTBEAT_PERIOD, "valueUnsignedInt").filter(|s| *s > 0),
        timeout_secs: uint(TIMEOUT, "valueUnsignedInt")
            .unwrap_or(30)
            .clamp(1, 300),
        max_count: uint(MAX_COUNT, "valuePositiveInt")
            .unwrap_or(20)
            .clamp(1, 100) as usize,
    })
}

/// Does an event with these filter keys pass the subscription's filters?
pub fn matches(spec: &Spec, keys: &Value) -> bool {
    spec.filters.iter().all(|(name, wanted)| {
        let have: Vec<&str> = keys[name.as_str()]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        wanted.iter().any(|w| {
            have.iter()
                .any(|h| *h == w || h.rsplit('/').next() == Some(w.as_str()) && !w.contains('/'))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sub(filter: &str) -> Value {
        json!({"resourceType": "Subscription", "status": "requested", "reason": "t",
            "criteria": "https://fhir-scheduler.org/fhir/SubscriptionTopic/appointment-booked",
            "_criteria": {"extension": [{"url": FILTER_CRITERIA, "valueString": filter}]},
            "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook",
                "header": ["Authorization: Bearer x"],
                "extension": [{"url": HEARTBEAT_PERIOD, "valueUnsignedInt": 60}],
                "payload": "application/fhir+json",
                "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": "full-resource"}]}}})
    }

    #[test]
    fn reads_a_backport_subscription() {
        let s = parse(&sub("Appointment?patient=Patient/p1,Patient/p2")).unwrap();
        assert_eq!(s.topic.code, "appointment-booked");
        assert_eq!(s.content, Content::FullResource);
        assert_eq!(s.heartbeat_secs, Some(60));
        assert_eq!(s.headers, [("Authorization".into(), "Bearer x".into())]);
        assert!(matches(&s, &json!({"patient": ["Patient/p2"]})));
        assert!(!matches(&s, &json!({"patient": ["Patient/p3"]})));
        let bare = parse(&sub("patient=p1")).unwrap();
        assert!(matches(&bare, &json!({"patient": ["Patient/p1"]})));
    }

    #[test]
    fn websocket_channels_need_no_endpoint() {
        let mut s = sub("patient=p1");
        s["channel"]["type"] = json!("websocket");
        s["channel"].as_object_mut().unwrap().remove("endpoint");
        assert_eq!(parse(&s).unwrap().kind, ChannelKind::Websocket);
        s["channel"]["type"] = json!("rest-hook");
        assert!(parse(&s).unwrap_err().contains("endpoint"));
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        assert!(parse(&sub("Appointment?status=booked"))
            .unwrap_err()
            .contains("cannot be filtered"));
        assert!(parse(&sub("Slot?schedule=Schedule/1"))
            .unwrap_err()
            .contains("is on Slot"));
        let mut s = sub("patient=p1");
        s["criteria"] = json!("http://example.org/topic/nope");
        assert!(parse(&s).unwrap_err().contains("unknown topic"));
        let mut s = sub("patient=p1");
        s["channel"]["type"] = json!("email");
        assert!(parse(&s).unwrap_err().contains("mailto"));
        s["channel"]["endpoint"] = json!("mailto:ehr@example.org");
        assert_eq!(parse(&s).unwrap().kind, ChannelKind::Email);
        let mut s = sub("patient=p1");
        s["channel"]["type"] = json!("sms");
        assert!(parse(&s).unwrap_err().contains("not supported"));
        let mut s = sub("patient=p1");
        s["channel"]["payload"] = json!("application/fhir+xml");
        assert!(parse(&s).is_err());
        let mut s = sub("patient=p1");
        s["channel"]["_payload"]["extension"][0]["valueCode"] = json!("everything");
        assert!(parse(&s).is_err());
    }
}

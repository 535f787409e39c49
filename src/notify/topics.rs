//! The subscription topics this server offers, read from `profiles/topics.json` (R5-shaped
//! SubscriptionTopic definitions: R4 has no SubscriptionTopic resource, so the backport IG
//! names topics by canonical URL; the definitions document them and list their filters).

use std::sync::OnceLock;

use serde_json::Value;

pub const TOPICS_JSON: &str = include_str!("../../profiles/topics.json");

/// One topic: canonical URL, short code (the definition's id), focus resource type and the
/// filter parameters it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub url: String,
    pub code: String,
    pub resource: String,
    pub filters: Vec<String>,
}

/// All topics (parsed once; the file is checked by a test).
pub fn all() -> &'static [Topic] {
    static TOPICS: OnceLock<Vec<Topic>> = OnceLock::new();
    TOPICS.get_or_init(|| parse(TOPICS_JSON).unwrap_or_default())
}

pub fn by_url(url: &str) -> Option<&'static Topic> {
    all().iter().find(|t| t.url == url)
}

pub fn by_code(code: &str) -> Option<&'static Topic> {
    all().iter().find(|t| t.code == code)
}

fn parse(text: &str) -> Option<Vec<Topic>> {
    let bundle: Value = serde_json::from_str(text).ok()?;
    bundle["entry"]
        .as_array()?
        .iter()
        .map(|e| {
            let t = &e["resource"];
            let resource = t["resourceTrigger"][0]["resource"]
                .as_str()?
                .rsplit('/')
                .next()?
                .to_string();
            Some(Topic {
                url: t["url"].as_str()?.to_string(),
                code: t["id"].as_str()?.to_string(),
                resource,
                filters: t["canFilterBy"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f["filterParameter"].as_str().map(String::from))
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_topics_parse() {
        let t = parse(TOPICS_JSON).expect("profiles/topics.json parses");
        assert_eq!(t.len(), 5);
        let booked = by_code("appointment-booked").unwrap();
        assert_eq!(booked.resource, "Appointment");
        assert_eq!(booked.filters, ["patient", "practitioner", "location"]);
        assert_eq!(by_url(&booked.url), Some(booked));
        assert_eq!(by_code("slot-availability").unwrap().filters, ["schedule"]);
    }
}

use reqwest::{Method, StatusCode};

use crate::both;
use crate::helpers::{Backend, TestApp};

/// The bad-input corpus: every answer is a 4xx OperationOutcome, never a 5xx, and the server
/// keeps serving.
async fn bad_inputs_get_outcomes(b: Backend) {
    let app = TestApp::start_with(b, 1024 * 1024).await;
    let deep = format!(
        "{{\"resourceType\":\"Patient\",\"extension\":{}[]{}}}",
        "[{\"url\":\"u\",\"extension\":".repeat(300),
        "}]".repeat(300)
    );
    let huge_string = format!(
        "{{\"resourceType\":\"Patient\",\"name\":[{{\"family\":\"{}\"}}]}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("malformed", "Patient", br#"{"resourceType": "Patient", "name": ["#.to_vec()),
        ("not json", "Patient", b"hello".to_vec()),
        ("empty body", "Patient", b"".to_vec()),
        ("array body", "Patient", b"[]".to_vec()),
        ("unknown element", "Patient", br#"{"resourceType":"Patient","colour":"blue"}"#.to_vec()),
        ("empty participant", "Appointment", br#"{"resourceType":"Appointment","status":"proposed","participant":[]}"#.to_vec()),
        ("empty object", "Patient", br#"{"resourceType":"Patient","name":[{}]}"#.to_vec()),
        ("empty top object", "Patient", br#"{}"#.to_vec()),
        ("empty string", "Patient", br#"{"resourceType":"Patient","gender":""}"#.to_vec()),
        ("null", "Patient", br#"{"resourceType":"Patient","gender":null}"#.to_vec()),
        ("wrong type", "Patient", br#"{"resourceType":"Practitioner"}"#.to_vec()),
        ("no resourceType", "Patient", br#"{"gender":"female"}"#.to_vec()),
        ("bad code", "Appointment", br#"{"resourceType":"Appointment","status":"nonsense","participant":[{"status":"accepted","actor":{"reference":"Patient/x"}}]}"#.to_vec()),
        ("bad participant status", "Appointment", br#"{"resourceType":"Appointment","status":"proposed","participant":[{"status":"maybe","actor":{"reference":"Patient/x"}}]}"#.to_vec()),
        ("app-3", "Appointment", br#"{"resourceType":"Appointment","status":"booked","participant":[{"status":"accepted","actor":{"reference":"Patient/x"}}]}"#.to_vec()),
        ("bad instant", "Appointment", br#"{"resourceType":"Appointment","status":"booked","start":"tomorrow","end":"2030-01-01T10:00:00Z","participant":[{"status":"accepted","actor":{"reference":"Patient/x"}}]}"#.to_vec()),
        ("bad date", "Patient", br#"{"resourceType":"Patient","birthDate":"yesterday"}"#.to_vec()),
        ("bad boolean", "Patient", br#"{"resourceType":"Patient","active":"yes"}"#.to_vec()),
        ("number as string", "Patient", br#"{"resourceType":"Patient","multipleBirthInteger":"2"}"#.to_vec()),
        ("missing Slot.schedule", "Slot", br#"{"resourceType":"Slot","status":"free","start":"2030-01-01T10:00:00Z","end":"2030-01-01T10:30:00Z"}"#.to_vec()),
        ("end before start", "Slot", br#"{"resourceType":"Slot","status":"free","schedule":{"reference":"Schedule/x"},"start":"2030-01-01T10:30:00Z","end":"2030-01-01T10:00:00Z"}"#.to_vec()),
        ("array where single", "Patient", br#"{"resourceType":"Patient","gender":["female"]}"#.to_vec()),
        ("single where array", "Patient", br#"{"resourceType":"Patient","name":{"family":"x"}}"#.to_vec()),
        ("bad reference", "Slot", br#"{"resourceType":"Slot","status":"free","schedule":{"reference":"Schedule/"},"start":"2030-01-01T10:00:00Z","end":"2030-01-01T10:30:00Z"}"#.to_vec()),
        ("bad reference chars", "Slot", br#"{"resourceType":"Slot","status":"free","schedule":{"reference":"Schedule/a b"},"start":"2030-01-01T10:00:00Z","end":"2030-01-01T10:30:00Z"}"#.to_vec()),
        ("deep nesting", "Patient", deep.into_bytes()),
        ("invalid utf-8", "Patient", b"{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\xff\xfe\"}]}".to_vec()),
        ("bad id", "Patient", br#"{"resourceType":"Patient","id":"a b"}"#.to_vec()),
    ];
    for (name, rt, body) in cases {
        let r = app.send(Method::POST, rt, Some(body), &[]).await;
        assert!(
            r.status.is_client_error(),
            "{name}: {} {}",
            r.status,
            r.json
        );
        assert_eq!(
            r.json["resourceType"], "OperationOutcome",
            "{name}: {}",
            r.json
        );
        assert!(r.json["issue"][0]["code"].is_string(), "{name}");
    }
    // Over the body limit: 413, and the server still answers. Sent by hand: the server may
    // answer (and close) before the whole body is written, which an HTTP client reports as a
    // broken pipe instead of the answer.
    let answer = over_the_limit(&app, &huge_string).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too-long"), "{answer}");
    assert_eq!(app.get("metadata").await.status, StatusCode::OK);
}
both!(bad_inputs_get_outcomes);

/// POSTs `body` as a Patient over a raw connection, ignoring a failed write, and returns what
/// the server answered.
async fn over_the_limit(app: &TestApp, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = app
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/fhir");
    let mut conn = tokio::net::TcpStream::connect(authority).await.unwrap();
    let head = format!(
        "POST /fhir/Patient HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {}\r\n\
         Content-Type: application/fhir+json\r\nAccept: application/fhir+json\r\n\
         Content-Length: {}\r\n\r\n",
        app.admin_bearer,
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let _ = conn.write_all(body.as_bytes()).await; // the server may have closed already
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Issues name the element at fault.
async fn issues_carry_expressions(b: Backend) {
    let app = TestApp::start(b).await;
    let r = app
        .send(
            Method::POST,
            "Appointment",
            Some(br#"{"resourceType":"Appointment","status":"nonsense","participant":[{"status":"accepted","actor":{"reference":"Patient/x"}}]}"#.to_vec()),
            &[],
        )
        .await;
    r.outcome(400);
    let exprs: Vec<String> = r.json["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["expression"][0].as_str().map(String::from))
        .collect();
    assert!(exprs.iter().any(|e| e.contains("status")), "{exprs:?}");
    let r = app
        .send(
            Method::POST,
            "Appointment",
            Some(br#"{"resourceType":"Appointment","status":"booked","participant":[{"status":"accepted","actor":{"reference":"Patient/x"}}]}"#.to_vec()),
            &[],
        )
        .await;
    assert_eq!(r.outcome(400), "invariant");
    assert!(r.json["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("app-3"));
}
both!(issues_carry_expressions);

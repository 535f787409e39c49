//! OpenAPI: the non-FHIR endpoints carry utoipa annotations; the FHIR endpoints are described
//! from the CapabilityStatement, so the document lists exactly what `/metadata` declares.
//! Swagger UI is served at `/docs`, the document at `/openapi.json`.

use axum::Router;
use serde_json::{json, Map, Value};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::api::AppState;
use crate::fhir::capability;
use crate::fhir::Fhir;

#[derive(OpenApi)]
#[openapi(
    info(title = "fhir-scheduler", description = "FHIR R4 scheduling server"),
    paths(crate::api::health, crate::api::metrics)
)]
struct OperationsApi;

/// The Swagger UI router; built once the engine exists since the document depends on it.
pub fn docs(fhir: &Fhir) -> Router<AppState> {
    let doc = document(fhir);
    let api: utoipa::openapi::OpenApi =
        serde_json::from_value(doc).unwrap_or_else(|_| OperationsApi::openapi());
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", api))
}

/// The whole OpenAPI document as JSON.
pub fn document(fhir: &Fhir) -> Value {
    let mut doc = serde_json::to_value(OperationsApi::openapi()).unwrap_or_else(|_| json!({}));
    let cs = capability::capability_statement(fhir, "/fhir");
    let mut paths = doc["paths"].as_object().cloned().unwrap_or_default();
    let fhir_json = |desc: &str| {
        json!({"description": desc,
               "content": {"application/fhir+json": {"schema": {"type": "object"}}}})
    };
    let errors = fhir_json("OperationOutcome");
    let id_param =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    for r in cs["rest"][0]["resource"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let rt = r["type"].as_str().unwrap_or_default().to_string();
        let search_params: Vec<Value> = r["searchParam"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                json!({"name": p["name"], "in": "query", "required": false,
                       "description": format!("{} search parameter", p["type"].as_str().unwrap_or("")),
                       "schema": {"type": "string"}})
            })
            .chain(capability::RESULT_PARAMETERS.iter().map(|p| {
                json!({"name": p, "in": "query", "required": false, "schema": {"type": "string"}})
            }))
            .collect();
        let tag = json!([rt]);
        let mut type_path = Map::new();
        type_path.insert(
            "get".into(),
            json!({
            "tags": tag, "summary": format!("Search {rt}"), "operationId": format!("search{rt}"),
            "parameters": search_params,
            "responses": {"200": fhir_json("searchset Bundle"), "400": errors}}),
        );
        type_path.insert(
            "post".into(),
            json!({
            "tags": tag, "summary": format!("Create a {rt}"), "operationId": format!("create{rt}"),
            "requestBody": fhir_json(&rt),
            "responses": {"201": fhir_json(&rt), "400": errors, "422": errors}}),
        );
        paths.insert(format!("/fhir/{rt}"), Value::Object(type_path));
        paths.insert(format!("/fhir/{rt}/{{id}}"), json!({
            "get": {"tags": tag, "summary": format!("Read a {rt}"), "operationId": format!("read{rt}"),
                    "parameters": [id_param],
                    "responses": {"200": fhir_json(&rt), "404": errors, "410": errors}},
            "put": {"tags": tag, "summary": format!("Update (or create) a {rt}"), "operationId": format!("update{rt}"),
                    "parameters": [id_param], "requestBody": fhir_json(&rt),
                    "responses": {"200": fhir_json(&rt), "201": fhir_json(&rt), "400": errors, "412": errors}},
            "patch": {"tags": tag, "summary": format!("JSON Patch a {rt}"), "operationId": format!("patch{rt}"),
                    "parameters": [id_param],
                    "requestBody": {"content": {"application/json-patch+json": {"schema": {"type": "array"}}}},
                    "responses": {"200": fhir_json(&rt), "400": errors, "412": errors}},
            "delete": {"tags": tag, "summary": format!("Delete a {rt}"), "operationId": format!("delete{rt}"),
                    "parameters": [id_param], "responses": {"204": {"description": "Deleted"}}}
        }));
        paths.insert(format!("/fhir/{rt}/{{id}}/_history"), json!({
            "get": {"tags": tag, "summary": format!("History of a {rt}"), "operationId": format!("history{rt}"),
                    "parameters": [id_param], "responses": {"200": fhir_json("history Bundle")}}
        }));
    }
    paths.insert(
        "/fhir/metadata".into(),
        json!({
        "get": {"tags": ["system"], "summary": "CapabilityStatement", "operationId": "metadata",
                "responses": {"200": fhir_json("CapabilityStatement")}}}),
    );
    paths.insert("/fhir".into(), json!({
        "post": {"tags": ["system"], "summary": "Batch or transaction Bundle", "operationId": "bundle",
                 "requestBody": fhir_json("Bundle"),
                 "responses": {"200": fhir_json("Bundle"), "400": errors}}}));
    doc["paths"] = Value::Object(paths);
    doc
}

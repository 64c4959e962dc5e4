"""Every page names the institution under the service's name: a patient sees whose service
this is, and two clinics side by side (make pair) are told apart."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.support import factories as f


def test_the_header_names_the_institution(client: FlaskClient) -> None:
    html = client.get("/").get_data(as_text=True)
    assert '<a class="brand"' in html and 'class="institution"' not in html  # none recorded yet: no empty line
    f.institution()
    html = client.get("/").get_data(as_text=True)
    assert '<span class="institution">测试互联网医院</span>' in html
    assert '<span class="institution">测试互联网医院</span>' in client.get("/login").get_data(as_text=True)

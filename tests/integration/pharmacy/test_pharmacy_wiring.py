"""The pharmacy answers what prescriptions ask of it through hooks the app factory wires, per
app: nothing is registered when a module is imported, so two apps share no handlers."""

from __future__ import annotations

import uuid

from flask import Flask

from pharmacy import delivery, dispensing
from pharmacy import services as pharmacy_services
from prescriptions import document, events
from prescriptions import reads as rx_reads


def test_the_factory_wires_each_pharmacy_hook_once_on_its_app(app: Flask) -> None:
    assert app.extensions[events.SIGNED] == [pharmacy_services.queue_signed]
    assert app.extensions[events.STATUS_CHANGED] == [pharmacy_services.close_unreviewed]
    assert app.extensions[rx_reads.APPROVAL_LOOKUP] == [pharmacy_services.approval_of]
    assert app.extensions[rx_reads.REVIEW_READ] == [pharmacy_services.outcome_of]
    assert app.extensions[document.REVIEW_FACTS] == [dispensing.document_facts]
    assert app.extensions[delivery.STATUS_LISTENERS] == [dispensing.follow_delivery]


def test_an_app_the_factory_did_not_wire_reads_no_review() -> None:
    bare = Flask("bare")
    with bare.app_context():
        assert rx_reads.approval_jws(uuid.uuid4()) is None
        assert rx_reads.review_outcome(uuid.uuid4()) is None
        assert document.review_facts(uuid.uuid4()) == document.ReviewFacts()

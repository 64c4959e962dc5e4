"""The pharmacy domain's codes in words: deliveries, review decisions and reasons."""

from __future__ import annotations

from clinic.core.pages import register_labels, words
from pharmacy.rules import REVIEW_REASONS

DELIVERY_STATUS = words(
    {
        "not_dispensed": ("尚未发药", "Not dispensed yet"),
        "routed": ("正在安排配送", "Arranging delivery"),  # chosen, not yet accepted by the partner
        "dispatched": ("配送企业已接单", "Accepted by the delivery partner"),
        "picked_up": ("已揽收", "Picked up"),
        "in_transit": ("运输中", "On the way"),
        "out_for_delivery": ("配送中", "Out for delivery"),
        "delivered": ("已送达", "Delivered"),
        "failed": ("配送失败", "Delivery failed"),
        "rerouted": ("已转交其他配送企业", "Passed to another delivery partner"),
        "returned": ("已退回药房", "Back at the pharmacy"),
        "collect_at_pharmacy": ("请到药房自取", "To be collected at the pharmacy"),
        "collected": ("已在药房取药", "Collected at the pharmacy"),
    }
)
DECISION = words(
    {
        "approve": ("审核通过", "Approved"),
        "reject": ("拒绝", "Rejected"),
        "return": ("退回修改", "Returned"),
    }
)
REASON = words(REVIEW_REASONS)


def register() -> None:
    """Called once by the application factory."""
    register_labels("delivery", DELIVERY_STATUS)
    register_labels("decision", DECISION)
    register_labels("reason", REASON)

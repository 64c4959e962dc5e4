"""The notification centre and its SMS. Domains call `notify(...)`, never a sender of their own."""

from clinic.notifications.services import notify

__all__ = ["notify"]

"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`."""

from clinic.app import create_app

app = create_app()

"""Between institutions: agreements with partner institutions, signed FHIR messages in and out."""

"""Build a contact form"""


def handle(payload: dict) -> dict:
    """Validate the payload and return a normalised copy."""
    if not isinstance(payload, dict):
        raise TypeError("payload must be a dict")
    return {key.strip().lower(): value for key, value in payload.items()}

"""Where verification's measurements come from: ``prometheus`` (the HTTP API's instant
queries). A provider answers a filled-in query with a ``core.verification.Reading``: a
value, no data, or an error; it never decides what a reading means (the measurement
machine of ``core.verification`` does)."""

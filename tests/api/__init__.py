"""The REST API and /ws against a real server: answers, errors, auth, limits, security, fuzzing."""

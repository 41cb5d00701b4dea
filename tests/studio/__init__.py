"""The studio: in Chromium, through NiceGUI's simulated user, and in the native window."""

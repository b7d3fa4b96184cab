"""The app: its API through a local server, and a real Chromium."""

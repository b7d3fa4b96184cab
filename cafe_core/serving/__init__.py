"""What the app serves, as plain data (no gradio here): checkpoint sets, Explore, the defense table, the worker
pool and result cache, reports, the lesson, figures, texts and the handlers behind every button."""

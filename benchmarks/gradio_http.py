"""A lean client of a Gradio app's documented HTTP API (upload, /call/<api_name>, file fetch).

Why not gradio_client: the load tests run the app and its 30 simulated visitors on the same
2 cores, and gradio_client's per-session machinery (a config fetch, a thread per job, polling)
cost more CPU per request than the app spent answering it (0.156 s against 0.097 s in the run of
load_classroom.json at 8a09071). A real classroom's browsers run on the students' own devices,
so that CPU was charged to the server by the measurement, not by the app. This client sends the
same three kinds of HTTP request a browser sends (the upload, the queued call, the SSE stream of
the answer, then a GET per picture) and nothing else; the server does exactly the same work.

Protocol (gradio >= 4, "Querying Gradio apps with curl" in Gradio's guides):
``POST /gradio_api/upload`` (multipart ``files``) -> list of server paths;
``POST /gradio_api/call/<api>`` ``{"data": [...]}`` -> ``{"event_id"}``;
``GET /gradio_api/call/<api>/<event_id>`` -> server-sent events, the last ``event: complete``
(or ``event: error``) with ``data: <JSON list of outputs>``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx


class GradioCallError(RuntimeError):
    """The app answered a call with ``event: error`` (its message, e.g. a gr.Error, is the text)."""


class GradioHTTP:
    """One visitor: one kept-alive HTTP connection to the app at ``url``."""

    def __init__(self, url: str, timeout: float = 180.0) -> None:
        self.root = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "GradioHTTP":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def upload(self, path: str | Path) -> dict[str, Any]:
        """Upload one file; returns the FileData an input component accepts."""
        path = Path(path)
        response = self.http.post(f"{self.root}/gradio_api/upload",
                                  files={"files": (path.name, path.read_bytes(), "application/octet-stream")})
        response.raise_for_status()
        (server_path,) = response.json()
        return {"path": server_path, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def call(self, api_name: str, *data: Any) -> list[Any]:
        """Run endpoint ``api_name`` (without its leading slash) and return its outputs."""
        response = self.http.post(f"{self.root}/gradio_api/call/{api_name}", json={"data": list(data)})
        response.raise_for_status()
        event_id = response.json()["event_id"]
        event = None
        with self.http.stream("GET", f"{self.root}/gradio_api/call/{api_name}/{event_id}") as stream:
            stream.raise_for_status()
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    payload = json.loads(line.split(":", 1)[1])
                    if event == "error":
                        raise GradioCallError(str(payload))
                    return payload
        raise GradioCallError(f"/{api_name}: the stream ended without an answer (last event {event!r})")

    def fetch_files(self, output: Any) -> int:
        """GET every file an answer refers to (as a browser showing it would); returns the count."""
        if isinstance(output, dict):
            if isinstance(output.get("url"), str):
                url = output["url"]
                self.http.get(url if url.startswith("http") else f"{self.root}/{url.lstrip('/')}").raise_for_status()
                return 1
            return sum(self.fetch_files(v) for v in output.values())
        if isinstance(output, (list, tuple)):
            return sum(self.fetch_files(v) for v in output)
        return 0

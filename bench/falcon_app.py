"""The reference HTTP path: a Falcon 4 WSGI app that calls the sentiment model inline.

``POST /experts/sentiment`` with a JSON body ``{"text": ...}`` returns the same
opinion as expertd (``{"valence", "label", "confidence"}``): the model is
loaded once, at import, by the same ``SentimentExpert`` the server uses (which
wraps it in one ``tf.function`` with a fixed ``input_signature``), and every
request calls it inline, one text at a time, in the request's own thread of
control. ``GET /healthz`` says it is ready.

    python -m bench.falcon_app --port 8000          # bjoern, one process
    gunicorn -k gevent -w 1 bench.falcon_app:app    # the same app under gunicorn

Environment: ``BENCH_MODEL_DIR`` (default ``models/sentiment``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import falcon

from expertd.experts.keras_text import SentimentExpert

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(os.environ.get("BENCH_MODEL_DIR", ROOT / "models" / "sentiment"))


class Opinion:
    """``POST /experts/sentiment``: one opinion per request."""

    def __init__(self, expert: SentimentExpert) -> None:
        """Answer with ``expert`` (already loaded)."""
        self.expert = expert

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Read ``{"text": str}``, answer the opinion as JSON."""
        doc = req.get_media()
        text = doc.get("text") if isinstance(doc, dict) else None
        if not isinstance(text, str):
            raise falcon.HTTPBadRequest(title="InvalidDocument",
                                        description='the body must be {"text": "..."}')
        resp.media = self.expert.predict([text])[0]


class Health:
    """``GET /healthz``."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Always ok once the app exists (the model is loaded before it does)."""
        resp.media = {"status": "ok", "pid": os.getpid()}


def create_app(model_dir: Path = MODEL_DIR) -> falcon.App:
    """Load the model once and build the WSGI app."""
    expert = SentimentExpert("sentiment", model_dir=str(model_dir))
    expert.load()
    application = falcon.App()
    application.add_route("/experts/sentiment", Opinion(expert))
    application.add_route("/healthz", Health())
    return application


app = create_app()


def main() -> None:
    """Serve ``app`` with bjoern on 127.0.0.1."""
    import bjoern

    parser = argparse.ArgumentParser(description="Falcon + bjoern sentiment reference server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    print(f"bjoern serving the Falcon app on http://{args.host}:{args.port}", flush=True)
    bjoern.run(app, args.host, args.port)


if __name__ == "__main__":
    main()

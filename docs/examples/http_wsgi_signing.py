"""Flask behind `SessionWSGIMiddleware` with signing on: a signed context passes, a forged one is refused.

Needs: session-http[requests], flask. Runs werkzeug's server on 127.0.0.1 in a background thread.
"""

from __future__ import annotations

import threading

import flask
import requests
from werkzeug.serving import make_server

from session_core import ContextVarSession, InMemoryStorage, record_trace
from session_http import SessionWSGIMiddleware, inject, instrument_requests, uninstrument_requests

KEY = "a-secret-both-sides-know"  # in production: $SESSION_SIGNING_KEY on every service, from your secret store
storage = InMemoryStorage()

app = flask.Flask("scorer")


@app.post("/score")
def score() -> dict[str, object]:
    record_trace(name="score", output="0.9")
    return {"metadata": flask.request.environ["session.metadata"]}


app.wsgi_app = SessionWSGIMiddleware(app.wsgi_app, storage=storage, signing_key=KEY)  # type: ignore[method-assign]
server = make_server("127.0.0.1", 0, app, threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}/score"

instrument_requests(propagate_to=["127.0.0.1"], signing_key=KEY)
try:
    with ContextVarSession("rollout", storage=storage, user="u-7") as rollout:
        signed = requests.post(url).json()
        forged = inject(signing_key="a-guess")  # someone without the key
    refused = requests.post(url, headers=forged).json()  # outside any session: the forged header as given
finally:
    uninstrument_requests()
    server.shutdown()

print("signed:", signed, "forged:", refused)
assert signed == {"metadata": {"user": "u-7"}}
assert refused == {"metadata": {}}  # ran without a session (strict=True would answer 400)
assert [t.name for t in rollout.llm_calls] == ["score"]  # only the signed request was attributed

"""Issue 18: network round trips per request to PostgreSQL, counted on the wire.

A small TCP proxy sits between the app and the PostgreSQL server and counts the
client's bursts: every time the client sends after the server last spoke, that is
one more round trip (the client waited for an answer before going on). This is what
the latency of an answer is made of under load, whatever the driver does (implicit
BEGIN, pipelining, RETURNING), so the budget cannot be met by hiding statements.

Budgets: serving a trial (GET /api/session) is 1 round trip; recording an answer
(POST /api/session/answer) is 2 (lock and read; then every write and the COMMIT in
one pipeline); a duplicate resubmit is 2 at most (the read, then one more read of the
stored answer, ending the read-only transaction with it).
"""

from __future__ import annotations

import selectors
import socket
import threading
from urllib.parse import urlsplit

import pytest

from listening_test.db import db
from tests.listening_test.lt_helpers import PG_URL, make_app, participant_at, upgrade_with_demo

SERVE_ROUND_TRIPS = 1
ANSWER_ROUND_TRIPS = 2
DUPLICATE_ROUND_TRIPS = 2
COMPLETING_ROUND_TRIPS = 4  # the session's last answer also asks whether the study reached its target

pytestmark = pytest.mark.postgres


class RoundTripProxy:
    """Forward 127.0.0.1:<port> to the PostgreSQL server; count client bursts after server replies."""

    def __init__(self, host: str, port: int):
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.round_trips = 0
        self._last_from_server: dict[socket.socket, bool] = {}  # per client socket
        self._sel = selectors.DefaultSelector()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.round_trips = 0

    def _run(self) -> None:
        self._listener.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        while not self._stop:
            for key, _ in self._sel.select(timeout=0.1):
                if key.data is None:
                    client, _ = self._listener.accept()
                    server = socket.create_connection(self._target)
                    for s in (client, server):
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._last_from_server[client] = True
                    self._sel.register(client, selectors.EVENT_READ, (server, client, False))
                    self._sel.register(server, selectors.EVENT_READ, (client, client, True))
                    continue
                peer, client, from_server = key.data
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    for s in (key.fileobj, peer):
                        try:
                            self._sel.unregister(s)
                        except (KeyError, ValueError):
                            pass
                        s.close()
                    continue
                with self._lock:
                    if not from_server and self._last_from_server.get(client, True):
                        self.round_trips += 1
                    self._last_from_server[client] = from_server
                peer.sendall(data)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()
        self._sel.close()


@pytest.fixture
def proxied(pg_schema, manifest_path):
    url = urlsplit(PG_URL)
    proxy = RoundTripProxy(url.hostname or "127.0.0.1", url.port or 5432)
    proxied_url = PG_URL.replace(
        url.netloc, f"{url.username}@127.0.0.1:{proxy.port}" if url.username else f"127.0.0.1:{proxy.port}"
    )
    app = make_app(
        proxied_url,
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"options": f"-csearch_path={pg_schema}"}, "pool_size": 2},
    )
    upgrade_with_demo(app, manifest_path)
    yield app, proxy
    with app.app_context():
        db.engine.dispose()
    proxy.close()


def test_postgres_round_trips_per_request(proxied):
    app, proxy = proxied
    client = app.test_client()
    p = participant_at(app, "main", client)
    p.answer()  # warm the per-process caches (ladders, experiment settings)
    seen_answers = []
    for _ in range(300):  # adaptive and catch trials alike, to the session's end
        proxy.reset()
        assert client.get("/api/session").status_code == 200
        assert proxy.round_trips <= SERVE_ROUND_TRIPS, proxy.round_trips
        body = p.answer_body()  # the helper's oracle query, outside the count
        proxy.reset()
        r = p.post("/api/session/answer", body)
        assert r.status_code == 200, r.get_json()
        p.state = r.get_json()["state"]
        seen_answers.append((proxy.round_trips, p.state["stage"]))
        if len(seen_answers) == 3:  # a resubmit mid-session: the read, and the open trial with the COMMIT
            proxy.reset()
            again = p.post("/api/session/answer", body)
            assert again.status_code == 200 and again.get_json()["duplicate"] is True
            assert again.get_json()["state"] == p.state
            assert proxy.round_trips <= DUPLICATE_ROUND_TRIPS, proxy.round_trips
        if p.state["stage"] != "main":
            break
    assert all(n <= (ANSWER_ROUND_TRIPS if stage == "main" else COMPLETING_ROUND_TRIPS) for n, stage in seen_answers), (
        seen_answers
    )
    assert seen_answers[-1][1] == "complete", seen_answers[-3:]
    # A resubmit of the last answer: a read, never a write.
    proxy.reset()
    r = p.post("/api/session/answer", body)
    assert r.status_code == 200 and r.get_json()["duplicate"] is True
    assert proxy.round_trips <= DUPLICATE_ROUND_TRIPS, proxy.round_trips


def test_proxy_counts_each_wait_for_the_server(proxied):
    """The counter itself: three sequential statements are three round trips, a pipeline one."""
    app, proxy = proxied
    with app.app_context(), db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.autocommit = True
        proxy.reset()
        for _ in range(3):
            raw.execute("SELECT 1").fetchall()
        assert proxy.round_trips == 3
        proxy.reset()
        with raw.pipeline():
            cursors = [raw.execute("SELECT 1") for _ in range(3)]
        assert [c.fetchall() for c in cursors] == [[(1,)]] * 3
        assert proxy.round_trips == 1

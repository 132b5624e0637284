"""A relay in front of MariaDB that can cut a connection at its next COMMIT, the way a
network failure or a server failover does: after the server has committed and answered
(the client never learns that it committed), or before the COMMIT reaches the server. It
also records every query the clients send, one per trip to the server."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

from relay import CUT, CUT_AFTER_ANSWER, PASS, Relay

COM_QUERY = 3


class CommitCutter(Relay):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.cut = 0
        """Connections cut so far."""
        self.queries: list[str] = []
        """The text of every query sent through the relay, in order (statements sent in one
        query, separated by `;`, are one entry)."""
        self._armed: bool | None = None  # None: relay everything; else cut after the answer?
        self._then_down = False
        self._cuts_at: Callable[[str], bool] = _commits

    def cut_next_commit(self, *, answered: bool, then_down: bool = False) -> None:
        """Cut the connection that sends the next COMMIT: once the server has answered it
        (`answered`, so it committed), or before passing it on (so it did not). With
        `then_down`, go down at that moment (`go_down`)."""
        self.cut_next(_commits, answered=answered, then_down=then_down)

    def cut_next(
        self, query: Callable[[str], bool], *, answered: bool, then_down: bool = False
    ) -> None:
        """`cut_next_commit`, at the next query for which `query(text)` is true."""
        self._cuts_at, self._armed, self._then_down = query, answered, then_down

    def url(self, mysql_url: str) -> str:
        """`mysql_url` with its host and port replaced by the relay's."""
        parts = urlsplit(mysql_url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.listening}" if user else f"127.0.0.1:{self.listening}"
        return urlunsplit(parts._replace(netloc=netloc))

    def client_sent(self, data: bytes, unread: bytearray) -> str:
        unread += data
        queries = _take_queries(unread)
        self.queries += queries
        if self._armed is None or not any(self._cuts_at(query) for query in queries):
            return PASS
        answered, self._armed = self._armed, None
        self.cut += 1
        if answered:
            return CUT_AFTER_ANSWER
        self.answer_swallowed()  # nothing to wait for: go down now, if asked
        return CUT

    def answer_complete(self, data: bytes, unread: bytearray) -> bool:
        """Whether the server has answered every statement of the query (several statements
        in one query get an answer each, which may come in several reads): cutting after
        the first would let the server stop before its COMMIT."""
        unread += data
        return _answer_ends(unread)

    def answer_swallowed(self) -> None:
        if self._then_down:
            self._then_down = False
            self.go_down()


@contextlib.asynccontextmanager
async def commit_cutter(mysql_url: str) -> AsyncIterator[CommitCutter]:
    parts = urlsplit(mysql_url)
    async with CommitCutter(parts.hostname or "127.0.0.1", parts.port or 3306).running() as cutter:
        yield cutter


def _commits(query: str) -> bool:
    return query.endswith("COMMIT")


MORE_RESULTS = 0x0008  # the status flag of an OK or EOF packet: another answer follows


def _answer_ends(packets: bytearray) -> bool:
    """Whether `packets` hold the whole answer to a query: results until an OK or EOF
    without `MORE_RESULTS`, or an error (which ends a query of several statements). A
    result with rows is a column count, the columns, an EOF, the rows, and an EOF."""
    columns, rows = 0, False  # inside a result with rows: columns still to come; rows now
    offset = 0
    while offset + 4 <= len(packets):
        length = int.from_bytes(packets[offset : offset + 3], "little")
        payload = packets[offset + 4 : offset + 4 + length]
        if len(payload) < length:
            return False
        offset += 4 + length
        eof = payload[:1] == b"\xfe" and length < 9
        if payload[:1] == b"\xff":
            return True
        if columns:
            columns -= 1
        elif eof and not rows:
            rows = True  # the columns' EOF: rows follow
        elif eof:
            rows = False  # the rows' EOF
            if not int.from_bytes(payload[3:5], "little") & MORE_RESULTS:
                return True
        elif rows:
            pass
        elif payload[:1] == b"\x00":  # an OK
            if not _ok_status(payload) & MORE_RESULTS:
                return True
        else:
            columns = payload[0]  # a column count (fewer than 251 here)
    return False


def _ok_status(payload: bytes) -> int:
    """The status flags of an OK packet: after its header and two length-coded integers."""
    offset = 1
    for _ in range(2):
        first = payload[offset]
        offset += {0xFC: 3, 0xFD: 4, 0xFE: 9}.get(first, 1)
    return int.from_bytes(payload[offset : offset + 2], "little")


def _take_queries(packets: bytearray) -> list[str]:
    """Remove the whole MySQL packets at the start of `packets`; the text of the queries
    among them (a command is a packet numbered 0; a query's first byte is COM_QUERY)."""
    queries = []
    while len(packets) >= 4:
        length = int.from_bytes(packets[:3], "little")
        if len(packets) < 4 + length:
            break
        number, payload = packets[3], bytes(packets[4 : 4 + length])
        del packets[: 4 + length]
        if number == 0 and payload[:1] == bytes([COM_QUERY]):
            queries.append(payload[1:].decode("utf-8", "replace"))
    return queries

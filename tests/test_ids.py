"""`ids.unique_hex`: ids that stay unique across the workers `--workers N` forks."""

from __future__ import annotations

import multiprocessing
import re

from airbourne.ids import unique_hex


def _ids_in_child(queue: multiprocessing.Queue) -> None:
    queue.put([unique_hex() for _ in range(100)])


def test_forked_workers_make_ids_of_their_own() -> None:
    """`random` is seeded again in a forked child; were it not, each worker would repeat
    the parent's ids, and two outbox rows would share a message id."""
    unique_hex()  # the parent has drawn before forking, as a server has
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_ids_in_child, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    drawn = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join()
    drawn.append([unique_hex() for _ in range(100)])
    every = [one for ids in drawn for one in ids]
    assert len(set(every)) == len(every) == 300
    assert all(re.fullmatch(r"[0-9a-f]{32}", one) for one in every)

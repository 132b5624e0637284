"""Unique ids for messages, reservations, claims and files, made without a system call.

`uuid.uuid4()` reads 16 bytes from the kernel for every id (`os.urandom`), and a system
call on a virtual CPU is slow: with four ids per booking, `uuid4` was 3.7 % of the event
loop in the closed loop's profile. These ids must be unique, not secret (nothing is
guarded by one; tokens and password salts keep using `secrets`): 128 bits from `random`,
which is seeded from the kernel when it is imported and again in every forked worker.
"""

from __future__ import annotations

import random

_bits = random.getrandbits


def unique_hex() -> str:
    """32 hex digits, as `uuid.uuid4().hex` gives, unique without being unguessable."""
    return f"{_bits(128):032x}"

"""Subprocess entry point for the spool crash test: put reads as fast as possible until killed.

    python tests/edge/spool_writer.py SPOOL_PATH HUB_PUBLIC_KEY_B64 FIRST_INDEX [PAYLOAD_BYTES]

Puts reads `r000000`, `r000001`, ... starting at FIRST_INDEX and prints each id on stdout only after
put() has returned, so every printed id is a read the spool claimed to have committed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge.sealing import Sealer, decode_key  # noqa: E402
from edge.spool import Spool  # noqa: E402


def main(argv: list[str]) -> int:
    path, key_text, first = Path(argv[0]), argv[1], int(argv[2])
    payload_bytes = int(argv[3]) if len(argv) > 3 else 2000
    with Spool(path, Sealer(decode_key(key_text))) as spool:
        index = first
        while True:
            read_id = f"r{index:06d}"
            spool.put(read_id, os.urandom(payload_bytes))
            sys.stdout.write(read_id + "\n")
            sys.stdout.flush()
            index += 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""``python -m aemo_sandbox --config FILE [--host H] [--port P] [--replay-start DATE --replay-days N]``.

Serves the stand-in until SIGINT/SIGTERM. Its market clock is AEST now, or, with ``--replay-start``, the
replayed period: the time of day kept, day ``k`` mapped to ``replay_start + (k mod replay_days)`` (the local
stack's replay clock, reimplemented here so that the stand-in imports nothing of the platform).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType

from aemo_sandbox.server import MARKET_OFFSET, SandboxClock, SandboxConfig, SandboxServer


def replay_clock(replay_start: date, replay_days: int, now_utc: datetime | None = None) -> SandboxClock:
    """The clock that maps AEST now into the replay period (time of day kept)."""
    if replay_days <= 0:
        raise ValueError(f"--replay-days must be positive, got {replay_days}")
    moment = now_utc or datetime.now(UTC)
    now = (moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment) + MARKET_OFFSET
    day = replay_start + timedelta(days=(now.date() - replay_start).days % replay_days)
    return SandboxClock(datetime.combine(day, now.time()) - now)


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in; 2 for a configuration it cannot use."""
    parser = argparse.ArgumentParser(prog="python -m aemo_sandbox", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="JSON: participant, credentials, units")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--replay-start", type=date.fromisoformat, default=None)
    parser.add_argument("--replay-days", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = SandboxConfig.from_json(json.loads(args.config.read_text()))
        clock = replay_clock(args.replay_start, args.replay_days) if args.replay_start else SandboxClock()
        server = SandboxServer(config, clock, host=args.host, port=args.port)
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: aemo sandbox: {exc}", file=sys.stderr)
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger(__name__).info("AEMO bidding API stand-in on %s (participant %s, units %s)", server.url,
                                     config.participant_id, ", ".join(sorted(config.units)))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())

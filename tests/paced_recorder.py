"""A recording process for the lease and repair tests: it streams slowly and says where it is.

    python paced_recorder.py URL NAME WRITER FRAMES DELAY [REQUESTS]

Records REQUESTS (default 1) streamed responses of FRAMES SSE frames each
(cut from a real code interpreter stream, ending with its
``response.completed``) into a session NAME at URL, with the given writer
mode. The first response sends one frame every DELAY seconds and prints
``sent K`` as frame K goes to the SDK; the others stream at once. After each
response it prints ``done I N`` (N events the SDK read), and after closing
the session ``stats {json}`` (the session's counters). Lease timing comes from
the environment (``CODETAPE_LEASE_SECONDS``, ``CODETAPE_LEASE_RENEW_SECONDS``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_upstream import Upstream, load_tape, sse_response

from recorder.capture import CaptureSession
from recorder.client import record

CI_STREAM = "openai-dotnet/ResponsesToolTests/CodeInterpreterToolStreaming.jsonl"


def main() -> None:
    url, name, writer, frames_arg, delay_arg = sys.argv[1:6]
    requests = int(sys.argv[6]) if len(sys.argv) > 6 else 1
    frames, delay = int(frames_arg), float(delay_arg)
    chunks = load_tape(CI_STREAM)[0].chunks
    stream = chunks[: frames - 1] + chunks[-1:]

    def pace(exchange: int, k: int) -> None:
        if exchange == 0:
            time.sleep(delay)
            print("sent", k, flush=True)

    upstream = Upstream(
        [sse_response(stream) for _ in range(requests)], before_frame=pace, any_path=True
    )
    session = CaptureSession(url, name, writer=writer)  # type: ignore[arg-type]
    with record(
        url,
        session,
        transport=upstream.transport(),
        api_key="k",
        base_url="https://api.openai.com/v1",
    ) as client:
        for i in range(requests):
            n = sum(1 for _ in client.responses.create(model="m", input="x", stream=True))
            print("done", i, n, flush=True)
    session.close()
    print("stats", json.dumps(dataclasses.asdict(session.stats)), flush=True)


if __name__ == "__main__":
    main()

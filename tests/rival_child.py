"""One of two mlx-kv instances working on the same saved conversation (tests/test_two_instances.py).

    python tests/rival_child.py MODEL_DIR ROOT SECONDS TAG

For SECONDS it resumes session "chat" from the store at ROOT, adds one user
turn, and saves it back as the revision it resumed (as the app's engine
worker does). Losing a race is expected: the store refuses the save with a
one-line SaveConflict (or, resuming, reads the newer save). Prints one JSON
line: saves, conflicts, resumes, and every other one-line error by its
text; anything that is not a UserError is a crash (a traceback, exit 1).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.store import SaveConflict, SessionStore  # noqa: E402
from mlx_kv.engine import Session  # noqa: E402
from mlx_kv.errors import UserError  # noqa: E402
from mlx_kv.models import load_model  # noqa: E402


def main(model_dir: str, root: str, seconds: float, tag: str) -> None:
    model, tokenizer, _ = load_model(model_dir)
    store = SessionStore(root)
    tally: Counter = Counter()
    errors: Counter = Counter()
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        try:
            saved, session = store.restore("chat", lambda p: Session.restore(p, model=model, tokenizer=tokenizer))
            tally["resumes"] += 1
            if session.transcript != saved.transcript:
                tally["row_and_snapshot_disagree"] += 1
            list(session.chat(f"w{i % 90} {tag}", max_tokens=1))
            store.save("chat", session.transcript, {"budget": 512}, model="tiny", snapshot=session.save,
                       expected_revision=saved.revision)
            tally["saves"] += 1
        except SaveConflict as exc:
            tally["conflicts"] += 1
            errors[str(exc).split(" (revision")[0]] += 1
        except UserError as exc:
            errors[str(exc)[:120]] += 1
    print(json.dumps({"tag": tag, **tally, "errors": dict(errors)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])

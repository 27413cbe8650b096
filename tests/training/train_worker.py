"""``histoxai train`` (the real CLI) in one process of a torchrun job, recording each fit.

After every fit this rank appends the SHA-256 of its model's state (parameters and
buffers), its best epoch and its history to ``OUT.rank<RANK>`` (one JSON line per seed).

Run::

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/training/train_worker.py OUT train ...
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

from histoxai import cli
from histoxai.training import session


def main(out: str, argv: list[str]) -> int:
    fit = session.fit

    def fit_and_record(model, *args, **kwargs):
        result = fit(model, *args, **kwargs)
        state = b"".join(v.detach().cpu().contiguous().numpy().tobytes() for v in model.state_dict().values())
        record = {
            "state_sha256": hashlib.sha256(state).hexdigest(),
            "best_epoch": result.best_epoch,
            "history": result.history,
        }
        with open(f"{out}.rank{os.environ.get('RANK', '0')}", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        return result

    session.fit = fit_and_record  # the real fit runs; this only writes down what it left
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))

"""Run by test_distributed.py under torchrun: trains a stage with DDP and reports what each rank saw."""

import hashlib
import json
import sys
from pathlib import Path

from pointalign.training.config import load_train_config
from pointalign.training.distributed import cleanup, init_distributed
from pointalign.training.loop import fit, setup, train_step


def main() -> None:
    config, out, report = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    cfg = load_train_config(config, sys.argv[4:])
    dist = init_distributed()
    run = setup(cfg, out, dist)
    seen: list[str] = []
    original = run.data.next_batch

    def recording_next_batch():
        name, records = original()
        seen.extend(r.object_id for r in records)
        return name, records

    run.data.next_batch = recording_next_batch
    fit(run, train_step)
    h = hashlib.sha256()
    for name, p in sorted(run.model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().numpy().tobytes())
    (report / f"rank{dist.rank}.json").write_text(json.dumps({"hash": h.hexdigest(), "seen": seen}))
    cleanup(dist)


if __name__ == "__main__":
    main()

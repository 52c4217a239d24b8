"""UDC under DDP: 2 gloo ranks split the Monte-Carlo samples, end with identical weights and logits,
and only rank 0 writes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, log: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import onnxnas.fileio as fileio
    import onnxnas.search.checkpoint as checkpoint
    import onnxnas.search.methods.udc as udc
    from onnxnas.cli import main

    written: list[str] = []
    real_write, real_finish = fileio.atomic_write_bytes, udc.finish
    samples: list[int] = []

    def spy(path, data):
        written.append(str(path))
        return real_write(path, data)

    def finish(trainer, *args):
        torch.save({k: v.clone() for k, v in trainer.net.state_dict().items()}, f"{log}/rank{rank}.pt")
        samples.append(trainer.local_samples)
        return real_finish(trainer, *args)

    fileio.atomic_write_bytes = checkpoint.atomic_write_bytes = spy
    udc.finish = finish
    code = main(["search", "--method", "udc", "--space", "tiny-udc", "--data", "digits", "--target-size", "12KiB",
                 "--out", out, "--epochs", "2", "--warmup-epochs", "1", "--max-batches", "4", "--batch-size", "8",
                 "--mc-samples", "4", "--device", "cpu"])
    Path(f"{log}/rank{rank}.json").write_text(json.dumps({"code": code, "written": written, "samples": samples}))


@pytest.mark.slow
def test_two_gloo_ranks_split_the_samples_and_agree(tmp_path: Path) -> None:
    out, log = tmp_path / "run", tmp_path / "log"
    log.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(out), str(log)), nprocs=2, join=True)
    reports = [json.loads((log / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["code"] for r in reports] == [0, 0]
    assert [r["samples"] for r in reports] == [[2], [2]]  # 4 MC samples, 2 per rank
    assert reports[1]["written"] == []
    assert {"arch.json", "weights.pt", "metrics.jsonl", "last.pt"} <= {Path(p).name for p in reports[0]["written"]}
    states = [torch.load(log / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in states[0].items():
        assert torch.equal(value, states[1][key]), key
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["steps"] for m in lines] == [2, 2]  # 4 batches per rank x 2 ranks / 4 samples
    assert json.loads((out / "arch.json").read_text())["provenance"]["world_size"] == 2

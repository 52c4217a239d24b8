"""Data-parallel search: 2 CPU processes with gloo end with identical architecture weights,
and only rank 0 writes files."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from onnxnas.space import load_space
from search_fixtures import write_synthetic_table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, lut: str, out: str, log: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import onnxnas.fileio as fileio
    import onnxnas.search.checkpoint as checkpoint
    import onnxnas.search.runner as runner
    from onnxnas.cli import main

    written: list[str] = []
    real_write, real_finish = fileio.atomic_write_bytes, runner._finish

    def spy(path, data):
        written.append(str(path))
        return real_write(path, data)

    def finish(job, trainer, folder):
        torch.save({"arch": [p.detach().clone() for p in trainer.net.arch_parameters()],
                    "state": {k: v.clone() for k, v in trainer.net.state_dict().items()},
                    "structure": trainer.net.structure()}, f"{log}/rank{rank}.pt")
        return real_finish(job, trainer, folder)

    fileio.atomic_write_bytes = checkpoint.atomic_write_bytes = spy
    runner._finish = finish
    code = main(["search", "--lut", lut, "--out", out, "--space", "tiny", "--data", "synthetic", "--epochs", "3",
                 "--warmup-epochs", "1", "--max-batches", "3", "--batch-size", "16", "--device", "cpu"])
    Path(f"{log}/rank{rank}.json").write_text(json.dumps({"code": code, "written": written}))


def test_two_gloo_ranks_agree_and_only_rank_0_writes(tmp_path: Path) -> None:
    lut = write_synthetic_table(load_space("tiny"), tmp_path / "lut.json")
    out, log = tmp_path / "run", tmp_path / "log"
    log.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(lut), str(out), str(log)), nprocs=2, join=True)

    reports = [json.loads((log / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["code"] for r in reports] == [0, 0]
    assert reports[1]["written"] == []
    names = {Path(p).name for p in reports[0]["written"]}
    assert {"arch.json", "weights.pt", "metrics.jsonl", "warmup.pt", "last.pt"} <= names

    ranks = [torch.load(log / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["structure"] == ranks[1]["structure"]
    for a, b in zip(ranks[0]["arch"], ranks[1]["arch"], strict=True):
        assert torch.equal(a, b)
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    assert json.loads((out / "arch.json").read_text())["provenance"]["world_size"] == 2

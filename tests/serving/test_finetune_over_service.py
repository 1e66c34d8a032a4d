"""Two `torchrun` processes (gloo, CPU) fine-tune RAG-Token for a few steps, sharing one Ray index
service; their loss curve equals the same run retrieving in-process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rag_core.build_shards import split_index
from rag_core.serving import RayIndexService
from tests.finetune import support

ray = pytest.importorskip("ray")
pytest.importorskip("torch")


def _torchrun(checkpoint, data_dir, run_dir, *extra) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "rag_pt.finetune", "--model_name_or_path", str(checkpoint), "--data_dir", str(data_dir),
               "--output_dir", str(run_dir), "--train_batch_size", "2", "--logging_steps", "1", "--no_progress",
               "--max_steps", "3", "--eval_steps", "3", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _losses(process: subprocess.Popen, run_dir) -> list[float]:
    _, stderr = process.communicate(timeout=400)
    assert process.returncode == 0, stderr[-3000:]
    return [loss for _, loss in support.train_losses(run_dir)]


@pytest.mark.pt
def test_two_torchrun_processes_share_one_service(ray_cluster, tmp_path):
    index_dir = support.build_tiny_index(tmp_path / "kb")
    sharded = split_index(index_dir, str(tmp_path / "kb_shards"), 2, progress=False)
    data_dir = support.write_toy_data(tmp_path / "data")
    checkpoint = support.pt_checkpoint(tmp_path / "rag", index_dir)
    service = RayIndexService.start(sharded, name="finetune-shared", num_cpus=0.5)
    try:  # the two runs side by side: each is mostly start-up
        local_run = _torchrun(checkpoint, data_dir, tmp_path / "run-local")
        served_run = _torchrun(checkpoint, data_dir, tmp_path / "run-served",
                               "--ray_index", "finetune-shared", "--ray_address", ray_cluster)
        in_process, served = _losses(local_run, tmp_path / "run-local"), _losses(served_run, tmp_path / "run-served")
        calls = sum(row["calls"] for row in service.status())
    finally:
        service.shutdown()
    assert len(served) == 3 and served == pytest.approx(in_process, rel=1e-6)
    # both processes retrieved from the service: 3 steps x 2 processes x 2 shards, plus validation
    assert calls >= 12, calls

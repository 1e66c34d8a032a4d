"""One-off GPU diagnosis, not part of `make bench`: `python3 -m benchmarks.diag_cuda_bf16` on a CUDA machine
(with run_cuda.sh's wheels and environment). Ours' RAG-Token train step under bf16 autocast measured
0.18x in the first RESULTS_cuda.md, with erratic per-call times (35 ms to 2 s). This splits forward
and backward, retriever and precomputed context, cuDNN attention on and off; its output on an H200
is benchmarks/diagnostics/cuda_bf16_cudnn_sdp.log."""
import json
import os
import time

os.environ.setdefault("USE_TF", "0")
import torch  # noqa: E402

from benchmarks import bench_pt, common  # noqa: E402


def main():
    device = "cuda"
    cfg = bench_pt._config(256, 2, bench_pt._index(20_000, 256))
    pairs = bench_pt._models(cfg, device, torch.float32)
    questions, labels = bench_pt._inputs(device)
    ours = pairs["RagTokenForGeneration"][0]
    with torch.no_grad():
        pre = ours(**questions, labels=labels, output_retrieved=True)
    ctx = {"context_input_ids": pre.context_input_ids, "context_attention_mask": pre.context_attention_mask,
           "doc_scores": pre.doc_scores.detach().requires_grad_(False)}

    def timed(model, inputs, n=8):
        fw, bw = [], []
        for _ in range(n):
            model.train(); model.zero_grad(set_to_none=True)
            torch.cuda.synchronize(); t0 = time.perf_counter()
            out = model(**inputs, labels=labels, reduce_loss=True)
            torch.cuda.synchronize(); t1 = time.perf_counter()
            out.loss.backward()
            torch.cuda.synchronize(); t2 = time.perf_counter()
            fw.append(round(1000 * (t1 - t0), 1)); bw.append(round(1000 * (t2 - t1), 1))
        return {"fwd": fw, "bwd": bw}

    for cudnn_sdp in (True, False):
        torch.backends.cuda.enable_cudnn_sdp(cudnn_sdp)
        for precision in ("bfloat16", "float32"):
            with common.autocast(device, precision):
                for label, inputs in (("retriever", questions), ("context", ctx)):
                    for head in ("RagTokenForGeneration", "RagSequenceForGeneration"):
                        m = pairs[head][0]
                        print(f"cudnn_sdp={cudnn_sdp} {precision} {head} {label}", json.dumps(timed(m, inputs)), flush=True)


if __name__ == "__main__":
    main()

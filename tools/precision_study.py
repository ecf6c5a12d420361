"""Which precision settings keep the fast engine within the agreement targets? Embeds the kept frames
of the first --n-reads reads with an fp32 reference (packed ESM-2 with exact padded attention, shown
equal to fair-esm in the tests; DNABERT-S in fp32) and with each reduced-precision variant (ESM-2 in
bf16 and fp16, with --halfres also with the residual stream in that dtype; DNABERT-S in bf16 and fp16,
padded and as the fast engine runs it on a GPU: "-fast", dense layers on the real tokens, attention
without cuDNN), then prints, per combination: min/mean per-sequence embedding cosine against fp32,
and, through the set's classifier, per-frame label agreement and mean/max |score2 difference|
against the fp32 result. Speed: tools/esm_microbench.py.

Re-checks docs/benchmarks.md#h200-precision (the embeddings as the fast engine computes them on a GPU
by default: Triton kernels, GELU in the fc1 epilogue):

    python -m virnucpro reads synth --n 3000 --seed 21 --length-profile respiratory -o /tmp/p3k.fa
    python tools/precision_study.py --models /tmp/models --reads /tmp/p3k.fa --kernels triton --gelu-epilogue
"""

import argparse

DTYPES = ("fp32", "bf16", "fp16")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="a models folder (ESM-2, DNABERT-S, the 300-nt classifier)")
    ap.add_argument("--reads", required=True, help="FASTA of reads; their 300-nt chunks' kept frames are embedded")
    ap.add_argument("--n-reads", type=int, default=3000, help="use the first N reads (default 3,000)")
    ap.add_argument("--kernels", default="eager", choices=["eager", "triton"],
                    help="element-wise kernels of the bf16/fp16 ESM-2 embeddings (the engine's on a GPU: triton)")
    ap.add_argument("--gelu-epilogue", action="store_true",
                    help="bf16/fp16 ESM-2: fc1 + tanh GELU in the GEMM's epilogue (the engine's default there)")
    ap.add_argument("--halfres", action="store_true",
                    help="also ESM-2 with its residual stream in the matmul dtype (a concluded experiment: "
                         "docs/benchmarks.md#exp-esm-residual-half)")
    return ap.parse_args(argv)


def esm_embed(model, alphabet, prots, budget=32768):
    """Mean ESM-2 embeddings [proteins, C] of ``prots``, packed into batches of ``budget`` tokens
    (call under torch.inference_mode)."""
    import numpy as np
    import torch

    from virnucpro.models.esm2_fast import PackedESM2, tokenize
    from virnucpro.plan.packing import pack_ffd

    lens = np.array([len(p) + 2 for p in prots])
    out = torch.empty(len(prots), model.embed_dim, device="cuda")
    for b in pack_ffd(lens, budget):
        tok, cu, pos, mx = tokenize(alphabet, [prots[i] for i in b])
        cu_t = torch.from_numpy(cu).cuda()
        h = model(torch.from_numpy(tok).long().cuda(), cu_t, torch.from_numpy(pos).long().cuda(), mx)
        out[torch.from_numpy(b).cuda()] = PackedESM2.mean_residues(h, cu_t)
    return out


def dna_embed(model, tok, seqs, budget=65536, fast=False):
    """Mean DNABERT-S embeddings [sequences, C]; ``fast``: as the fast engine computes them on a GPU
    (widths a multiple of 8, dense layers on the real tokens only, attention without cuDNN's backend)."""
    import numpy as np
    import torch

    from virnucpro.models import dnabert
    from virnucpro.plan.packing import padded_batches

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
    """(min, mean) per-row cosine of two embedding matrices, in float64."""
    import torch

    c = torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)
    return float(c.min()), float(c.mean())


def main(argv=None):
    a = parse_args(argv)
    import numpy as np
    import torch

    from virnucpro.io.fasta import read_fasta
    from virnucpro.models import dnabert, layout
    from virnucpro.models.classifier import load_classifier
    from virnucpro.models.esm2_fast import PackedESM2
    from virnucpro.prep.frames import chunk_and_translate

    DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    ms = layout.resolve(a.models, 300, fingerprint=False)
    recs = read_fasta(a.reads)[:a.n_reads]
    _, frames = chunk_and_translate(recs, 300, "original")
    nuc, prot = [f[2] for f in frames], [f[3] for f in frames]
    clf, _ = load_classifier(ms.classifier, 300)
    clf = clf.cuda().eval()
    print(f"{len(frames)} frames from {len(recs)} reads")

    with torch.inference_mode():
        esm = {}
        m32, alpha = PackedESM2.from_checkpoint(ms.esm, "cuda", torch.float32)
        m32.force_padded_attention = True
        esm["fp32"] = esm_embed(m32, alpha, prot)
        del m32
        print(f"bf16/fp16 embeddings: {a.kernels} kernels, GELU {'tanh epilogue' if a.gelu_epilogue else 'exact'}")
        for name in ("bf16", "fp16"):
            m, _ = PackedESM2.from_checkpoint(ms.esm, "cuda", DT[name])
            m.set_kernels(a.kernels, "tanh-epilogue" if a.gelu_epilogue else "exact")   # this instance's own
            esm[name] = esm_embed(m, alpha, prot)
            if a.halfres:
                m.residual_dtype = DT[name]
                esm[name + "-halfres"] = esm_embed(m, alpha, prot)
            del m
        dna = {}
        for name in DTYPES:
            m, tk, _ = dnabert.load_dnabert(ms.dnabert, "cuda", DT[name], use_sdpa=True)
            dna[name] = dna_embed(m, tk, nuc)
            if name != "fp32":
                dna[name + "-fast"] = dna_embed(m, tk, nuc, fast=True)   # the fast engine's path
            del m

        def scores(e, d):
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


if __name__ == "__main__":
    main()

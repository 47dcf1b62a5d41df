"""Accuracy, round 2 (issue 19): which value rules and shapes reach the peers?

For one task (``--dataset``: ``mnist`` or ``fashion-mnist`` through
EfficientNet-Lite0, 4000 train / 2000 test, or ``digits`` raw pixels) and one
key protocol (``--keys own``: keys fitted on the task's training inputs;
``--keys other``: on the other embedded dataset's training inputs -- MNIST keys
from Fashion-MNIST and vice versa -- and, for digits, on a random half of the
training inputs while values and peers learn from the other half), it scores:

* ``count``: the library's counting values (``decode_counts``), smoothing a;
* ``residual``: counts plus per key and class the sum of the residuals
  ``head - key``; each codebook adds ``-g ||r - m_y||^2 / (2 s^2)`` with
  ``m_y = S_y / (n_y + lam)`` and ``s^2`` the within-cell variance pooled per
  codebook (``pooled``), over all codebooks (``global``), or per cell shrunk
  towards the codebook's with ``nu`` pseudo-degrees of freedom (``cell``);
* ``residual-mix``: the same per-codebook scores combined as a mixture of
  per-codebook posteriors instead of a sum of log scores (``count-mix``: the
  counts alone combined so);
* ``backoff``: a fine key's counts smoothed towards its coarse parent's class
  frequencies (``log((n_y + beta p_y) / (n + beta))``, the parent the nearest
  of ``Kc`` coarse keys fitted on the same heads of the key data) instead of
  towards uniform;
* ``refine``: counting, then a few SGD epochs on an additive correction of the
  fetched values (values = log-count values + delta), per phase, i.i.d. and
  class-incremental;
* ``warmup``: keys from the other dataset, with keys the key data used least
  replaced by heads of the task's first batch (far heads only, or all of
  them) before any value is written; first batch = the first class-incremental
  phase or a random batch of the same size;
* ``shapes``: counting values on other codebook shapes;
* ``cov`` (round 3): the residual rule with each codebook's residuals
  measured in the metric of its pooled within-(key, class) covariance
  (ridge ``--cov-shrinks``) instead of an isotropic variance;
* ``lda`` (round 3): streaming LDA's pooled within-class covariance of the
  concatenated heads: alone with one key per codebook (head LDA), added to
  the counting logits (``lda-hybrid``), or as the metric of the per-(key,
  class) residual means (``lda-residual``);
* ``--prep`` (round 3): a linear map fitted on the key data alone before
  anything else (``whiten:s``, ``pcaw:m:s``, ``pca:m``; see :func:`prepare`),
  and ``--projection orthogonal``: orthogonal random features instead of
  independent Gaussian columns;
* the peers (streaming LDA, nearest class mean, RanPAC-style ridge).

Counting-type rules are sums over samples; ``--check-order`` rebuilds their
tables in class-incremental order and reports the largest logit difference
and the share of equal predictions against the i.i.d. order.

    python benchmarks/explorations/explore_round2.py --dataset mnist --keys other --seed 0 \
        --experiments residual,backoff,refine,warmup,peers

Prints one JSON line per result and appends them to ``--out``.
"""

import json
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import torch

from skkvb import KeyCodebook
from skkvb.bench._peers import NearestClassMean, RandomReLURidgeClassifier, StreamingLDA
from skkvb.engine.codes import flat_codes, nearest_keys
from skkvb.engine.heads import project
from skkvb.engine.values import (
    add_counts,
    count_values,
    decode_counts,
    mean_over_codebooks,
)
from skkvb.streams import ClassIncrementalSplit

# benchmarks/_common.py is one folder up: put that folder on the import path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import comma_list, load_embeddings, make_parser

OTHER = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}
KEY_CACHE = joblib.Memory("/tmp/skkvb-explore-round2", verbose=0)
SMOOTHING = 0.1  # the library's default count_smoothing


def parse_shape(text):
    """``CxKxd``; K may be ``auto`` (the library's default: min(4096, n_samples))."""
    c, k, d = text.split("x")
    return int(c), (k if k == "auto" else int(k)), int(d)


def shape_name(shape):
    return "x".join(str(v) for v in shape)


def load_task(dataset):
    if dataset == "digits":
        return load_embeddings("digits", "raw")
    return load_embeddings(dataset, "efficientnet-lite0", max_train=4000, max_test=2000)


def task_data(dataset, keys, seed):
    """(Z_key, key name, Z_train, y_train, Z_test, y_test)."""
    Z_train, y_train, Z_test, y_test = load_task(dataset)
    if keys == "own":
        return Z_train, dataset, Z_train, y_train, Z_test, y_test  # key cache: by name
    if dataset == "digits":  # keys on one random half, values and peers on the other
        order = np.random.RandomState(seed).permutation(len(y_train))
        key_half, value_half = order[: len(order) // 2], order[len(order) // 2 :]
        return (Z_train[key_half], "digits-half", Z_train[value_half], y_train[value_half],
                Z_test, y_test)
    return load_task(OTHER[dataset])[0], OTHER[dataset], Z_train, y_train, Z_test, y_test


@KEY_CACHE.cache(ignore=["Z_key"])
def fit_keys(Z_key, key_name, n_key_rows, shape, seed, epochs, projection="gaussian"):
    """A fitted KeyCodebook (cached on disk by key data name, shape, seed, epochs,
    projection)."""
    c, k, d = shape
    return KeyCodebook(n_codebooks=c, n_keys=k, key_dim=d, projection=projection,
                       max_iter=epochs, random_state=seed).fit(Z_key)


def prepare(kind, Z_key, Z_train, Z_test):
    """The three sets under a linear map fitted on the key data alone (no labels).

    ``none``: as they are. ``whiten:s``: principal components of the key data,
    each divided by ``sqrt(lambda_i + s * mean(lambda))`` -- whitening whose
    gain on the weakest directions is bounded by the shrinkage ``s`` (large
    ``s``: a rotation, as ``none`` up to scale). ``pcaw:m:s``: the same on the
    ``m`` leading components only. ``pca:m``: the ``m`` leading components,
    not rescaled. The map is fitted on the key data only, like the keys, so
    it depends on no label and no task sample under ``--keys other``.
    """
    if kind == "none":
        return Z_key, Z_train, Z_test
    name, *params = kind.split(":")
    mean = Z_key.mean(0, dtype=np.float64)
    cov = np.cov(Z_key - mean, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = np.clip(eigenvalues[order], 0, None), eigenvectors[:, order]
    if name == "whiten":
        m, shrink = len(eigenvalues), float(params[0])
    elif name == "pcaw":
        m, shrink = int(params[0]), float(params[1])
    elif name == "pca":
        m, shrink = int(params[0]), None
    else:
        raise ValueError(f"unknown --prep {kind!r}")
    gain = (np.ones(m) if shrink is None
            else 1.0 / np.sqrt(eigenvalues[:m] + shrink * eigenvalues.mean()))
    # Divide by the gain's mean so that the scale of the inputs stays that of
    # unit-variance directions (key fitting and the peers see comparable norms).
    W = eigenvectors[:, :m] * (gain / gain.mean() if shrink is not None else gain)
    return tuple(((Z - mean) @ W).astype(np.float32) for Z in (Z_key, Z_train, Z_test))


def heads_of(codebook, Z, block=1000):
    projection = torch.as_tensor(codebook.projection_)
    c = codebook.n_codebooks_
    return torch.cat([project(torch.as_tensor(Z[i : i + block]), projection, c)
                      for i in range(0, len(Z), block)])


def codes_of(heads, keys):
    return nearest_keys(heads, keys)


def count_table(rows, y, n_rows, n_classes, order=None):
    table = torch.zeros(n_rows, n_classes, dtype=torch.float64)
    labels = torch.as_tensor(y, dtype=torch.int64)
    if order is None:
        add_counts(table, rows, labels)
    else:
        for part in order:  # phase by phase, as a stream would
            add_counts(table, rows[part], labels[part])
    return table


def accuracy(logits, y):
    return float((logits.argmax(1).numpy() == np.asarray(y)).mean())


# --------------------------------------------------------------- residual statistics


def residual_terms(keys, heads_tr, codes_tr, y, heads_te, codes_te, n_classes, lams, nus,
                   order=None, chunk=8):
    """Per variant, the mean over codebooks of ||r - m_y||^2 / (2 s^2), (N_test, L).

    Keys are ``(variance kind, lam, nu)``; the score adds ``-g`` times it.
    ``order`` (a list of index arrays) accumulates the sums phase by phase.
    """
    n_codebooks, n_keys, d = keys.shape
    L = n_classes
    labels = torch.as_tensor(y, dtype=torch.int64)
    parts = [torch.arange(len(y))] if order is None else [torch.as_tensor(p) for p in order]
    dist = {lam: [] for lam in lams}  # per chunk: (N_test, cc, L)
    s2_pooled, ssw_all, dof_all, s2_cells = [], 0.0, 0.0, {nu: [] for nu in nus}
    for c0 in range(0, n_codebooks, chunk):
        c1 = min(n_codebooks, c0 + chunk)
        cc = c1 - c0
        local = torch.arange(cc)
        kc = keys[c0:c1].double()
        S = torch.zeros(cc * n_keys * L, d, dtype=torch.float64)
        n = torch.zeros(cc * n_keys * L, dtype=torch.float64)
        Q = torch.zeros(cc * n_keys, dtype=torch.float64)
        for part in parts:
            codes = codes_tr[part, c0:c1]
            r = heads_tr[part, c0:c1].double() - kc[local, codes]  # (n, cc, d)
            cell = local * n_keys + codes  # (n, cc)
            idx = (cell * L + labels[part].view(-1, 1)).reshape(-1)
            S.index_add_(0, idx, r.reshape(-1, d))
            n.index_add_(0, idx, torch.ones(idx.numel(), dtype=torch.float64))
            Q.index_add_(0, cell.reshape(-1), r.pow(2).sum(-1).reshape(-1))
        between = (S.pow(2).sum(1) / n.clamp_min(1)).view(cc, n_keys, L).sum(-1)
        ssw = (Q.view(cc, n_keys) - between).clamp_min(0)  # within-class SS per cell
        n_cell = n.view(cc, n_keys, L).sum(-1)
        dof = (n_cell - (n.view(cc, n_keys, L) > 0).sum(-1)).clamp_min(0)
        pooled = ssw.sum(1) / (d * dof.sum(1)).clamp_min(1)  # (cc,)
        s2_pooled.append(pooled)
        ssw_all, dof_all = ssw_all + float(ssw.sum()), dof_all + float(dof.sum())
        codes = codes_te[:, c0:c1]
        rt = heads_te[:, c0:c1].double() - kc[local, codes]  # (Nt, cc, d)
        cell = (local * n_keys + codes)  # (Nt, cc)
        rows = (cell.unsqueeze(-1) * L + torch.arange(L)).reshape(-1)
        S_t = S.index_select(0, rows).view(len(rt), cc, L, d)
        n_t = n.index_select(0, rows).view(len(rt), cc, L, 1)
        for lam in lams:
            dist[lam].append((rt.unsqueeze(2) - S_t / (n_t + lam)).pow(2).sum(-1))
        for nu in nus:  # per-cell variance with nu pseudo-dof at the pooled value
            ssw_t = ssw.reshape(-1)[cell]
            dof_t = dof.reshape(-1)[cell]
            s2 = (ssw_t + nu * d * pooled.view(1, -1)) / (d * (dof_t + nu))
            s2_cells[nu].append(s2)
    s2_global = ssw_all / max(1.0, d * dof_all)
    out = {}
    for lam in lams:
        D = torch.cat(dist[lam], 1)  # (Nt, C, L)
        out[("pooled", lam, 0)] = D / (2 * torch.cat(s2_pooled).view(1, -1, 1))
        out[("global", lam, 0)] = D / (2 * s2_global)
        for nu in nus:
            out[("cell", lam, nu)] = D / (2 * torch.cat(s2_cells[nu], 1).unsqueeze(-1))
    return out  # per codebook (N_test, C, L)


def residual_whitening(keys, heads, codes, y, n_classes, shrink, chunk=8):
    """Per codebook, ``A_c = (W_c / dof + shrink * tr / d I)^(-1/2)``, (C, d, d).

    ``W_c`` is the pooled within-(key, class) scatter of the residuals
    ``head - key`` of the training samples: ``sum r r^T - sum_(k,y) S S^T / n``
    -- additive sums, so order-independent, but every sample touches its
    codebooks' ``sum r r^T`` (one d x d matrix per codebook).
    """
    n_codebooks, n_keys, d = keys.shape
    L = n_classes
    labels = torch.as_tensor(y, dtype=torch.int64)
    out = []
    for c0 in range(0, n_codebooks, chunk):
        c1 = min(n_codebooks, c0 + chunk)
        cc = c1 - c0
        local = torch.arange(cc)
        r = heads[:, c0:c1].double() - keys[c0:c1].double()[local, codes[:, c0:c1]]
        idx = (local * n_keys + codes[:, c0:c1]) * L + labels.view(-1, 1)  # (N, cc)
        S = torch.zeros(cc * n_keys * L, d, dtype=torch.float64)
        n = torch.zeros(cc * n_keys * L, dtype=torch.float64)
        S.index_add_(0, idx.reshape(-1), r.reshape(-1, d))
        n.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), dtype=torch.float64))
        scaled = (S / n.clamp_min(1).sqrt().unsqueeze(1)).view(cc, n_keys * L, d)
        W = torch.einsum("ncd,nce->cde", r, r) - torch.einsum("cjd,cje->cde", scaled, scaled)
        dof = (len(y) - (n.view(cc, -1) > 0).sum(1)).clamp_min(1).double()
        W = W / dof.view(-1, 1, 1)
        ridge = shrink * torch.diagonal(W, dim1=1, dim2=2).mean(1)
        W = W + ridge.view(-1, 1, 1) * torch.eye(d, dtype=torch.float64)
        values, vectors = torch.linalg.eigh(W)
        out.append(vectors @ torch.diag_embed(values.clamp_min(1e-12).rsqrt())
                   @ vectors.transpose(1, 2))
    return torch.cat(out)


def lda_residual_terms(keys, heads_tr, codes_tr, y, heads_te, codes_te, n_classes, shrinks,
                       lam=1.0, block=250):
    """Per shrinkage, ``q / (2 C)`` with ``q = (r - m_y)^T P (r - m_y)`` over ALL
    codebooks at once, (N_test, L).

    ``r`` is the concatenation of a sample's residuals ``head - key`` (C * d_k),
    ``m_y`` the concatenation of the class's residual means in the keys the
    sample fetched (shrunk towards the key by ``lam``), and ``P`` the inverse of
    the pooled within-class covariance of the concatenated heads (plus
    ``shrink * mean variance`` on the diagonal): streaming LDA's statistic in
    head space. With one key per codebook it is streaming LDA on the heads.
    Every statistic is a sum over samples (order-independent); the covariance
    is one ``C d_k x C d_k`` matrix that every sample updates.
    """
    n_codebooks, n_keys, d = keys.shape
    L = n_classes
    labels = torch.as_tensor(y, dtype=torch.int64)
    D = n_codebooks * d
    flat = heads_tr.reshape(len(y), D).double()
    class_sums = torch.zeros(L, D, dtype=torch.float64).index_add_(0, labels, flat)
    class_n = torch.bincount(labels, minlength=L).double().clamp_min(1)
    W = flat.T @ flat - (class_sums / class_n.view(-1, 1)).T @ class_sums
    W /= max(1, len(y) - L)
    local = torch.arange(n_codebooks)
    kd = keys.double()
    r_tr = heads_tr.double() - kd[local, codes_tr]
    idx = ((local * n_keys + codes_tr) * L + labels.view(-1, 1)).reshape(-1)
    S = torch.zeros(n_codebooks * n_keys * L, d, dtype=torch.float64)
    n = torch.zeros(n_codebooks * n_keys * L, dtype=torch.float64)
    S.index_add_(0, idx, r_tr.reshape(-1, d))
    n.index_add_(0, idx, torch.ones(idx.numel(), dtype=torch.float64))
    values, vectors = torch.linalg.eigh(W)
    class_means = class_sums / class_n.view(-1, 1)
    out = {}
    for shrink in shrinks:
        A = vectors * (values.clamp_min(0) + shrink * values.clamp_min(0).mean()).rsqrt()
        # The class-level term alone (streaming LDA on the heads), for the hybrid.
        z = heads_te.reshape(len(heads_te), 1, D).double() - class_means.unsqueeze(0)
        z = (z.reshape(-1, D) @ A).pow(2).sum(1).view(len(heads_te), L)
        out["class", shrink] = z / (2 * n_codebooks)
        parts = []
        for i in range(0, len(heads_te), block):
            codes = codes_te[i : i + block]
            r = heads_te[i : i + block].double() - kd[local, codes]  # (b, C, d)
            rows = (((local * n_keys + codes) * L).unsqueeze(-1) + torch.arange(L)).reshape(-1)
            m = (S.index_select(0, rows) / (n.index_select(0, rows) + lam).unsqueeze(1))
            diff = r.unsqueeze(2) - m.view(len(r), n_codebooks, L, d)  # (b, C, L, d)
            z = diff.permute(0, 2, 1, 3).reshape(len(r) * L, D) @ A
            parts.append(z.pow(2).sum(1).view(len(r), L) / (2 * n_codebooks))
        out["cell", shrink] = torch.cat(parts)
    return out


def run_residual(report, keys, H_tr, C_tr, y_tr, H_te, C_te, y_te, L, counts, R_te, gs,
                 prefix="", order=None):
    """``residual``: counting logits minus g times the mean Gaussian term;
    ``residual-mix``: the mean over codebooks of each codebook's posterior
    ``softmax(log p(y | key) - g ||r - m_y||^2 / (2 s^2))`` (a mixture, which
    bounds what one codebook can add; a mean of log posteriors would rank the
    classes exactly as ``residual`` does)."""
    terms = residual_terms(keys, H_tr, C_tr, y_tr, H_te, C_te, L, lams=(1.0, 0.25), nus=(4.0,),
                           order=order)
    fetched = count_values(counts[R_te], SMOOTHING)  # (N, C, L) log p(y | key)
    base = fetched.mean(1)
    if not prefix:  # the mixture of the counts alone: what combining them so gives
        report(variant="count-mix", accuracy=accuracy(torch.softmax(fetched, -1).mean(1), y_te))
    for (kind, lam, nu), term in terms.items():
        if lam != 1.0 and kind != "pooled":
            continue
        for g in gs:
            report(variant=prefix + "residual", variance=kind, lam=lam, nu=nu, g=g,
                   accuracy=accuracy(base - g * term.mean(1), y_te))
            post = torch.softmax(fetched - g * term, -1).mean(1)  # a mixture, not a product
            report(variant=prefix + "residual-mix", variance=kind, lam=lam, nu=nu, g=g,
                   accuracy=accuracy(post, y_te))
    return {key: term.mean(1) for key, term in terms.items()}


# --------------------------------------------------------------- back-off


def backoff_logits(codebook, H_key, fine_counts, rows_te, n_coarse, betas, seed, a=SMOOTHING):
    """Logits with fine counts smoothed towards their coarse parent, per beta."""
    c = codebook.keys_.shape[0]
    coarse = KeyCodebook(n_codebooks=c, n_keys=n_coarse, projection="partition", max_iter=5,
                         random_state=seed).fit(H_key.reshape(len(H_key), -1).numpy())
    fine_keys = torch.as_tensor(codebook.keys_)  # (C, K, d) used as heads (K, C, d)
    parent = nearest_keys(fine_keys.transpose(0, 1).contiguous(),
                          torch.as_tensor(coarse.keys_))  # (K, C)
    parent_rows = flat_codes(parent, n_coarse).T.reshape(-1)  # (C * K,) in fine row order
    L = fine_counts.shape[1]
    coarse_counts = torch.zeros(c * n_coarse, L, dtype=torch.float64)
    coarse_counts.index_add_(0, parent_rows, fine_counts)
    p = (coarse_counts + a) / (coarse_counts.sum(1, keepdim=True) + a * L)
    prior = p[parent_rows]  # (C * K, L)
    out = {}
    for beta in betas:
        fetched = fine_counts[rows_te]  # (N, C, L)
        pri = prior[rows_te]
        values = torch.log(fetched + beta * pri) - torch.log(fetched.sum(-1, keepdim=True) + beta)
        out[beta] = mean_over_codebooks(values)
    return out


# --------------------------------------------------------------- refinement


def refine(rows_tr, y_tr, rows_te, n_rows, L, phases, epochs, lr, seed, batch=128,
           a=SMOOTHING):
    """Counting per phase, then ``epochs`` of SGD on delta (values = counts + delta)."""
    rng = np.random.RandomState(seed)
    counts = torch.zeros(n_rows, L, dtype=torch.float64)
    delta = torch.zeros(n_rows, L, dtype=torch.float64)
    labels = torch.as_tensor(y_tr, dtype=torch.int64)
    n_codebooks = rows_tr.shape[1]
    for part in phases:
        add_counts(counts, rows_tr[part], labels[part])
        base = decode_counts(counts, rows_tr[part], a)  # fixed during the phase
        part_rows, part_labels = rows_tr[part], labels[part]
        for _ in range(epochs):
            perm = torch.as_tensor(rng.permutation(len(part)))
            for s in range(0, len(part), batch):
                b = perm[s : s + batch]
                r = part_rows[b]
                logits = base[b] + delta[r].mean(1)
                grad = torch.softmax(logits, 1)
                grad[torch.arange(len(b)), part_labels[b]] -= 1.0
                step = (-lr / n_codebooks / len(b)) * grad  # mean loss over the batch
                delta.index_add_(0, r.reshape(-1), step.repeat_interleave(n_codebooks, 0))
    return decode_counts(counts, rows_te, a) + delta[rows_te].mean(1)


# --------------------------------------------------------------- warm-up


def warm_keys(keys, H_key, C_key, H_batch, mode, quantile=0.9):
    """Keys with the least used (on the key data) replaced by heads of the batch."""
    keys = keys.clone()
    n_codebooks, n_keys, _ = keys.shape
    C_batch = nearest_keys(H_batch, keys)
    local = torch.arange(n_codebooks)
    d_key = (H_key - keys[local, C_key]).pow(2).sum(-1)  # (Nk, C)
    d_batch = (H_batch - keys[local, C_batch]).pow(2).sum(-1)  # (Nb, C)
    threshold = torch.quantile(d_key, quantile, dim=0)  # (C,)
    replaced = 0
    for c in range(n_codebooks):
        usage = torch.bincount(C_key[:, c], minlength=n_keys)
        least = torch.argsort(usage, stable=True)
        if mode == "far":
            chosen = torch.nonzero(d_batch[:, c] > threshold[c]).view(-1)
        else:
            chosen = torch.arange(len(H_batch))
        chosen = chosen[: n_keys // 2]
        keys[c, least[: len(chosen)]] = H_batch[chosen, c]
        replaced += len(chosen)
    return keys, replaced / n_codebooks


# --------------------------------------------------------------- driver


def explore(args):
    torch.set_num_threads(args.threads)
    Z_key, key_name, Z_tr, y_tr, Z_te, y_te = task_data(args.dataset, args.keys, args.seed)
    Z_key, Z_tr, Z_te = prepare(args.prep, Z_key, Z_tr, Z_te)
    if args.prep != "none":
        key_name = f"{key_name}|{args.prep}"  # the key cache is keyed by this name
    L = len(np.unique(y_tr))
    rows_out = []

    def reporter(**common):
        def report(**row):
            row = {"dataset": args.dataset, "keys": args.keys, "key_data": key_name,
                   "seed": args.seed, **common, **row}
            if args.prep != "none":
                row["prep"] = args.prep
            if args.projection != "gaussian":
                row["projection"] = args.projection
            rows_out.append(row)
            print(json.dumps(row), flush=True)
        return report

    ci_phases = [np.asarray(p) for p in
                 ClassIncrementalSplit(n_phases=5, random_state=args.seed).split(Z_tr, y_tr)]
    iid_phases = np.array_split(np.random.RandomState(args.seed).permutation(len(y_tr)), 5)
    exps = set(args.experiments)

    if "peers" in exps:
        report = reporter(shape="-")
        for name, model in [("slda", StreamingLDA()), ("ncm", NearestClassMean()),
                            ("ridge", RandomReLURidgeClassifier(random_state=args.seed))]:
            report(variant=name, accuracy=float(model.fit(Z_tr, y_tr).score(Z_te, y_te)))

    for shape in args.shapes:
        tic = time.perf_counter()
        codebook = fit_keys(Z_key, key_name, len(Z_key), shape, args.seed, args.key_epochs,
                            args.projection)
        fit_s = time.perf_counter() - tic
        keys = torch.as_tensor(codebook.keys_)
        c, k = codebook.n_codebooks_, codebook.n_keys_
        report = reporter(shape=shape_name(shape), n_keys=k)
        H_tr, H_te = heads_of(codebook, Z_tr), heads_of(codebook, Z_te)
        C_tr, C_te = codes_of(H_tr, keys), codes_of(H_te, keys)
        R_tr, R_te = flat_codes(C_tr, k), flat_codes(C_te, k)
        counts = count_table(R_tr, y_tr, c * k, L)
        base = decode_counts(counts, R_te, SMOOTHING)
        report(variant="count", smoothing=SMOOTHING, accuracy=accuracy(base, y_te),
               key_fit_s=round(fit_s, 1))
        if args.check_order:
            ci_counts = count_table(R_tr, y_tr, c * k, L, order=ci_phases)
            ci_base = decode_counts(ci_counts, R_te, SMOOTHING)
            report(variant="count", check="class-incremental vs iid",
                   max_logit_diff=float((ci_base - base).abs().max()),
                   equal_predictions=float((ci_base.argmax(1) == base.argmax(1)).double().mean()),
                   accuracy=accuracy(ci_base, y_te))
        if "residual" in exps:
            terms = run_residual(report, keys, H_tr, C_tr, y_tr, H_te, C_te, y_te, L, counts,
                                 R_te, args.gs)
            if args.check_order:
                ci_terms = residual_terms(keys, H_tr, C_tr, y_tr, H_te, C_te, L, (1.0,), (4.0,),
                                          order=ci_phases)
                for key in ci_terms:
                    a_, b_ = base - terms[key], ci_base - ci_terms[key].mean(1)
                    report(variant="residual", variance=key[0], lam=key[1], nu=key[2], g=1.0,
                           check="class-incremental vs iid",
                           max_logit_diff=float((a_ - b_).abs().max()),
                           equal_predictions=float((a_.argmax(1) == b_.argmax(1)).double().mean()),
                           accuracy=accuracy(b_, y_te))
        if "cov" in exps:
            for shrink in args.cov_shrinks:
                A = residual_whitening(keys, H_tr, C_tr, y_tr, L, shrink)
                Hw_tr = torch.einsum("ncd,cde->nce", H_tr.double(), A)
                Hw_te = torch.einsum("ncd,cde->nce", H_te.double(), A)
                keys_w = torch.einsum("ckd,cde->cke", keys.double(), A)
                run_residual(report, keys_w, Hw_tr, C_tr, y_tr, Hw_te, C_te, y_te, L, counts,
                             R_te, args.gs, prefix=f"cov{shrink:g}-")
        if "lda" in exps:
            terms = lda_residual_terms(keys, H_tr, C_tr, y_tr, H_te, C_te, L, args.cov_shrinks)
            for (level, shrink), term in terms.items():
                for g in args.gs:
                    # "lda-hybrid": counting logits plus streaming LDA on the heads.
                    report(variant="lda-residual" if level == "cell" else "lda-hybrid",
                           shrink=shrink, g=g, accuracy=accuracy(base - g * term, y_te))
        if "backoff" in exps:
            H_key = heads_of(codebook, Z_key)
            for n_coarse in args.coarse_keys:
                for beta, logits in backoff_logits(codebook, H_key, counts, R_te, n_coarse,
                                                   args.betas, args.seed).items():
                    report(variant="backoff", n_coarse=n_coarse, beta=beta,
                           accuracy=accuracy(logits, y_te))
        if "refine" in exps:
            for epochs in args.refine_epochs:
                for lr in args.refine_lrs:
                    for setting, phases in (("iid", iid_phases), ("class-incremental",
                                                                   ci_phases)):
                        logits = refine(R_tr, y_tr, R_te, c * k, L, phases, epochs, lr * c,
                                        args.seed)
                        report(variant="refine", epochs=epochs, lr_per_codebook=lr,
                               setting=setting, accuracy=accuracy(logits, y_te))
        if "warmup" in exps:
            H_key = heads_of(codebook, Z_key)
            C_key = codes_of(H_key, keys)
            n_batch = len(ci_phases[0])
            firsts = {"class-incremental": ci_phases[0], "iid": iid_phases[0][:n_batch]}
            for first, batch in firsts.items():
                for mode in ("far", "all"):
                    warm, n_replaced = warm_keys(keys, H_key, C_key, H_tr[batch], mode)
                    Cw_tr, Cw_te = codes_of(H_tr, warm), codes_of(H_te, warm)
                    Rw_tr, Rw_te = flat_codes(Cw_tr, k), flat_codes(Cw_te, k)
                    wcounts = count_table(Rw_tr, y_tr, c * k, L)
                    wbase = decode_counts(wcounts, Rw_te, SMOOTHING)
                    report(variant="warmup", mode=mode, first_batch=first,
                           keys_replaced_per_codebook=n_replaced,
                           accuracy=accuracy(wbase, y_te))
                    if "residual" in exps:
                        run_residual(report, warm, H_tr, Cw_tr, y_tr, H_te, Cw_te, y_te, L,
                                     wcounts, Rw_te, [0.4, 1.0], prefix=f"warmup-{mode}-{first}+")
    return rows_out


CONFIG_FIELDS = ("shrink", "variance", "lam", "nu", "g", "n_coarse", "beta", "epochs", "lr_per_codebook",
                 "setting", "mode", "first_batch")


def summarise(paths):
    """Mean accuracy over seeds of every (dataset, keys, shape, variant) in result files."""
    groups = {}
    for path in paths:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if "check" in row:
                    continue
                name = " ".join([row["variant"]] + [f"{k}={row[k]}" for k in CONFIG_FIELDS
                                                    if k in row])
                key = (row["dataset"], row["keys"], row.get("prep", "none"),
                       row.get("projection", "gaussian"), row["shape"], name)
                groups.setdefault(key, {})[row["seed"]] = row["accuracy"]
    for key, by_seed in sorted(groups.items()):
        values = [by_seed[s] for s in sorted(by_seed)]
        print(" | ".join(key), "|", f"{np.mean(values):.4f}", f"({len(values)} seeds:",
              " ".join(f"{v:.4f}" for v in values) + ")")


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--keys", choices=["own", "other"], default="own")
    parser.add_argument("--shapes", type=comma_list(parse_shape), default=[(64, "auto", 32)])
    parser.add_argument("--experiments", type=comma_list(str),
                        default=["residual", "backoff", "refine", "warmup", "peers"])
    parser.add_argument("--gs", type=comma_list(float), default=[0.4, 0.8, 1.0, 2.0])
    parser.add_argument("--cov-shrinks", type=comma_list(float), default=[0.1])
    parser.add_argument("--coarse-keys", type=comma_list(int), default=[64, 512])
    parser.add_argument("--betas", type=comma_list(float), default=[1.0, 4.0, 16.0])
    parser.add_argument("--refine-epochs", type=comma_list(int), default=[1, 3])
    parser.add_argument("--refine-lrs", type=comma_list(float), default=[0.1, 1.0, 10.0])
    parser.add_argument("--key-epochs", type=int, default=3)
    parser.add_argument("--prep", default="none",
                        help="linear map fitted on the key data: none, whiten:s, pcaw:m:s, pca:m")
    parser.add_argument("--projection", choices=["gaussian", "orthogonal"], default="gaussian")
    parser.add_argument("--check-order", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="append JSON lines here")
    parser.add_argument("--summarise", nargs="+", metavar="JSONL",
                        help="print the mean over seeds of result files and exit")
    args = parser.parse_args(argv)
    if args.summarise:
        return summarise(args.summarise)
    rows = explore(args)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()

"""Bonneel et al. 2015 by a screened Poisson solve: its limits (lam = 0: P's gradients; lam huge: the warped
previous output), the discrete equation checked against an independent sparse matrix, and sign mutants caught."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F

from vstlib import flow
from vstlib.evaluation import bonneel as bn

H, W = 16, 20


def smooth(T: int, h: int = H, w: int = W, seed: int = 0, cells: int = 4) -> torch.Tensor:
    """(T,3,h,w) float64 smooth random images in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, 3, cells, cells, generator=g, dtype=torch.float64)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def const_flow(u, v, n, h=H, w=W):
    return torch.tensor([u, v], dtype=torch.float64).view(1, 2, 1, 1).expand(n, 2, h, w).clone()


def sparse_system(P: np.ndarray, target: np.ndarray, weight: np.ndarray, lam: float):
    """(A, b) of (lam w + Lg) O = lam w target + Lg P per channel, built edge by edge: Lg = D - Adj is the
    4-neighbour graph Laplacian of the H x W grid (Neumann: border pixels have fewer edges). P, target
    (3,H,W), weight (H,W); A (HW,HW), b (HW,3)."""
    h, w = weight.shape
    idx = np.arange(h * w).reshape(h, w)
    edges = np.concatenate([np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
                            np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], 1)])
    i, j = edges.T
    adj = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(h * w, h * w))
    adj = (adj + adj.T).tocsr()
    lg = sp.diags(np.asarray(adj.sum(1)).ravel()) - adj
    A = (sp.diags(lam * weight.ravel()) + lg).tocsr()
    b = lam * weight.reshape(-1, 1) * target.reshape(3, -1).T + lg @ P.reshape(3, -1).T
    return A, b


# --------------------------------------------------------------------------- operators
def test_operators_are_the_neumann_laplacian():
    x = torch.rand(2, 3, 7, 9, dtype=torch.float64)
    g = (torch.rand(2, 3, 7, 9, dtype=torch.float64), torch.rand(2, 3, 7, 9, dtype=torch.float64))
    assert torch.allclose(bn.laplacian(x), bn.divergence(*bn.gradient(x)), atol=1e-12)
    gx, gy = bn.gradient(x)                                                  # div = -grad^T
    assert float((gx * g[0]).sum() + (gy * g[1]).sum()) == pytest.approx(-float((x * bn.divergence(*g)).sum()))
    assert bn.laplacian(torch.ones(1, 1, 5, 6)).abs().max() == 0             # constants are its null space
    assert bn.neighbours(3, 4)[0, 0].tolist() == [[2, 3, 3, 2], [3, 4, 4, 3], [2, 3, 3, 2]]
    # against the sparse graph Laplacian: L x = -Lg x
    A, _ = sparse_system(x[0].numpy(), x[0].numpy(), np.zeros((7, 9)), 0.0)
    assert np.allclose(-(A @ x[0].numpy().reshape(3, -1).T).T.reshape(3, 7, 9), bn.laplacian(x)[0].numpy())


# --------------------------------------------------------------------------- the checks (a)-(c)
def check_a() -> bool:
    """(a) lam = 0: only the gradient term, so O_t = P_t + a constant per channel (the pure Poisson problem
    cannot fix it; CG starts from warp(O_{t-1}), not from P_t, so this is a real solve)."""
    P, frames = smooth(3, seed=1), smooth(3, seed=2)
    flows = {"bw": const_flow(-2, 1, 2), "mask_bw": torch.ones(2, 1, H, W, dtype=torch.float64)}
    O = bn.bonneel(P, frames, flows, lam=0.0, tol=1e-10, iters=3000)
    d = (O - P)[1:]                                                          # (2,3,H,W)
    return torch.equal(O[0], P[0]) and bool((d - d.mean((2, 3), keepdim=True)).abs().max() < 1e-6)


def check_b() -> bool:
    """(b) lam huge, w = 1 (a still grey input: no residual; every pixel visible): O_t = warp(O_{t-1}, bw),
    here a shift by 2 px right and 1 up, not P_t."""
    P = smooth(3, seed=3)
    frames = torch.full((3, 3, H, W), 0.5, dtype=torch.float64)
    flows = {"bw": const_flow(-2, 1, 2), "mask_bw": torch.ones(2, 1, H, W, dtype=torch.float64)}
    O = bn.bonneel(P, frames, flows, lam=1e9, tol=1e-10, iters=3000)
    want1 = flow.warp(P[:1], flows["bw"][:1])
    want2 = flow.warp(want1, flows["bw"][1:])
    return bool((O[1:2] - want1).abs().max() < 1e-6 and (O[2:] - want2).abs().max() < 1e-6
                and (O[1:2] - P[1:2]).abs().max() > 0.05)


def check_c() -> bool:
    """(c) random data: O_1 satisfies the discrete equation, built independently as a sparse matrix, to the
    solver's tolerance, and matches a direct sparse solve."""
    g = torch.Generator().manual_seed(5)
    P = torch.rand(2, 3, H, W, generator=g, dtype=torch.float64)
    bw = 2 * (smooth(1, seed=7)[:, :2] - 0.5)                                # smooth flow within +-1 px
    first = smooth(1, seed=6)
    second = flow.warp(first, bw) + 0.15 * (smooth(1, seed=8) - 0.5)         # the flow explains it, mostly
    frames = torch.cat([first, second])
    fw = -flow.warp(bw, bw)
    mask = flow.occlusion_mask(bw, fw)
    flows = {"bw": bw, "mask_bw": mask}
    lam, tol = 0.5, 1e-9
    O = bn.bonneel(P, frames, flows, lam=lam, tol=tol, iters=3000)
    target = flow.warp(P[:1], bw)[0].numpy()
    weight = (torch.exp(-bn.ALPHA * (frames[1:] - flow.warp(frames[:1], bw)).pow(2).sum(1)) * mask[:, 0])[0]
    A, b = sparse_system(P[1].numpy(), target, weight.numpy(), lam)
    x = O[1].numpy().reshape(3, -1).T                                        # (HW,3)
    res = np.linalg.norm(A @ x - b, axis=0) / np.linalg.norm(b, axis=0)
    direct = np.stack([spla.spsolve(A, b[:, c]) for c in range(3)], 1)
    varied = weight.min() < 0.1 and weight.max() > 0.9                       # a screening term that varies
    return bool(varied and res.max() < 10 * tol and np.abs(x - direct).max() < 1e-6)


def test_lam_zero_keeps_the_gradients_of_P():
    assert check_a()


def test_huge_lam_returns_the_warped_previous_output():
    assert check_b()


def test_solution_satisfies_the_discrete_equation():
    assert check_c()


def test_solver_reports_its_residual():
    P, target = smooth(1, seed=8), smooth(1, seed=9)
    w = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    O, it, res = bn.solve_frame(P, target, w, lam=0.3, tol=1e-6)
    assert res.shape == (3,) and res.max() <= 1e-6 and 0 < it < 2000
    _, it_loose, _ = bn.solve_frame(P, target, w, lam=0.3, tol=1e-2)
    assert it_loose < it


@pytest.mark.parametrize("mutant", ["laplacian", "divergence", "both", "flow"])
def test_a_flipped_sign_is_caught(monkeypatch, mutant):
    """(d) The checks fail on each mutant. Checked by running (a), (b), (c) on each (True = passes):
    none [T, T, T]; laplacian (A = lam w + L) [F, T, F]: (a) returns -P; divergence (b = ... + div grad P)
    [F, T, F]; both [T, T, F]: the pure Poisson problem is unchanged but the screened one is indefinite
    and misses the independent sparse equation; flow (warp along -bw) [T, F, F]."""
    lap, div, warp = bn.laplacian, bn.divergence, bn.warp
    if mutant in ("laplacian", "both"):
        monkeypatch.setattr(bn, "laplacian", lambda x: -lap(x))
    if mutant in ("divergence", "both"):
        monkeypatch.setattr(bn, "divergence", lambda gx, gy: -div(gx, gy))
    if mutant == "flow":
        monkeypatch.setattr(bn, "warp", lambda image, f: warp(image, -f))
    assert not (check_a() and check_b() and check_c())

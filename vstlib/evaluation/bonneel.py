"""Bonneel et al. 2015, "Blind Video Temporal Consistency" (ACM TOG 34(6), SIGGRAPH Asia), from the paper:
a temporally consistent video O from the per-frame processed frames P and the input video I.

O_0 = P_0; for t > 0, O_t minimises

    ||grad O_t - grad P_t||^2 + lam * w_t * ||O_t - warp(O_{t-1}, bw)||^2,
    w_t = exp(-alpha * ||I_t - warp(I_{t-1}, bw)||^2) * visible_t

with bw the INPUT's flow t -> t-1 (``flow.warp``'s convention: warp(O_{t-1}, bw) is O_{t-1} moved onto
frame t), visible_t its forward-backward mask, and w_t the input's own warping residual (summed over RGB):
where the flow fails on the input, the output is not held to it either. Gradients are forward differences
with a Neumann boundary (no gradient across the border). Setting the derivative to zero gives a screened
Poisson equation whose screening term varies per pixel:

    (lam w - L) O_t = lam w warp(O_{t-1}) - div(grad P_t),     L = div grad (5-point, Neumann),

solved by conjugate gradients preconditioned by its diagonal (Jacobi), the 3 channels as one batch, from
warp(O_{t-1}) until the relative residual ||b - A O|| / ||b|| of every channel is below ``tol``.

Parameters: the paper leaves lam to the user (the authors' code reads it from the command line);
LAM = 0.1 holds structures wider than ~20 px to the previous frame (with w = 1, frequencies where the
Laplacian's eigenvalue is below lam follow warp(O_{t-1}), finer ones follow P_t). ALPHA = 200 =
1 / (2 * 0.05^2): a Gaussian of sd 0.05 on the RGB residual for colours in [0,1], as in the authors'
code. The output is a least-squares solution, not clamped to [0,1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vstlib.flow import warp

LAM = 0.1
ALPHA = 200.0


# --------------------------------------------------------------------------- operators (Neumann)
def gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences (gx, gy) of x (N,C,H,W), 0 on the last column / row (nothing beyond the border)."""
    gx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    gy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return gx, gy


def divergence(gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Backward differences of (gx, gy): minus the adjoint of ``gradient`` (the last column / row of g
    carries no flux), so div(grad x) is the Neumann Laplacian."""
    gx = F.pad(gx[..., :, :-1], (0, 1))
    gy = F.pad(gy[..., :-1, :], (0, 0, 0, 1))
    return gx - F.pad(gx[..., :, :-1], (1, 0)) + gy - F.pad(gy[..., :-1, :], (0, 0, 1, 0))


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """5-point Laplacian of x (N,C,H,W), Neumann: the sum over in-frame neighbours q of x_q - x_p
    (edge replication makes an outside neighbour equal to x_p)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return p[..., 1:-1, :-2] + p[..., 1:-1, 2:] + p[..., :-2, 1:-1] + p[..., 2:, 1:-1] - 4 * x


def neighbours(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(1,1,H,W) number of in-frame 4-neighbours (4 inside, 3 on an edge, 2 in a corner): -L's diagonal."""
    p = F.pad(torch.ones(1, 1, h, w, device=device, dtype=dtype), (1, 1, 1, 1))   # 0 outside the frame
    return p[..., 1:-1, :-2] + p[..., 1:-1, 2:] + p[..., :-2, 1:-1] + p[..., 2:, 1:-1]


# --------------------------------------------------------------------------- solver
def _div0(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b, 0 where b is 0 (a channel already solved exactly)."""
    return torch.where(b != 0, a / torch.where(b != 0, b, torch.ones_like(b)), torch.zeros_like(a))


def pcg(apply_A, b: torch.Tensor, x: torch.Tensor, inv_diag: torch.Tensor, tol: float, iters: int):
    """Jacobi-preconditioned conjugate gradients on A x = b for (1,C,H,W) batches, one system per channel
    -> (x, iterations, relative residual (C,)). A channel stops updating once its residual is below tol."""
    dims = (-2, -1)
    r = b - apply_A(x)
    z = inv_diag * r
    p, rz = z, (r * z).sum(dims, keepdim=True)                              # (1,C,1,1)
    b_norm = b.flatten(2).norm(dim=2).clamp_min(torch.finfo(b.dtype).tiny)[..., None, None]
    for it in range(iters + 1):
        res = r.flatten(2).norm(dim=2)[..., None, None] / b_norm            # (1,C,1,1)
        active = (res > tol).to(b.dtype)
        if it == iters or not active.any():
            break
        Ap = apply_A(p)
        step = active * _div0(rz, (p * Ap).sum(dims, keepdim=True))
        x, r = x + step * p, r - step * Ap
        z = inv_diag * r
        rz_new = (r * z).sum(dims, keepdim=True)
        p, rz = z + _div0(rz_new, rz) * p, rz_new
    return x, it, res.flatten()


def solve_frame(P: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, lam: float,
                tol: float = 1e-4, iters: int = 2000):
    """O (1,3,H,W) solving (lam w - L) O = lam w target - div(grad P), from ``target``
    -> (O, iterations, relative residual (3,)). weight (1,1,H,W) >= 0."""
    screen = lam * weight                                                   # (1,1,H,W)
    b = screen * target - divergence(*gradient(P))
    inv_diag = 1.0 / (screen + neighbours(*P.shape[-2:], P.device, P.dtype))
    return pcg(lambda x: screen * x - laplacian(x), b, target.clone(), inv_diag, tol, iters)


def input_weight(cur: torch.Tensor, prev: torch.Tensor, bw: torch.Tensor, alpha: float) -> torch.Tensor:
    """(N,1,H,W) exp(-alpha ||I_t - warp(I_{t-1}, bw)||^2): 1 where the flow explains the input."""
    return torch.exp(-alpha * (cur - warp(prev, bw)).pow(2).sum(1, keepdim=True))


@torch.no_grad()
def bonneel(P: torch.Tensor, frames: torch.Tensor, flows: dict, lam: float = LAM, alpha: float = ALPHA,
            tol: float = 1e-4, iters: int = 2000) -> torch.Tensor:
    """(T,3,H,W) Bonneel et al.'s consistent video from per-frame results P (T,3,H,W), the input frames
    (T,3,H,W) and the input's flows: "bw" (T-1,2,H,W), bw[t-1] = flow t -> t-1, and "mask_bw" (T-1,1,H,W)."""
    bw, vis = flows["bw"].to(P), flows["mask_bw"].to(P)
    frames = frames.to(P)
    out = [P[:1]]                                                           # O_0 = P_0
    for t in range(1, P.shape[0]):
        target = warp(out[-1], bw[t - 1:t])                                 # (1,3,H,W) O_{t-1} on frame t
        w = input_weight(frames[t:t + 1], frames[t - 1:t], bw[t - 1:t], alpha) * vis[t - 1:t]
        out.append(solve_frame(P[t:t + 1], target, w, lam, tol, iters)[0])
    return torch.cat(out)


__all__ = ["LAM", "ALPHA", "gradient", "divergence", "laplacian", "neighbours", "pcg", "solve_frame",
           "input_weight", "bonneel"]

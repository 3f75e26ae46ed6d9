"""Data-parallel training (torchrun, gloo on CPU): one update of two ranks is the single-process
update on the union of their chunks, and only rank 0 writes the run folder."""
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import isolated_home, tiny

from vstlib import paths
from vstlib.config import get_config
from vstlib.files import load_tensors
from vstlib.rl.distributed import ranks
from vstlib.runtime import seed_everything

# accumulation 3 over 3 transitions: a clip visit is one update; 2 train clips on 2 ranks: one round,
# one update. A constraint, so that dual ascent must see the union's terms; no clipping, which would
# hide a gradient summed instead of averaged (both clipped to the same norm).
TINY = tiny(train={"accumulation": 3, "grad_clip": 0.0}, reward={"constraints": {"temporal": 0.9}})
# the ranks run one thread each, so the reference does too: Adam's first step is about lr * sign(g),
# and a near-zero gradient summed in another order under two threads flips it (make test runs two)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    yield from isolated_home(tmp_path_factory.mktemp("vsthome"))


@pytest.fixture(scope="module")
def cfg(home):
    from vstlib.video.prepare import prepare

    cfg = get_config("smoke", **TINY)
    assert len(prepare(cfg)["train"]) == 2
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, report: str) -> None:
    """One torchrun-like rank: train the tiny run, recording every write this rank makes in the run folder;
    then the weighted gradient average on uneven chunks (n = 2 and 1)."""
    import vstlib.files
    import vstlib.rl.train as train_mod

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = get_config("smoke", **TINY)
    run_dir = paths.run_dir(cfg.profile, "ddp").resolve()
    writes, atomic_path, append_jsonl = [], vstlib.files.atomic_path, train_mod.append_jsonl

    def spy(fn):
        def wrapped(path, *a, **k):
            if run_dir in Path(path).resolve().parents:
                writes.append(Path(path).name)
            return fn(path, *a, **k)
        return wrapped

    vstlib.files.atomic_path, train_mod.append_jsonl = spy(atomic_path), spy(append_jsonl)
    dist.init_process_group("gloo")               # as torchrun's env:// does; train joins this group
    train_mod.train(cfg, run="ddp", resume=False)
    with ranks("cpu") as ddp:                     # uneven chunks: the union's mean, not the mean of means
        a, b, c = (torch.zeros(2, requires_grad=True) for _ in range(3))
        a.grad = torch.full((2,), rank + 1.0)
        b.grad = torch.ones(2) if rank == 1 else None
        ddp.average_gradients([a, b, c], n=2 if rank == 0 else 1)
        grads = [None if p.grad is None else p.grad.tolist() for p in (a, b, c)]
    dist.destroy_process_group()
    Path(report, f"rank{rank}.json").write_text(json.dumps({"writes": writes, "grads": grads}))


def _single_process_union(cfg):
    """The reference: train's set-up, both clips of epoch 0 collected from their visit seeds, and one
    update on the union's loss (the mean over both clips' transitions) and terms."""
    from vstlib.rl.distributed import visit_seed
    from vstlib.rl.episodes import build_episode, make_env
    from vstlib.rl.learners import LEARNERS, Agent
    from vstlib.rl.policy import LatentPolicy
    from vstlib.rl.train import _terms, epoch_order, param_groups, train_clips, update

    seed_everything(cfg.train.seed)
    policy = LatentPolicy.from_config(cfg.policy)
    agent = Agent(cfg, policy)
    opt = torch.optim.Adam(param_groups(policy, agent, cfg.train))
    agent.lam0 = agent.multipliers.lam.clone()
    env, learner = make_env(cfg), LEARNERS.pick(cfg.train.learner)
    losses, ns, advs, terms, bases = [], [], [], [], []
    for pos, cid in enumerate(epoch_order(train_clips(cfg.profile), cfg.train.seed, 0)):
        ep = build_episode(cfg, cid, env)
        torch.manual_seed(visit_seed(cfg.train.seed, 0, pos))
        batch = learner.collect(policy, env, ep, agent, cfg.train)
        chunk = torch.arange(ep.n_steps)
        loss, info = learner.loss(policy, env, ep, batch, chunk, agent, cfg.train)
        losses.append(loss), ns.append(chunk.numel()), advs.append(info["advantage"])
        terms.append(_terms(info)), bases.append({k: v[chunk] for k, v in ep.base_terms.items()})
    union = sum(n * loss for n, loss in zip(ns, losses)) / sum(ns)
    _, skipped = update(policy, opt, union, {"finite_frames": True, "advantage": torch.cat(advs, 1)},
                        cfg.train.grad_clip, agent)
    assert skipped is None
    cat = lambda ds: {k: torch.cat([d[k] for d in ds]) for k in ds[0]}   # noqa: E731
    agent.multipliers.ascend(cat(terms), cat(bases), cfg.train.dual_lr)
    return policy, opt, agent


def test_two_ranks_take_the_single_process_update_on_the_union_and_rank_0_writes(cfg, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # only rank 0 writes the run folder: one checkpoint, no temporary file left
    run_dir = paths.run_dir(cfg.profile, "ddp")
    assert reports[1]["writes"] == []
    assert {"checkpoint.safetensors", "policy.safetensors", "log.jsonl"} <= set(reports[0]["writes"])
    assert sorted(p.name for p in run_dir.iterdir()) == [
        ".lock", "checkpoint.json", "checkpoint.safetensors", "config.json", "log.jsonl", "policy.safetensors"]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [0]
    # the weights, Adam's moments (a sum instead of the mean doubles them) and the multipliers
    policy, opt, agent = _single_process_union(cfg)
    got, ckpt = load_tensors(run_dir / "policy.safetensors"), load_tensors(run_dir / "checkpoint.safetensors")
    assert set(got) == set(policy.state_dict())
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6, msg=k)
    for i, p in enumerate(policy.parameters()):
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(ckpt[f"adam.{i}.{k}"], opt.state[p][k], rtol=1e-5, atol=1e-9,
                                       msg=f"adam.{i}.{k}")
    torch.testing.assert_close(ckpt["agent.multipliers.lam"], agent.multipliers.lam, rtol=0, atol=1e-6)
    assert not torch.equal(agent.multipliers.lam, agent.lam0)          # it did ascend
    # uneven chunks: (2 * 1 + 1 * 2) / 3; a gradient on one rank only: (2 * 0 + 1 * 1) / 3; none: None
    for rep in reports:
        assert rep["grads"][0] == pytest.approx([4 / 3] * 2) and rep["grads"][1] == pytest.approx([1 / 3] * 2)
        assert rep["grads"][2] is None

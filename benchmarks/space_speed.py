"""What the attention speed work gives a user of a space: trained images per
second of architectures drawn from the ``sk`` and ``mixed`` spaces, under this
tree's code and under an older commit's, side by side in one run.

The architectures are drawn once, here, by the space's own sampler (random
sampler, fixed seed), and written out as YAML; each is then trained for
``--steps`` steps of the space's fidelity (its batch size, lr, schedule) by
``nas.training.train.train`` in a fresh process, once with the ``--after`` commit's
``nas`` (default: HEAD) and once with the ``--before`` commit's (each checked
out into a temporary worktree, so edits in this tree meanwhile change nothing),
alternating which goes first from one architecture to the next so that
drift in the machine's speed hits both alike. The clock is the trainer's own
``train_seconds`` (evaluation excluded) over all steps, so the time the new
code spends choosing its kernels on its first step is charged to it; the
steady rate, from step 10 on, is printed beside it (a trial of the shipped
fidelity trains ~230 steps, where the choosing weighs less than in a short
run).

    python benchmarks/space_speed.py [--spaces sk mixed] [--archs 16] [--steps 50] [--before d80409c] [--after HEAD]

Needs git and this tree's history. Run it alone: two torch processes at once
on a small CPU measure each other.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _cifar
import optuna
import torch

from nas.training.splits import channel_stats

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh process under either tree: only the API both trees share.
_WORKER = r"""
import json, sys, time, torch
import nas
from nas.device import configure_threads
try:
    from nas.search.space import load_space
    from nas.training.train import Recipe, train
except ImportError:  # a tree from before the sub-packages (docs/design.md section 2)
    from nas.space import load_space
    from nas.train import Recipe, train

cfg_path, data_path, space_name, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
configure_threads()
data = torch.load(data_path)
fidelity = load_space(space_name).fidelity
cfg = nas.load_config(cfg_path)
torch.manual_seed(0)
model = nas.build_model(cfg)
recipe = Recipe(images=steps * fidelity.batch_size, batch_size=fidelity.batch_size, lr=fidelity.lr,
                warmup_epochs=fidelity.warmup, grad_clip=fidelity.grad_clip, seed=0)
marks = {}
def progress(step, total, loss):  # called every 10 steps: the clock after the first 10 is the steady state
    marks[step] = time.perf_counter()
result = train(model, data["images"], data["labels"], data["images"][:256], data["labels"][:256],
               data["mean"], data["std"], recipe, progress=progress)
steady = (max(marks) - 10) * recipe.batch_size / (marks[max(marks)] - marks[10])
print(json.dumps({"images": result.images_seen, "seconds": result.train_seconds, "steady": steady,
                  "precision": result.precision}))
"""


def draw(space_name: str, count: int, seed: int, folder: Path) -> list[tuple[Path, str, int]]:
    """``count`` architectures from the space's sampler: (YAML, summary, MACs)."""
    import nas
    from nas.search.space import load_space

    space = load_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    while len(drawn) < count:
        trial = study.ask()
        cfg = space.sample(trial, num_classes=10)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        macs = nas.profile(nas.build_model(cfg), 32)["macs"]
        if macs > space.constraints.get("max_macs", math.inf):
            continue  # the search would not train it either
        path = folder / f"{space_name}-{len(drawn):02d}.yaml"
        path.write_text(cfg.to_yaml())
        kinds = sorted({b.attention.type for s in cfg.stages for b in s.blocks if b.attention.type != "none"})
        drawn.append((path, "+".join(kinds) or "none", macs))
    return drawn


def run(tree: Path, cfg: Path, data: Path, space: str, steps: int) -> dict:
    """The worker's figures, or ``{"error": <its last stderr line>}`` when the
    training failed (a diverged loss, say): one failed architecture is
    reported and left out of the means, not the end of a long run."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", _WORKER, str(cfg), str(data), space, str(steps)], env=env,
                          cwd=tree, capture_output=True, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}, no message"]
        return {"error": lines[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = _cifar.parser(__doc__)
    parser.add_argument("--spaces", nargs="+", default=["sk", "mixed"])
    parser.add_argument("--archs", type=int, default=16, help="architectures drawn from each space")
    parser.add_argument("--steps", type=int, default=50, help="training steps of each architecture")
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    parser.add_argument("--before", default="d80409c", help="the commit before the speed work")
    parser.add_argument("--after", default="HEAD", help="the commit to compare with it")
    parser.add_argument("--images", type=int, default=5120, help="training images held in memory")
    args = parser.parse_args()

    data, splits, threads = _cifar.heldout_split(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        trees = {"before": tmp / "before", "after": tmp / "after"}
        for name, tree in trees.items():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), getattr(args, name)],
                           check=True, capture_output=True)
        try:
            index = splits.train[: args.images]
            images = data.train_images[index]
            mean, std = channel_stats(images)
            torch.save({"images": images, "labels": data.train_labels[index], "mean": mean, "std": std},
                       tmp / "data.pt")
            print(f"# {_cifar.cpu_model()} ({_cifar.cpu_bf16_flags()}), {threads} threads, torch {torch.__version__}; "
                  f"{args.archs} architectures per space (random sampler, seed {args.seed}), {args.steps} steps "
                  f"each at the space's fidelity; before = {args.before}, after = {args.after}")
            for space in args.spaces:
                rows, skipped = [], []
                for i, (cfg, kinds, macs) in enumerate(draw(space, args.archs, args.seed, tmp)):
                    order = list(trees.items())
                    if i % 2:
                        order.reverse()
                    got = {name: run(tree, cfg, tmp / "data.pt", space, args.steps) for name, tree in order}
                    failed = {name: v["error"] for name, v in got.items() if "error" in v}
                    if failed:
                        print(f"  {space} #{i:02d} {kinds:<18} {macs / 1e6:6.2f} M MACs  left out of the means: "
                              + "; ".join(f"{name} failed: {error}" for name, error in failed.items()), flush=True)
                        skipped.append(i)
                        continue
                    speed = {k: v["images"] / v["seconds"] for k, v in got.items()}
                    rows.append((speed["before"], speed["after"], got["before"]["steady"], got["after"]["steady"],
                                 got["before"]["seconds"], got["after"]["seconds"]))
                    print(f"  {space} #{i:02d} {kinds:<18} {macs / 1e6:6.2f} M MACs  all steps: before "
                          f"{speed['before']:4.0f}, after {speed['after']:4.0f} images/s "
                          f"{speed['after'] / speed['before']:.2f}x;  from step 10: before "
                          f"{got['before']['steady']:4.0f}, after {got['after']['steady']:4.0f} "
                          f"{got['after']['steady'] / got['before']['steady']:.2f}x  ({got['after']['precision']})",
                          flush=True)
                if not rows:
                    print(f"{space}: every training failed; no ratio to report", flush=True)
                    continue
                total = sum(r[4] for r in rows) / sum(r[5] for r in rows)
                summary = []
                for label, b, a in (("all steps", 0, 1), ("from step 10", 2, 3)):
                    ratios = [r[a] / r[b] for r in rows]
                    summary.append(f"{label} {math.exp(statistics.fmean(math.log(x) for x in ratios)):.2f}x "
                                   f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)")
                print(f"{space}: images/s after / before, geometric mean over {len(rows)} architectures: "
                      f"{'; '.join(summary)}; total training time of all steps {total:.2f}x shorter"
                      + (f"; left out (a training failed): {', '.join(f'#{i:02d}' for i in skipped)}" if skipped else ""),
                      flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)


if __name__ == "__main__":
    main()

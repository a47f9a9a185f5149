"""Train the built-in vision transformer ``digits-vit`` and save its weights to rulelang/models/weights/digits-vit.pt.

    python examples/train_digits_vit.py                 # ~15-25 minutes on 2 CPU cores
    python examples/train_digits_vit.py --epochs 5 --out-dir /tmp/vit

Seeded and reproducible (CPU, fixed thread count). Training data: the train split of the digits, painted in fresh
random colours every epoch and shifted by up to 2 pixels; evaluation: the fixed test split of
``rulelang.builtin_data("digits-rgb", "test")``. Fails (exit code 1) if the test accuracy is below 95 %.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rulelang.data import builtin_data, colorize, random_colors  # noqa: E402
from rulelang.models import WEIGHTS_DIR  # noqa: E402
from rulelang.models.vit import DigitsViT  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_builtin_models import accuracy, shift  # noqa: E402  (one augmentation and scoring for every built-in)

MIN_ACCURACY = 0.95


def train(epochs: int, lr: float, seed: int = 0, batch: int = 64) -> tuple[DigitsViT, float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DigitsViT()
    grey, labels = builtin_data("digits", "train")
    test_x, test_y = builtin_data("digits-rgb", "test")
    decay = [p for n, p in model.named_parameters() if p.dim() > 1 and "embed" not in n and "token" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() > 1 and "embed" not in n and "token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=lr)
    steps = epochs * ((len(grey) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    for epoch in range(epochs):
        t0 = time.time()
        model.train()
        fg, bg = random_colors(len(grey), rng)
        x_all = shift(colorize(grey, fg, bg), gen)
        order = torch.randperm(len(grey), generator=gen)
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(model(x_all[idx]), labels[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            acc = accuracy(model, test_x, test_y)
            print(
                f"  digits-vit epoch {epoch + 1:3d}/{epochs}: loss {total / len(grey):.4f}, "
                f"test acc {acc:.4f} ({time.time() - t0:.1f}s/epoch)",
                flush=True,
            )
    return model.eval(), accuracy(model, test_x, test_y)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=WEIGHTS_DIR)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model, acc = train(args.epochs, args.lr, seed=args.seed)
    path = args.out_dir / "digits-vit.pt"
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"digits-vit: test accuracy {acc:.4f} ({acc * 360:.0f}/360), {n_params} parameters, "
        f"{path.stat().st_size / 1e6:.2f} MB -> {path} ({time.time() - t0:.0f}s)",
        flush=True,
    )
    if acc < MIN_ACCURACY:
        print(f"digits-vit: accuracy below {MIN_ACCURACY:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

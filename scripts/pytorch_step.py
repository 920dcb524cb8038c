"""One-thread PyTorch f32 training-step rate of MxLenet, for scripts/bench-vs-pytorch.sh.

The same step as `cargo bench -p kernels` (train_step/mxlenet): batch 64 of MNIST-like images
(about a fifth of the pixels lit), forward, backward, SGD with momentum 0.9, weight decay 1e-4,
lr 0.05, Xavier (Gaussian, fan-in, magnitude 2) initialisation. Prints `pytorch_f32 IMG_PER_S`:
the best of `--repeats` runs of `--steps` steps, after warm-up.
"""

import argparse
import math
import time

import torch
from torch import nn


def mxlenet() -> nn.Module:
    net = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.Tanh(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 500), nn.Tanh(), nn.Linear(500, 10),
    )
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
            nn.init.zeros_(m.bias)
    return net


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(3)
    batch = 64
    lit = (torch.rand(batch, 1, 28, 28) < 0.2).float()
    images = lit * torch.rand(batch, 1, 28, 28)
    labels = torch.randint(0, 10, (batch,))
    net = mxlenet()
    loss_fn = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(images), labels).backward()
        opt.step()

    for _ in range(10):
        step()
    best = 0.0
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        best = max(best, args.steps * batch / (time.perf_counter() - start))
    print(f"pytorch_f32 {best:.0f}")


if __name__ == "__main__":
    main()

"""Top-k counts accumulated on the device and reduced exactly over ranks."""

from __future__ import annotations

import torch

from .dist import all_reduce_sum

# Accumulator layout: [loss sum, top-1 correct, top-5 correct, samples]
LOSS, TOP1, TOP5, N = range(4)


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Number of samples whose label is the top-1 prediction, and within the top-k (k capped at classes)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top == labels[:, None]
    return hit[:, 0].sum(), hit.any(dim=1).sum()


class Meter:
    """Sums loss and correct counts on the device without host syncs; ``reduce`` syncs once."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)

    def update(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        c1, c5 = topk_correct(logits.detach(), labels)
        n = labels.shape[0]
        # device-side adds only: no host->device copy, no sync
        self.sums[LOSS] += loss.detach().double() * n
        self.sums[TOP1] += c1
        self.sums[TOP5] += c5
        self.sums[N] += n

    def state(self) -> torch.Tensor:
        return self.sums.detach().cpu().clone()

    def load(self, sums: torch.Tensor) -> None:
        self.sums.copy_(sums.to(self.sums.device))

    def reduce(self) -> dict[str, float]:
        """Loss and top-1/top-5 error (%) over all ranks' samples. A sync point."""
        s = all_reduce_sum(self.sums.clone()).cpu()  # sync: device -> host
        n = max(s[N].item(), 1.0)
        return {"loss": s[LOSS].item() / n, "top1_err": 100 * (1 - s[TOP1].item() / n),
                "top5_err": 100 * (1 - s[TOP5].item() / n), "samples": int(s[N].item())}

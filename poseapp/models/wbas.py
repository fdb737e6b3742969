"""WBAS token merging (EMGPose): a three-way decision by importance, then weighted merges.

Tokens ranked by importance are split into Head (kept), Middle (bipartite similarity merge, each group
averaged with softmaxed importance as weights) and Last (folded into one importance-weighted token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def wbas_split(tokens: int, r_head: float, r_last: float) -> tuple[int, int, int]:
    """Sizes of the Head, Middle and Last sets for ``tokens`` image tokens.

    A Middle set of fewer than two tokens cannot be merged and is kept with the Head.
    """
    head, last = math.floor(tokens * r_head), math.floor(tokens * r_last)
    middle = tokens - head - last
    if middle < 2:
        head, middle = head + middle, 0
    return head, middle, last


def wbas_output_count(tokens: int, r_head: float, r_last: float) -> int:
    head, middle, last = wbas_split(tokens, r_head, r_last)
    return head + middle // 2 + (1 if last else 0)


def wbas_merge(
    x: torch.Tensor, importance: torch.Tensor, r_head: float, r_last: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge image tokens ``x`` (B, n, D) ranked by ``importance`` (B, n).

    Returns the merged tokens (B, n_out, D), ordered [Head, merged Middle, Last], and for every input
    token the index of the output token it went into, (B, n).
    """
    b, n, d = x.shape
    n_head, n_mid, n_last = wbas_split(n, r_head, r_last)
    order = importance.argsort(dim=1, descending=True)
    head = order[:, :n_head]
    middle = order[:, n_head : n_head + n_mid]
    last = order[:, n_head + n_mid :]

    def take(idx: torch.Tensor) -> torch.Tensor:
        return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, d))

    dest = torch.empty(b, n, dtype=torch.long, device=x.device)
    rows = torch.arange(b, device=x.device).unsqueeze(1)
    dest[rows, head] = torch.arange(n_head, device=x.device)
    parts = [take(head)]
    weight = (importance - importance.max(dim=1, keepdim=True).values).exp()

    if n_mid:
        set_a, set_b = middle[:, 0::2], middle[:, 1::2]
        xa, xb = take(set_a), take(set_b)
        similarity = F.normalize(xa, dim=-1) @ F.normalize(xb, dim=-1).transpose(1, 2)
        partner = similarity.argmax(dim=-1)
        wa, wb = weight.gather(1, set_a), weight.gather(1, set_b)
        numerator = xb * wb.unsqueeze(-1)
        numerator = numerator.scatter_add(1, partner.unsqueeze(-1).expand(-1, -1, d), xa * wa.unsqueeze(-1))
        denominator = wb.scatter_add(1, partner, wa)
        parts.append(numerator / denominator.unsqueeze(-1))
        n_b = set_b.shape[1]
        dest[rows, set_b] = n_head + torch.arange(n_b, device=x.device)
        dest[rows, set_a] = n_head + partner
    else:
        n_b = 0

    if n_last:
        wl = weight.gather(1, last)
        wl = wl / wl.sum(dim=1, keepdim=True)
        parts.append((take(last) * wl.unsqueeze(-1)).sum(dim=1, keepdim=True))
        dest[rows, last] = n_head + n_b
    return torch.cat(parts, dim=1), dest

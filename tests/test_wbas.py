"""WBAS token merging: three-way split, bipartite matching, weighted merges, nothing lost."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from poseapp.models.wbas import wbas_merge, wbas_output_count, wbas_split


def test_split_sizes() -> None:
    assert wbas_split(155, 0.5, 0.1) == (77, 63, 15)
    assert wbas_output_count(155, 0.5, 0.1) == 77 + 31 + 1
    assert wbas_split(3, 0.5, 0.1) == (1, 2, 0)
    assert wbas_split(2, 0.5, 0.1) == (2, 0, 0)


def test_merge_groups_are_softmax_weighted_means() -> None:
    torch.manual_seed(1)
    b, n, d = 2, 40, 8
    x = torch.randn(b, n, d)
    importance = torch.rand(b, n)
    merged, dest = wbas_merge(x, importance, 0.5, 0.1)
    n_head, n_mid, n_last = wbas_split(n, 0.5, 0.1)
    assert merged.shape == (b, wbas_output_count(n, 0.5, 0.1), d)
    for row in range(b):
        order = importance[row].argsort(descending=True)
        # Head tokens pass unchanged, in importance order.
        torch.testing.assert_close(merged[row, :n_head], x[row, order[:n_head]])
        assert dest[row, order[:n_head]].tolist() == list(range(n_head))
        # Every output token is built from at least one input: no token lost, none invented.
        assert set(dest[row].tolist()) == set(range(merged.shape[1]))
        for out_index in range(n_head, merged.shape[1]):
            members = (dest[row] == out_index).nonzero().flatten()
            weights = F.softmax(importance[row, members], dim=0)
            expected = (x[row, members] * weights[:, None]).sum(0)
            torch.testing.assert_close(merged[row, out_index], expected, atol=1e-5, rtol=1e-5)
        # Each A token joined the B token it is most similar to.
        middle = order[n_head : n_head + n_mid]
        set_a, set_b = middle[0::2], middle[1::2]
        similarity = F.normalize(x[row, set_a], dim=-1) @ F.normalize(x[row, set_b], dim=-1).T
        assert torch.equal(dest[row, set_a], n_head + similarity.argmax(dim=1))
        # The least important tokens all fold into the single last token.
        assert dest[row, order[n_head + n_mid :]].eq(merged.shape[1] - 1).all()
        assert n_last == n - n_head - n_mid


def test_identical_tokens_stay_identical() -> None:
    x = torch.ones(1, 20, 4) * 3.0
    merged, _ = wbas_merge(x, torch.rand(1, 20), 0.5, 0.1)
    torch.testing.assert_close(merged, torch.full_like(merged, 3.0))

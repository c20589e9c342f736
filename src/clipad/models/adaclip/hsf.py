"""Hybrid semantic fusion (HSF): pool the most anomalous patch embeddings into an image embedding.

KMeans is written here in torch instead of calling scikit-learn (as the reference does per image on
the CPU) so that it runs batched on the model's device, inside the training step, with a fixed seed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VARIANTS = ("reference", "paper")


@torch.no_grad()
def batched_kmeans(points: torch.Tensor, clusters: int, iters: int, seed: int) -> torch.Tensor:
    """Cluster ids [B, P] of KMeans (k-means++ seeding, then Lloyd) run independently on each [P, F] set.

    With P < clusters only P clusters are formed. Every image draws the same random numbers, so an
    image's clusters do not depend on the batch it came in. A cluster that loses all its points keeps
    its centre (no NaN); callers must allow empty clusters.
    """
    x = points.detach().float()
    batch, count, _ = x.shape
    k = max(1, min(clusters, count))
    first, gumbel = _seeding_draws(int(count), k, seed)
    gumbel = gumbel.to(x.device)

    centres = [x[:, first]]
    nearest = _squared_distances(x, centres[0].unsqueeze(1)).squeeze(-1)  # [B, P]
    for step in range(k - 1):
        # k-means++: sample the next centre with probability proportional to the squared distance
        # (Gumbel-max trick, batched); points that all coincide fall back to a uniform draw.
        log_weight = torch.where(nearest.sum(1, keepdim=True) > 0, nearest.log(), torch.zeros_like(nearest))
        pick = (log_weight + gumbel[step]).argmax(dim=1)
        centre = x[torch.arange(batch, device=x.device), pick]
        centres.append(centre)
        nearest = torch.minimum(nearest, _squared_distances(x, centre.unsqueeze(1)).squeeze(-1))
    centre_stack = torch.stack(centres, dim=1)  # [B, k, F]

    assignment = _squared_distances(x, centre_stack).argmin(dim=-1)
    for _ in range(iters):
        sums, sizes = _cluster_sums(x, assignment, k)
        centre_stack = torch.where(
            sizes.unsqueeze(-1) > 0, sums / sizes.clamp_min(1).unsqueeze(-1), centre_stack
        )
        updated = _squared_distances(x, centre_stack).argmin(dim=-1)
        # Converged iterations change nothing, so an ONNX trace (which cannot stop early) runs them all.
        if not torch.jit.is_tracing() and torch.equal(updated, assignment):
            break
        assignment = updated
    return assignment


@functools.lru_cache(maxsize=32)
def _seeding_draws(count: int, k: int, seed: int) -> tuple[int, torch.Tensor]:
    """The k-means++ random numbers: fixed per (count, k, seed), drawn once (and constants when traced)."""
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same numbers on every device
    first = int(torch.randint(count, (1,), generator=generator))
    gumbel = -torch.log(-torch.log(torch.rand(k - 1, count, generator=generator).clamp_min(1e-20)))
    return first, gumbel


def _squared_distances(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """[B, P, F] x [B, k, F] -> [B, P, k] squared euclidean distances."""
    # The direct (not matmul-expanded) form: exact, and the same for an image alone or in a batch.
    return torch.cdist(x, centres, compute_mode="donot_use_mm_for_euclid_dist").square()


def _cluster_sums(
    values: torch.Tensor, assignment: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums [B, k, F] and sizes [B, k] of values [B, P, F]; differentiable in values."""
    one_hot = F.one_hot(assignment, k).to(values.dtype)  # [B, P, k]
    return one_hot.transpose(1, 2) @ values, one_hot.sum(dim=1)


def cluster_means(
    values: torch.Tensor, assignment: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster means [B, k, F] (zero for empty clusters) and sizes [B, k]."""
    sums, sizes = _cluster_sums(values, assignment, k)
    return sums / sizes.clamp_min(1).unsqueeze(-1), sizes


@dataclass(frozen=True)
class HybridSemanticFusion:
    """Image-level embedding from the patches' anomaly evidence; gradients flow through the pooled tokens.

    reference (the released code): KMeans(k) on the top `top_k_factor * k` patches (ranked by the
    layer-averaged anomaly probability), clustering their concatenated layer tokens; each cluster's
    vector is the mean of its members' layer-averaged tokens; HSF = normalised mean of the cluster vectors.
    paper (the paper's text, kept commented out in the reference): KMeans(k) on the layer-averaged tokens
    of all patches; HSF = normalised centre of the cluster with the highest mean anomaly probability.
    """

    variant: str = "reference"
    clusters: int = 20
    top_k_factor: int = 5
    iters: int = 30
    seed: int = 111

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"model.hsf.variant={self.variant!r}: choose one of {VARIANTS}")
        if self.clusters < 1 or self.top_k_factor < 1:
            raise ValueError("model.hsf.clusters and model.hsf.top_k_factor must be >= 1")

    def __call__(self, patch_tokens: list[torch.Tensor], patch_scores: torch.Tensor) -> torch.Tensor:
        """Per-layer normalised patch tokens [B, N, D] and their anomaly probability [B, N] -> [B, D]."""
        tokens = torch.stack(patch_tokens, dim=2)  # [B, N, layers, D]
        if self.variant == "reference":
            return self._reference(tokens, patch_scores)
        return self._paper(tokens, patch_scores)

    def _reference(self, tokens: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        top = min(tokens.shape[1], self.top_k_factor * self.clusters)
        index = scores.topk(top, dim=1).indices  # [B, top]
        selected = tokens.gather(1, index[:, :, None, None].expand(-1, -1, *tokens.shape[2:]))
        assignment = batched_kmeans(selected.flatten(2), self.clusters, self.iters, self.seed)
        k = min(self.clusters, top)
        means, sizes = cluster_means(selected.mean(dim=2), assignment, k)
        present = (sizes > 0).to(means.dtype)  # empty clusters do not count (sklearn never leaves one empty)
        pooled = (means * present.unsqueeze(-1)).sum(1) / present.sum(1, keepdim=True).clamp_min(1)
        return F.normalize(pooled, dim=-1)

    def _paper(self, tokens: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        averaged = tokens.mean(dim=2)  # [B, N, D]
        assignment = batched_kmeans(averaged, self.clusters, self.iters, self.seed)
        k = min(self.clusters, averaged.shape[1])
        means, sizes = cluster_means(averaged, assignment, k)
        cluster_scores, _ = cluster_means(scores.unsqueeze(-1).to(means.dtype), assignment, k)
        cluster_scores = cluster_scores.squeeze(-1).masked_fill(sizes == 0, float("-inf"))
        best = cluster_scores.argmax(dim=1)
        return F.normalize(means[torch.arange(means.shape[0], device=means.device), best], dim=-1)

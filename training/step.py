"""What one training step computes besides the MIL loss: the classifier on cached maps, the
order bags are drawn in, and the auxiliary defect-type loss (`training.train` runs them)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 - the universal alias

from deploy.backbone import WindowClassifier
from deploy.pooling import topk_count
from training.checkpoint import DEFECT_IDX
from training.features import Bag


def map_classifier(model: WindowClassifier) -> nn.Sequential:
    """What runs on cached maps: the classifier without its front end (shares its weights)."""
    return nn.Sequential(model.input_norm, model.backbone)


def epoch_order(bags: list[Bag], balance: bool, generator: torch.Generator) -> list[int]:
    """Bag indices for one epoch: a permutation, or (balance) as many draws with replacement,
    each config folder equally likely, so a folder of 7 runs does not outweigh one of 2."""
    if not balance:
        return torch.randperm(len(bags), generator=generator).tolist()
    folders = [b.entry.config_folder for b in bags]
    sizes = {f: folders.count(f) for f in set(folders)}
    weights = torch.tensor([1.0 / sizes[f] for f in folders])
    return torch.multinomial(weights, len(bags), replacement=True, generator=generator).tolist()


def type_loss(
    head: nn.Module, emb: list[Tensor], probs: list[Tensor], bags: list[Bag], ratio: float
) -> Tensor:
    """Cross-entropy of the defect-type head: every window of a good bag is good; a defect
    bag's type is taught on its top-k windows by p_defect (the ones MIL calls defective)."""
    losses = []
    for e, p, bag in zip(emb, probs, bags, strict=True):
        if bag.label:
            e = e[torch.topk(p.detach(), topk_count(p.numel(), ratio)).indices]
        target = torch.full((e.shape[0],), bag.entry.class_index, dtype=torch.long)
        losses.append(F.cross_entropy(head(e), target))
    return torch.stack(losses).mean()


class TrainStep(nn.Module):
    """What one training step runs (and DDP wraps): the classifier on maps, split at its
    embedding so the optional defect-type head can read it; same weights as `model`."""

    def __init__(self, model: WindowClassifier, type_head: nn.Module | None) -> None:
        super().__init__()
        self.embed = nn.Sequential(model.input_norm, model.backbone[:-1])
        self.classify = model.backbone[-1]
        self.type_head = type_head

    def forward(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.embed(maps)
        return torch.softmax(self.classify(emb), dim=1)[:, DEFECT_IDX], emb

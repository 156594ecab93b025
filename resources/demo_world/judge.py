"""The attribute judge: a small CNN that reads a demo-world picture back into the words of its caption.

Why: the semantic benchmark must tell whether an edit did what its target caption says ("is the
subject on the left now a jumping cat?") and left the rest alone ("is everything else as it was?"),
on the model's own pictures, without a person looking. The world's ground truth says what should be
there; the judge says what is there.

What it reads, in the world's vocabulary (world.py):
* the scene: its `ground` and `sky`;
* six slots, one per place a subject can stand: `left`, `middle`, `right` on the ground and
  `sky-left`, `sky-middle`, `sky-right` in the sky (only the sun goes there). The world puts two
  ground subjects left and right and one anywhere, so a slot holds at most one subject and a
  subject's position *is* its slot. For each slot: whether a subject is there ("yes"/"no") and, if
  so, its `kind`, `color`, `texture`, `size` and `pose` ("none" for rigid things).

Both the ground truth (`facts(description)`) and a reading (`Judge.read`) are flat dicts of the
same keys ("ground", "sky", "left" -> "yes", "left.kind" -> "cat", ...), so "what changed" and "what
was kept" are plain comparisons of keys. Attribute keys exist only for occupied slots.

The network: a 2x2 space-to-depth (128 px -> 64 px, 12 channels, nothing lost), six 3x3 conv +
batch-norm + ReLU layers (64 -> 8 px), a 1x1 conv to 32 channels, a hidden layer over the flattened 8x8 map (where things are matters: slots and sizes), and one linear
layer holding every head's logits. Weights are stored in float16 safetensors with a JSON config;
training is train_judge.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from world import ALL_COLORS, GROUNDS, KINDS, POSES, SIZES, SKIES, TEXTURES, Description, Subject

SLOTS = ("left", "middle", "right", "sky-left", "sky-middle", "sky-right")
FLIPPED_SLOTS = (2, 1, 0, 5, 4, 3)  # slot index after a horizontal mirror
POSE_VALUES = ("none", *POSES["person"])  # the person's poses include every animal's
SCENE_HEADS: dict[str, tuple[str, ...]] = {"ground": tuple(GROUNDS), "sky": tuple(SKIES)}
SUBJECT_HEADS: dict[str, tuple[str, ...]] = {
    "kind": KINDS, "color": ALL_COLORS, "texture": TEXTURES, "size": tuple(SIZES), "pose": POSE_VALUES,
}
IGNORE = -100  # label of an attribute of an empty slot (cross_entropy's ignore_index)
WEIGHTS_FILE, CONFIG_FILE = "judge.safetensors", "judge.json"
DEFAULT_FOLDER = Path(__file__).resolve().parent / "judge"

Facts = dict[str, str]


def slot_of(subject: Subject) -> str:
    """The slot a subject stands in: its position, in the sky for the sun."""
    return f"sky-{subject.position}" if subject.kind == "sun" else subject.position


def facts(description: Description) -> Facts:
    """The ground truth of a description in the judge's keys."""
    out: Facts = {"ground": description.background.ground, "sky": description.background.sky}
    out.update({slot: "no" for slot in SLOTS})
    for s in description.subjects:
        slot = slot_of(s)
        out[slot] = "yes"
        out.update({f"{slot}.kind": s.kind, f"{slot}.color": s.color, f"{slot}.texture": s.texture,
                    f"{slot}.size": s.size, f"{slot}.pose": s.pose or "none"})
    return out


# --------------------------------------------------------------------------------------------------
# Labels and logits: one layout for both


@dataclass(frozen=True)
class Head:
    key: str  # "ground", "sky", or an attribute of a slot ("present" for its yes/no)
    values: tuple[str, ...]  # () for a yes/no head (one binary logit)

    @property
    def width(self) -> int:
        return max(1, len(self.values))


SCENE_LAYOUT = tuple(Head(k, v) for k, v in SCENE_HEADS.items())
SLOT_LAYOUT = (Head("present", ()), *(Head(k, v) for k, v in SUBJECT_HEADS.items()))
PER_SLOT = sum(h.width for h in SLOT_LAYOUT)
N_LOGITS = sum(h.width for h in SCENE_LAYOUT) + len(SLOTS) * PER_SLOT
N_LABELS = len(SCENE_LAYOUT) + len(SLOTS) * len(SLOT_LAYOUT)


def _columns() -> tuple[tuple[str, Head, int], ...]:
    """Every label column in order, as (its fact key, its head, its first logit): the scene heads, then
    per slot its presence and attributes."""
    out, first = [], 0
    for head in SCENE_LAYOUT:
        out.append((head.key, head, first))
        first += head.width
    for slot in SLOTS:
        for head in SLOT_LAYOUT:
            out.append((slot if head.key == "present" else f"{slot}.{head.key}", head, first))
            first += head.width
    return tuple(out)


COLUMNS = _columns()


def labels(f: Facts) -> np.ndarray:
    """Facts as int64 labels, one per column: a class index, 0/1 for presence, IGNORE for an
    attribute of an empty slot."""
    out = []
    for key, head, _ in COLUMNS:
        if not head.values:
            out.append(int(f[key] == "yes"))
        else:
            out.append(head.values.index(f[key]) if key in f else IGNORE)
    return np.asarray(out, np.int64)


def flip_labels(y: torch.Tensor) -> torch.Tensor:
    """Labels [B, N_LABELS] of horizontally mirrored pictures: left and right slots swap."""
    k = len(SCENE_LAYOUT)
    slots = y[:, k:].reshape(len(y), len(SLOTS), len(SLOT_LAYOUT))[:, list(FLIPPED_SLOTS)]
    return torch.cat([y[:, :k], slots.reshape(len(y), -1)], dim=1)


def split_logits(logits: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """Logits [B, N_LOGITS] as (logits of one head, its label column) pairs; a yes/no head's logits
    are [B] (a binary logit), the others [B, classes]."""
    return [(logits[:, first] if not head.values else logits[:, first : first + head.width], column)
            for column, (_, head, first) in enumerate(COLUMNS)]


def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The sum over heads of each head's mean loss: cross-entropy per scene head; per slot, binary
    cross-entropy of its presence and cross-entropy of each attribute over the pictures where the slot
    is occupied (no term where it is empty in every picture). Slots are computed together, with no
    value read back from the device (a training step never waits for it)."""
    k, b = len(SCENE_LAYOUT), len(y)
    total = sum(F.cross_entropy(logits[:, first : first + head.width], y[:, column])
                for column, (_, head, first) in enumerate(COLUMNS[:k]))
    slots = logits[:, COLUMNS[k][2]:].reshape(b, len(SLOTS), PER_SLOT)
    targets = y[:, k:].reshape(b, len(SLOTS), len(SLOT_LAYOUT))
    offset = 0
    for j, head in enumerate(SLOT_LAYOUT):
        part, target = slots[..., offset : offset + head.width], targets[..., j]
        offset += head.width
        if not head.values:
            total = total + F.binary_cross_entropy_with_logits(part[..., 0], target.float(), reduction="none").mean(0).sum()
            continue
        valid = target != IGNORE
        each = F.cross_entropy(part.reshape(-1, head.width), target.clamp(min=0).reshape(-1), reduction="none")
        per_slot = (each.reshape(b, len(SLOTS)) * valid).sum(0) / valid.sum(0).clamp(min=1)
        total = total + per_slot.sum()
    return total


def decode(logits: torch.Tensor) -> list[Facts]:
    """Logits [B, N_LOGITS] -> what the judge reads in each picture (attributes of occupied slots only)."""
    logits = logits.float().cpu()
    out: list[Facts] = [{} for _ in range(len(logits))]
    for part, column in split_logits(logits):
        key, head, _ = COLUMNS[column]
        values = ["yes" if x > 0 else "no" for x in part.tolist()] if not head.values else \
            [head.values[i] for i in part.argmax(1).tolist()]
        for f, value in zip(out, values):
            f[key] = value
    for f in out:
        for key in [k for k in f if "." in k and f[k.split(".")[0]] != "yes"]:
            del f[key]
    return out


# --------------------------------------------------------------------------------------------------
# The network


def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class JudgeNet(nn.Module):
    """uint8-range pictures [B, 3, 128, 128] (as floats in [-1, 1]) -> logits [B, N_LOGITS]."""

    def __init__(self, width: int = 48, hidden: int = 384) -> None:
        super().__init__()
        w = width
        self.config = {"width": width, "hidden": hidden}
        self.trunk = nn.Sequential(  # 2x2 space-to-depth keeps every pixel (stripes are 3 px apart) at half the cost
            nn.PixelUnshuffle(2), *_block(12, 2 * w // 3, 1), *_block(2 * w // 3, w, 2), *_block(w, w, 1),
            *_block(w, 2 * w, 2), *_block(2 * w, 2 * w, 1), *_block(2 * w, 8 * w // 3, 2),
            nn.Conv2d(8 * w // 3, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 8 * 8, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(0.1), nn.Linear(hidden, N_LOGITS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (128, 128):
            x = F.interpolate(x, size=(128, 128), mode="bilinear", antialias=True, align_corners=False)
        return self.head(self.trunk(x))


def to_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [-1, 1]."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images, np.uint8))
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1


def vocabulary() -> dict:
    """What the judge's logits mean; stored with the weights and checked when they are loaded."""
    return {"slots": list(SLOTS), "scene": {k: list(v) for k, v in SCENE_HEADS.items()},
            "subject": {k: list(v) for k, v in SUBJECT_HEADS.items()}}


def save(net: JudgeNet, folder: Path, extra: dict) -> None:
    """float16 safetensors and a JSON config (architecture, vocabulary, and `extra`, e.g. the training run)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().to(torch.float16 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in net.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps({**net.config, "vocabulary": vocabulary(), **extra}, indent=1) + "\n")


class Judge:
    """A trained JudgeNet, ready to read pictures."""

    def __init__(self, net: JudgeNet, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()

    @classmethod
    def load(cls, folder: Path = DEFAULT_FOLDER, device: torch.device | str = "cpu") -> Judge:
        config = json.loads((folder / CONFIG_FILE).read_text())
        if config.get("vocabulary") != vocabulary():
            raise ValueError(f"the judge in {folder} was trained on another vocabulary than world.py's; retrain it")
        net = JudgeNet(config["width"], config["hidden"])
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in load_file(str(folder / WEIGHTS_FILE)).items()})
        return cls(net, device)

    @torch.no_grad()
    def logits(self, images: np.ndarray | torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Logits [B, N_LOGITS] for uint8 pictures [B, H, W, 3]."""
        out = [self.net(to_input(images[k : k + batch]).to(self.device)).float().cpu()
               for k in range(0, len(images), batch)]
        return torch.cat(out) if out else torch.zeros(0, N_LOGITS)

    def read(self, images: np.ndarray | torch.Tensor) -> list[Facts]:
        """What the judge sees in each uint8 picture [B, H, W, 3]."""
        return decode(self.logits(images))


def accuracy(readings: list[Facts], truths: list[Facts]) -> dict[str, float]:
    """Per-attribute accuracy of readings against the ground truth, in [0, 1].

    ground, sky: per picture. kind, color, texture, size: per subject, read at its slot (a subject
    whose slot is read empty counts as wrong). pose: per person, cat or dog. position: per subject,
    its level's (ground or sky) occupied slots are read exactly. presence: per slot and picture.
    """
    hits: dict[str, list[bool]] = {k: [] for k in (*SCENE_HEADS, *SUBJECT_HEADS, "position", "presence")}
    for read, truth in zip(readings, truths, strict=True):
        for key in SCENE_HEADS:
            hits[key].append(read[key] == truth[key])
        hits["presence"] += [read[slot] == truth[slot] for slot in SLOTS]
        for slot in SLOTS:
            if truth[slot] != "yes":
                continue
            for key in SUBJECT_HEADS:
                if key != "pose" or truth[f"{slot}.pose"] != "none":
                    hits[key].append(read[slot] == "yes" and read.get(f"{slot}.{key}") == truth[f"{slot}.{key}"])
            level = SLOTS[3:] if slot.startswith("sky") else SLOTS[:3]
            hits["position"].append(all(read[s] == truth[s] for s in level))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}

